"""Every REST endpoint of the Lockme partner API as a pure request description.

Each function validates its arguments (raising :class:`InvalidRequestError` before anything is
sent) and returns an :class:`ApiCall`: method, path under ``/{version}``, optional JSON body and
the parser that turns the decoded answer into the endpoint's return kind. The sync and async
clients share these; only the I/O differs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from .errors import InvalidRequestError, InvalidResponseError
from .models import Message, Reservation, Room, Slot, User, parse_model, parse_model_list
from .validation import (
    validate_date,
    validate_day,
    validate_hour,
    validate_message_id,
    validate_reservation_id,
    validate_room_id,
)

T = TypeVar("T")

#: Body payloads the caller may pass: a mapping, a pydantic model, or (settings) a list.
JsonBody = Mapping[str, Any] | BaseModel


@dataclass(frozen=True)
class Decoded:
    """A decoded successful answer: JSON value (or raw text when ``is_json`` is false)."""

    value: Any
    is_json: bool
    text: str
    context: dict[str, Any]


@dataclass(frozen=True)
class ApiCall(Generic[T]):
    """One REST request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[Decoded], T]
    body: Any = None
    has_body: bool = False

    def body_bytes(self) -> bytes | None:
        if not self.has_body:
            return None
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# ---------------------------------------------------------------- answer parsers


def _kind_error(expected: str, answer: Decoded) -> InvalidResponseError:
    got = type(answer.value).__name__ if answer.is_json else "non-JSON text"
    return InvalidResponseError(
        f"expected {expected}, got {got}", body=answer.text, data=answer.value
    )


def _as_text(answer: Decoded) -> str:
    if isinstance(answer.value, str):
        return answer.value.strip() if not answer.is_json else answer.value
    raise _kind_error("a string", answer)


def _as_int(answer: Decoded) -> int:
    value = answer.value
    if answer.is_json and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    raise _kind_error("an integer id", answer)


def _as_bool(answer: Decoded) -> bool:
    value = answer.value
    if answer.is_json and isinstance(value, bool):
        return value
    if answer.is_json and isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise _kind_error("true/false", answer)


def _as_object(answer: Decoded) -> dict[str, Any]:
    if answer.is_json and isinstance(answer.value, dict):
        return answer.value
    if answer.is_json and answer.value == []:  # PHP encodes an empty array as []
        return {}
    raise _kind_error("a JSON object", answer)


def _model(model: type[BaseModel]) -> Callable[[Decoded], Any]:
    def parse(answer: Decoded) -> Any:
        if not answer.is_json or not isinstance(answer.value, dict):
            raise _kind_error(f"a {model.__name__} object", answer)
        return parse_model(model, answer.value, context=answer.context, body=answer.text)

    return parse


def _models(model: type[BaseModel]) -> Callable[[Decoded], Any]:
    def parse(answer: Decoded) -> Any:
        if not answer.is_json:
            raise _kind_error(f"a list of {model.__name__}", answer)
        return parse_model_list(model, answer.value, context=answer.context, body=answer.text)

    return parse


def _slots(answer: Decoded) -> list[Slot]:
    """Calendar settings: a list of slots; ``true``/``{}``/``null`` read as no slots."""
    value = answer.value
    if not answer.is_json:
        raise _kind_error("a list of slots", answer)
    if value is True or value is None or value == {}:
        return []
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1 and all(isinstance(v, list | dict) for v in value.values()):
            value = lists[0]
        elif all(isinstance(v, dict) for v in value.values()):
            value = list(value.values())
    parsed: list[Slot] = parse_model_list(Slot, value, context=answer.context, body=answer.text)
    return parsed


# ---------------------------------------------------------------- bodies


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _jsonable(value.model_dump(mode="json", by_alias=True, exclude_none=True))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        raise InvalidRequestError("pass venue-local 'date' and 'hour' strings, not a datetime")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return validate_hour(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise InvalidRequestError(f"cannot send a {type(value).__name__} as JSON")


def _object_body(data: object, what: str) -> dict[str, Any]:
    if not isinstance(data, Mapping | BaseModel):
        raise InvalidRequestError(f"{what} must be a mapping or a pydantic model")
    body = _jsonable(data)
    assert isinstance(body, dict)
    return body


def _check_reservation_fields(body: dict[str, Any], *, required: bool) -> None:
    for key, check, message in (
        ("roomid", validate_room_id, "No room ID"),
        ("date", validate_date, "No date"),
        ("hour", validate_hour, "No hour"),
    ):
        if body.get(key) in (None, ""):
            if required:
                raise InvalidRequestError(f"{message}: '{key}' is required")
            continue
        body[key] = check(body[key])


def _slot_body(slots: object) -> list[dict[str, Any]]:
    if isinstance(slots, str | bytes | Mapping) or not isinstance(slots, Sequence):
        raise InvalidRequestError("slots must be a list of {hour, pricers}")
    out: list[dict[str, Any]] = []
    for slot in slots:
        item = _object_body(slot, "each slot")
        if "hour" not in item:
            raise InvalidRequestError("each slot needs an 'hour'")
        item["hour"] = validate_hour(item["hour"])
        pricers = item.get("pricers", [])
        if isinstance(pricers, str) or not isinstance(pricers, list):
            raise InvalidRequestError("slot 'pricers' must be a list of pricer ids")
        item["pricers"] = pricers
        out.append(item)
    return out


# ---------------------------------------------------------------- endpoints (reference §3)


def _room(room_id: object) -> str:
    return f"/room/{validate_room_id(room_id)}"


def test() -> ApiCall[str]:
    return ApiCall("GET", "/test", _as_text)


def me() -> ApiCall[User]:
    return ApiCall("GET", "/me", _model(User))


def list_rooms() -> ApiCall[list[Room]]:
    return ApiCall("GET", "/rooms", _models(Room))


def get_room(room_id: object) -> ApiCall[Room]:
    return ApiCall("GET", _room(room_id), _model(Room))


def edit_room(room_id: object, data: object) -> ApiCall[dict[str, Any]]:
    return ApiCall("POST", _room(room_id), _as_object, _object_body(data, "room data"), True)


def get_reservation(room_id: object, reservation_id: object) -> ApiCall[Reservation]:
    path = f"{_room(room_id)}/reservation/{validate_reservation_id(reservation_id)}"
    return ApiCall("GET", path, _model(Reservation))


def add_reservation(data: object) -> ApiCall[int]:
    body = _object_body(data, "reservation data")
    _check_reservation_fields(body, required=True)
    return ApiCall("PUT", f"/room/{body['roomid']}/reservation", _as_int, body, True)


def edit_reservation(
    room_id: object, reservation_id: object, data: object
) -> ApiCall[dict[str, Any]]:
    body = _object_body(data, "reservation data")
    _check_reservation_fields(body, required=False)
    path = f"{_room(room_id)}/reservation/{validate_reservation_id(reservation_id)}"
    return ApiCall("POST", path, _as_object, body, True)


def delete_reservation(room_id: object, reservation_id: object) -> ApiCall[bool]:
    path = f"{_room(room_id)}/reservation/{validate_reservation_id(reservation_id)}"
    return ApiCall("DELETE", path, _as_bool)


def move_reservation(
    room_id: object, reservation_id: object, *, roomid: object, date: object, hour: object
) -> ApiCall[dict[str, Any]]:
    path = f"{_room(room_id)}/reservation/{validate_reservation_id(reservation_id)}/move"
    body = {
        "roomid": validate_room_id(roomid),
        "date": validate_date(date),
        "hour": validate_hour(hour),
    }
    return ApiCall("POST", path, _as_object, body, True)


def list_reservations(room_id: object, date: object) -> ApiCall[list[Reservation]]:
    return ApiCall(
        "GET", f"{_room(room_id)}/reservations/{validate_date(date)}", _models(Reservation)
    )


def get_message(message_id: object) -> ApiCall[Message]:
    return ApiCall("GET", f"/message/{validate_message_id(message_id)}", _model(Message))


def mark_message_read(message_id: object) -> ApiCall[bool]:
    return ApiCall("POST", f"/message/{validate_message_id(message_id)}", _as_bool)


def get_date_settings(room_id: object, date: object) -> ApiCall[list[Slot]]:
    return ApiCall("GET", f"{_room(room_id)}/date/{validate_date(date)}", _slots)


def set_date_settings(room_id: object, date: object, slots: object) -> ApiCall[list[Slot]]:
    path = f"{_room(room_id)}/date/{validate_date(date)}"
    return ApiCall("POST", path, _slots, _slot_body(slots), True)


def remove_date_settings(room_id: object, date: object) -> ApiCall[list[Slot]]:
    return ApiCall("DELETE", f"{_room(room_id)}/date/{validate_date(date)}", _slots)


def get_day_settings(room_id: object, day: object) -> ApiCall[list[Slot]]:
    return ApiCall("GET", f"{_room(room_id)}/day/{validate_day(day)}", _slots)


def set_day_settings(room_id: object, day: object, slots: object) -> ApiCall[list[Slot]]:
    path = f"{_room(room_id)}/day/{validate_day(day)}"
    return ApiCall("POST", path, _slots, _slot_body(slots), True)
