"""Typed, tolerant models of what LOQED sends.

Tolerance rules shared by every model: numbers may arrive as JSON strings, ``""`` means
"absent", unknown fields are kept (``raw`` or pydantic extras) and unknown enum values degrade
to :attr:`BoltState.UNKNOWN` instead of failing. Secrets (``key_secret``, ``bridge_key``,
``backend_key``) are :class:`pydantic.SecretStr` and never appear in a repr.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from .errors import InvalidPayloadError, InvalidRequestError
from .signing import Action

__all__ = [
    "BoltState",
    "BridgeWebhook",
    "CloudKey",
    "CloudLock",
    "CloudWebhook",
    "LockStatus",
    "WebhookTriggers",
    "as_bool",
    "as_int",
    "as_str",
    "parse_bolt_state",
    "redact_url",
]


# --------------------------------------------------------------------------- lenient scalars


_INT_LIMIT = 2**31
"""LOQED's numbers (percentages, strengths, key ids, counters) fit a signed 32-bit integer."""


def _bounded(number: int) -> int | None:
    return number if -_INT_LIMIT <= number < _INT_LIMIT else None


def as_int(value: Any) -> int | None:
    """Lenient integer: ints, integral floats, numeric strings; anything else → None.

    Values outside the signed 32-bit range are treated as garbage (None), so a malformed
    payload can never carry a number too large to store.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _bounded(value)
    if isinstance(value, float):
        return _bounded(int(value)) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 40:
            return None
        try:
            return _bounded(int(text))
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return None
        return _bounded(int(number)) if math.isfinite(number) else None
    return None


def as_bool(value: Any) -> bool | None:
    """Lenient boolean: true/false, 0/1 (also as strings), "yes"/"no"; else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value in (0, 1):
            return bool(value)
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
    return None


def as_str(value: Any) -> str | None:
    """Lenient string: strings (``""`` → None) and numbers; anything else → None."""
    if isinstance(value, str):
        return value if value != "" else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else str(value)
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def redact_url(url: str) -> str:
    """``url`` with user-info password and query string replaced by ``***`` (for reprs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


# --------------------------------------------------------------------------- bolt state


class BoltState(enum.StrEnum):
    """Lock bolt position, in the bridge ``/status`` vocabulary."""

    UNKNOWN = "unknown"
    OPEN = "open"
    DAY_LOCK = "day_lock"
    NIGHT_LOCK = "night_lock"

    @property
    def action(self) -> Action:
        """The signed-command action that moves the lock to this state."""
        try:
            return _ACTIONS[self]
        except KeyError:
            raise InvalidRequestError("no command moves a lock to 'unknown'") from None


_ACTIONS = {
    BoltState.OPEN: Action.OPEN,
    BoltState.DAY_LOCK: Action.DAY_LOCK,
    BoltState.NIGHT_LOCK: Action.NIGHT_LOCK,
}

_BOLT_WORDS = {
    "unknown": BoltState.UNKNOWN,
    "open": BoltState.OPEN,
    "opened": BoltState.OPEN,
    "day_lock": BoltState.DAY_LOCK,
    "daylock": BoltState.DAY_LOCK,
    "latch": BoltState.DAY_LOCK,
    "unlock": BoltState.DAY_LOCK,
    "night_lock": BoltState.NIGHT_LOCK,
    "nightlock": BoltState.NIGHT_LOCK,
    "lock": BoltState.NIGHT_LOCK,
}
_BOLT_NUMBERS = {
    0: BoltState.UNKNOWN,
    1: BoltState.OPEN,
    2: BoltState.DAY_LOCK,
    3: BoltState.NIGHT_LOCK,
}


def parse_bolt_state(value: Any) -> BoltState | None:
    """Any LOQED spelling (``night_lock``, ``NIGHT_LOCK``, ``latch``, 3, ``"3"``) → BoltState.

    Returns None when ``value`` is not recognisable.
    """
    if isinstance(value, BoltState):
        return value
    if isinstance(value, str):
        word = value.strip().lower().replace("-", "_").replace(" ", "_")
        if word in _BOLT_WORDS:
            return _BOLT_WORDS[word]
    if isinstance(value, bool):
        return None
    number = as_int(value)
    return None if number is None else _BOLT_NUMBERS.get(number)


# --------------------------------------------------------------------------- status


class LockStatus(BaseModel):
    """Bridge ``/status`` or app.loqed.com ``lock_status.php``, normalised.

    ``cached`` is True when a :class:`~roomkey.loqed.budget.StatusBudget` served a stored
    answer; ``fetched_at`` is when that answer was read from LOQED (Unix seconds).
    """

    model_config = ConfigDict(frozen=True)

    bolt_state: BoltState
    battery_percentage: int | None = None
    battery_type: str | None = None
    lock_online: bool | None = None
    ble_strength: int | None = None
    wifi_strength: int | None = None
    bridge_mac_wifi: str | None = None
    bridge_mac_ble: str | None = None
    bridge_online: bool | None = None
    battery_voltage: float | None = None
    lock_id: str | None = None
    cached: bool = False
    fetched_at: float | None = None
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @property
    def online(self) -> bool | None:
        """False when the lock is disconnected from its bridge (``ble_strength`` −1)."""
        if self.ble_strength == -1:
            return False
        return self.lock_online

    @classmethod
    def from_payload(
        cls, data: Any, *, cached: bool = False, fetched_at: float | None = None
    ) -> LockStatus:
        """Parse a decoded JSON status object; raises :class:`InvalidPayloadError`."""
        if not isinstance(data, Mapping):
            raise InvalidPayloadError("status is not a JSON object")
        raw = {str(k): v for k, v in data.items()}
        state = parse_bolt_state(raw.get("bolt_state"))
        if state is None:
            state = parse_bolt_state(raw.get("bolt_state_numeric"))
        try:
            return cls(
                bolt_state=state or BoltState.UNKNOWN,
                battery_percentage=as_int(raw.get("battery_percentage")),
                battery_type=as_str(raw.get("battery_type")),
                lock_online=as_bool(raw.get("lock_online")),
                ble_strength=as_int(raw.get("ble_strength")),
                wifi_strength=as_int(raw.get("wifi_strength")),
                bridge_mac_wifi=as_str(raw.get("bridge_mac_wifi")),
                bridge_mac_ble=as_str(raw.get("bridge_mac_ble")),
                bridge_online=as_bool(raw.get("bridge_online")),
                battery_voltage=_as_float(raw.get("battery_voltage")),
                lock_id=as_str(raw.get("id", raw.get("lock_id"))),
                cached=cached,
                fetched_at=fetched_at,
                raw=raw,
            )
        except ValidationError:  # pragma: no cover - every field is pre-coerced
            raise InvalidPayloadError("status could not be parsed") from None


# --------------------------------------------------------------------------- webhooks triggers


class WebhookTriggers(enum.IntFlag):
    """The nine trigger bits of a bridge webhook (bit i ⇔ ``trigger_*`` field i)."""

    STATE_CHANGED_OPEN = 1 << 0
    STATE_CHANGED_LATCH = 1 << 1
    STATE_CHANGED_NIGHT_LOCK = 1 << 2
    STATE_CHANGED_UNKNOWN = 1 << 3
    STATE_GOTO_OPEN = 1 << 4
    STATE_GOTO_LATCH = 1 << 5
    STATE_GOTO_NIGHT_LOCK = 1 << 6
    BATTERY = 1 << 7
    ONLINE_STATUS = 1 << 8
    ALL = 511

    @classmethod
    def coerce(
        cls, value: WebhookTriggers | int | str | Iterable[str | int | WebhookTriggers]
    ) -> WebhookTriggers:
        """Flags from a flag, a bitmap (0..511) or trigger names.

        Names are case-insensitive and may be the member name (``STATE_GOTO_OPEN``), the
        bridge field (``trigger_state_goto_open``) or without the prefix
        (``state_goto_open``, ``go_to_open``, ``battery``, ``online``, ``all``).
        """
        if isinstance(value, bool):
            raise InvalidRequestError("triggers must be flags, an int bitmap or names")
        if isinstance(value, int):
            if not 0 <= int(value) <= int(cls.ALL):
                raise InvalidRequestError("trigger bitmap must be within 0..511")
            return cls(int(value))
        if isinstance(value, str):
            return cls._from_name(value)
        result = cls(0)
        try:
            items = list(value)
        except TypeError:
            raise InvalidRequestError("triggers must be flags, an int bitmap or names") from None
        for item in items:
            result |= cls.coerce(item)
        return result

    @classmethod
    def _from_name(cls, name: str) -> WebhookTriggers:
        key = name.strip().lower().replace("-", "_")
        key = key.removeprefix("trigger_")
        if key in _TRIGGER_ALIASES:
            return _TRIGGER_ALIASES[key]
        raise InvalidRequestError(f"unknown webhook trigger name {name[:40]!r}")

    def to_fields(self) -> dict[str, int]:
        """The nine ``trigger_*`` body fields, each 0 or 1."""
        return {field: int(bool(self & flag)) for field, flag in _TRIGGER_FIELDS.items()}

    @classmethod
    def from_fields(cls, data: Mapping[str, Any]) -> WebhookTriggers:
        """Flags from ``trigger_*`` fields given as 0/1, booleans or numeric strings."""
        result = cls(0)
        for field, flag in _TRIGGER_FIELDS.items():
            if as_bool(data.get(field)):
                result |= flag
        return result


_TRIGGER_FIELDS: dict[str, WebhookTriggers] = {
    "trigger_state_changed_open": WebhookTriggers.STATE_CHANGED_OPEN,
    "trigger_state_changed_latch": WebhookTriggers.STATE_CHANGED_LATCH,
    "trigger_state_changed_night_lock": WebhookTriggers.STATE_CHANGED_NIGHT_LOCK,
    "trigger_state_changed_unknown": WebhookTriggers.STATE_CHANGED_UNKNOWN,
    "trigger_state_goto_open": WebhookTriggers.STATE_GOTO_OPEN,
    "trigger_state_goto_latch": WebhookTriggers.STATE_GOTO_LATCH,
    "trigger_state_goto_night_lock": WebhookTriggers.STATE_GOTO_NIGHT_LOCK,
    "trigger_battery": WebhookTriggers.BATTERY,
    "trigger_online_status": WebhookTriggers.ONLINE_STATUS,
}


def _aliases() -> dict[str, WebhookTriggers]:
    table: dict[str, WebhookTriggers] = {}
    for member in WebhookTriggers:
        if member.name:
            table[member.name.lower()] = member
    for field, flag in _TRIGGER_FIELDS.items():
        table[field.removeprefix("trigger_")] = flag
    for target in ("open", "latch", "night_lock"):
        flag = table[f"state_goto_{target}"]
        table[f"go_to_{target}"] = flag
        table[f"goto_{target}"] = flag
        table[f"state_go_to_{target}"] = flag
    table["online"] = WebhookTriggers.ONLINE_STATUS
    return table


_TRIGGER_ALIASES = _aliases()


class BridgeWebhook(BaseModel):
    """One webhook registered on a bridge."""

    model_config = ConfigDict(frozen=True)

    id: int
    url: str
    triggers: WebhookTriggers

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        yield "id", self.id
        yield "url", redact_url(self.url)
        yield "triggers", int(self.triggers)

    @classmethod
    def from_payload(cls, data: Any) -> BridgeWebhook:
        """Parse one item of ``GET /webhooks``; raises :class:`InvalidPayloadError`."""
        if not isinstance(data, Mapping):
            raise InvalidPayloadError("webhook entry is not a JSON object")
        webhook_id = as_int(data.get("id"))
        url = data.get("url")
        if webhook_id is None or not isinstance(url, str):
            raise InvalidPayloadError("webhook entry lacks an id or url")
        return cls(id=webhook_id, url=url, triggers=WebhookTriggers.from_fields(data))


# --------------------------------------------------------------------------- cloud


_M = TypeVar("_M", bound=BaseModel)


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str) and value.strip() == "":
        return None
    return value


class _CloudModel(BaseModel):
    """Base of cloud models: extras kept but not shown in repr (they might be secrets)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, info in type(self).model_fields.items():
            if info.repr:
                yield name, getattr(self, name)


class CloudLock(_CloudModel):
    """A lock from ``GET /api/locks/`` with documented and undocumented fields.

    ``local_id``/``key_secret`` are the token's own key slot on this lock; ``bridge_key`` signs
    bridge webhooks. Secrets are :class:`~pydantic.SecretStr`; use ``.get_secret_value()``.
    """

    id: str
    name: str | None = None
    model_name: str | None = None
    battery_percentage: int | None = None
    battery_type: str | None = None
    bolt_state: BoltState = BoltState.UNKNOWN
    party_mode: bool | None = None
    guest_access_mode: bool | None = None
    twist_assist: bool | None = None
    touch_to_connect: bool | None = None
    lock_direction: str | None = None
    mortise_lock_type: str | None = None
    supported_lock_states: list[str] = Field(default_factory=list)
    online: bool | None = None
    bridge_ip: str | None = None
    bridge_hostname: str | None = None
    bridge_mac_wifi: str | None = None
    bridge_webhook_count: int | None = None
    local_id: int | None = None
    key_secret: SecretStr | None = Field(default=None, repr=False)
    bridge_key: SecretStr | None = Field(default=None, repr=False)
    backend_key: SecretStr | None = Field(default=None, repr=False)

    @field_validator("*", mode="before")
    @classmethod
    def _lenient(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, value: Any) -> Any:
        text = as_str(value)
        return text if text is not None else value

    @field_validator(
        "name",
        "model_name",
        "battery_type",
        "lock_direction",
        "mortise_lock_type",
        "bridge_ip",
        "bridge_hostname",
        "bridge_mac_wifi",
        "key_secret",
        "bridge_key",
        "backend_key",
        mode="before",
    )
    @classmethod
    def _text(cls, value: Any) -> str | None:
        return as_str(value)

    @field_validator("bolt_state", mode="before")
    @classmethod
    def _bolt(cls, value: Any) -> BoltState:
        return parse_bolt_state(value) or BoltState.UNKNOWN

    @field_validator(
        "party_mode",
        "guest_access_mode",
        "twist_assist",
        "touch_to_connect",
        "online",
        mode="before",
    )
    @classmethod
    def _flag(cls, value: Any) -> bool | None:
        return as_bool(value)

    @field_validator("battery_percentage", "bridge_webhook_count", "local_id", mode="before")
    @classmethod
    def _number(cls, value: Any) -> int | None:
        return as_int(value)

    @field_validator("supported_lock_states", mode="before")
    @classmethod
    def _states(cls, value: Any) -> list[str]:
        if isinstance(value, list):
            return [s for s in (as_str(v) for v in value) if s is not None]
        return []

    @property
    def open_house_mode(self) -> bool | None:
        """LOQED's apps show ``guest_access_mode`` as "open house mode"."""
        return self.guest_access_mode

    @classmethod
    def from_payload(cls, data: Any) -> CloudLock:
        """Parse one lock object; raises :class:`InvalidPayloadError`."""
        return _parse_cloud(cls, data, "lock")


class CloudKey(_CloudModel):
    """A key from ``GET /api/locks/{id}/keys``."""

    name: str | None = None
    administrator_name: str | None = None
    local_id: int | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _lenient(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("local_id", mode="before")
    @classmethod
    def _number(cls, value: Any) -> int | None:
        return as_int(value)

    @field_validator("name", "administrator_name", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str | None:
        return as_str(value)

    @classmethod
    def from_payload(cls, data: Any) -> CloudKey:
        """Parse one key object; raises :class:`InvalidPayloadError`."""
        return _parse_cloud(cls, data, "key")


class CloudWebhook(_CloudModel):
    """A cloud webhook (``/api/locks/{id}/webhooks``). The URL is redacted in reprs."""

    id: str
    url: str | None = Field(default=None, repr=False)

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, value: Any) -> Any:
        text = as_str(value)
        return text if text is not None else value

    @field_validator("url", mode="before")
    @classmethod
    def _url_text(cls, value: Any) -> str | None:
        return as_str(value)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        yield "id", self.id
        yield "url", None if self.url is None else redact_url(self.url)

    @classmethod
    def from_payload(cls, data: Any) -> CloudWebhook:
        """Parse one webhook object; raises :class:`InvalidPayloadError`."""
        return _parse_cloud(cls, data, "webhook")


def _parse_cloud(model: type[_M], data: Any, what: str) -> _M:
    if not isinstance(data, Mapping):
        raise InvalidPayloadError(f"{what} is not a JSON object")
    try:
        return model.model_validate({str(k): v for k, v in data.items()})
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in err["loc"]) for err in exc.errors()})
        raise InvalidPayloadError(f"{what} could not be parsed (fields: {fields})") from None
