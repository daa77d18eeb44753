"""Typed, tolerant views of Lockme JSON.

Unknown fields are kept (``model_extra``), numbers may arrive as strings, ``status`` may be
1/0/true/false/"1"/"0". Dates and hours are venue-local; a reservation knows its venue time
zone (given by the client through the validation context) and exposes aware datetimes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal
from typing import Annotated, Any, ClassVar, TypeVar
from zoneinfo import ZoneInfo

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from .errors import InvalidResponseError

__all__ = [
    "DEFAULT_DURATION_MINUTES",
    "DEFAULT_VENUE_TZ",
    "Message",
    "Reservation",
    "Room",
    "Slot",
    "User",
    "parse_model",
    "parse_model_list",
]

DEFAULT_VENUE_TZ = "Europe/Warsaw"
DEFAULT_DURATION_MINUTES = 60

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("expected 1/0/true/false")


def _empty_to_none(value: Any) -> Any:
    return None if value == "" else value


def _hour(value: Any) -> Any:
    # "HH:MM" is tolerated on input; the API itself uses "HH:MM:SS".
    if isinstance(value, str) and len(value) == 5 and value[2:3] == ":":
        return value + ":00"
    return value


def _text(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


Flag = Annotated[bool | None, BeforeValidator(_flag)]
OptInt = Annotated[int | None, BeforeValidator(_empty_to_none)]
OptText = Annotated[str | None, BeforeValidator(_text)]
Hour = Annotated[dt.time, BeforeValidator(_hour)]
OptHour = Annotated[dt.time | None, BeforeValidator(_empty_to_none), BeforeValidator(_hour)]
OptDate = Annotated[dt.date | None, BeforeValidator(_empty_to_none)]


class LockmeModel(BaseModel):
    """Base: extras kept, lax numbers, populate by field name or alias."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


class User(LockmeModel):
    """``GET /me``: the resource owner."""

    userid: OptInt = None
    nick: OptText = None


class Room(LockmeModel):
    """A room (``GET /rooms`` item or ``GET /room/{id}``)."""

    roomid: OptInt = None
    room: OptText = None
    department: OptText = None
    calendar_margin: Annotated[float | None, BeforeValidator(_empty_to_none)] = Field(
        default=None, alias="calendarMargin"
    )

    @property
    def name(self) -> str | None:
        return self.room


class Slot(LockmeModel):
    """One bookable start time of a weekly or per-date calendar setting."""

    hour: Hour
    pricers: list[int | str] = Field(default_factory=list)


class Reservation(LockmeModel):
    """A reservation (GET reservation, reservations of a day, webhook message ``data``).

    ``date``/``hour`` are venue-local; :attr:`start` and :attr:`end` are aware datetimes in the
    venue time zone. Customer fields are personal data: they are left out of ``repr``.
    """

    venue_tz_context_key: ClassVar[str] = "venue_tz"

    reservationid: OptInt = Field(
        default=None, validation_alias=AliasChoices("reservationid", "id")
    )
    roomid: OptInt = None
    date: dt.date
    hour: Hour
    status: Flag = None
    source: OptText = None
    extid: Annotated[str | None, BeforeValidator(_empty_to_none), BeforeValidator(_text)] = None
    from_date: OptDate = None
    from_hour: OptHour = None
    name: OptText = Field(default=None, repr=False)
    surname: OptText = Field(default=None, repr=False)
    email: OptText = Field(default=None, repr=False)
    phone: OptText = Field(default=None, repr=False)
    comment: OptText = Field(default=None, repr=False)
    invoice: Any = Field(default=None, repr=False)
    people: OptInt = None
    price: Annotated[Decimal | None, BeforeValidator(_empty_to_none)] = None
    pricer: OptText = None
    language: OptText = None
    duration: Annotated[
        Annotated[int, Field(ge=0, le=525_600)] | None, BeforeValidator(_empty_to_none)
    ] = None
    time: OptText = None

    _venue_tz: ZoneInfo = PrivateAttr(default_factory=lambda: ZoneInfo(DEFAULT_VENUE_TZ))
    _default_duration: int = PrivateAttr(default=DEFAULT_DURATION_MINUTES)

    @model_validator(mode="after")
    def _take_context(self, info: ValidationInfo) -> Reservation:
        context = info.context if isinstance(info.context, dict) else {}
        tz = context.get("venue_tz")
        if isinstance(tz, ZoneInfo):
            self._venue_tz = tz
        duration = context.get("default_duration")
        if isinstance(duration, int) and duration > 0:
            self._default_duration = duration
        return self

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # Unknown extra fields may be personal data too: only declared, non-PII fields show.
        for name, info in type(self).model_fields.items():
            if info.repr:
                yield name, getattr(self, name)

    @property
    def venue_tz(self) -> ZoneInfo:
        return self._venue_tz

    @property
    def paid(self) -> bool:
        """Truthy ``status``: paid/confirmed (``False`` for an unpaid hold)."""
        return bool(self.status)

    @property
    def start(self) -> dt.datetime:
        """Aware start time in the venue time zone."""
        return dt.datetime.combine(self.date, self.hour, tzinfo=self._venue_tz)

    @property
    def end(self) -> dt.datetime:
        """``start`` plus ``duration`` minutes (or the client's default duration)."""
        minutes = self.duration if self.duration and self.duration > 0 else self._default_duration
        try:
            return self.start + dt.timedelta(minutes=minutes)
        except OverflowError:  # a reservation on 9999-12-31
            return dt.datetime.max.replace(tzinfo=self._venue_tz)

    @property
    def from_start(self) -> dt.datetime | None:
        """Aware previous start of a moved reservation (``from_date`` + ``from_hour``)."""
        if self.from_date is None or self.from_hour is None:
            return None
        return dt.datetime.combine(self.from_date, self.from_hour, tzinfo=self._venue_tz)


class Message(LockmeModel):
    """A webhook message (``GET /message/{id}``): ``{action, roomid, reservationid, data}``."""

    action: str
    roomid: OptInt = None
    reservationid: Annotated[
        str | None, BeforeValidator(_empty_to_none), BeforeValidator(_text)
    ] = None
    data: Reservation | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_data(cls, value: Any) -> Any:
        # PHP encodes an empty array as [] — treat [] / {} / "" as "no data".
        if isinstance(value, dict) and value.get("data") in ([], {}, "", None):
            value = {**value, "data": None}
        return value


M = TypeVar("M", bound=BaseModel)


def parse_model(
    model: type[M], payload: Any, *, context: dict[str, Any] | None = None, body: str = ""
) -> M:
    """Validate ``payload`` as ``model``; failures become :class:`InvalidResponseError`."""
    try:
        return model.model_validate(payload, context=context)
    except PydanticValidationError as exc:
        raise InvalidResponseError(
            f"unexpected {model.__name__} shape: {_summary(exc)}", body=body, data=payload
        ) from None


def parse_model_list(
    model: type[M], payload: Any, *, context: dict[str, Any] | None = None, body: str = ""
) -> list[M]:
    """Validate a JSON list (a JSON object is read as its values, as PHP arrays may be)."""
    if isinstance(payload, dict):
        payload = list(payload.values())
    if not isinstance(payload, list):
        raise InvalidResponseError(
            f"expected a list of {model.__name__}, got {type(payload).__name__}",
            body=body,
            data=payload,
        )
    return [parse_model(model, item, context=context, body=body) for item in payload]


def _summary(exc: PydanticValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "(root)"
    return f"{where}: {first.get('msg', 'invalid')} ({exc.error_count()} errors)"
