"""Client-side checks done before anything is sent; failures raise InvalidRequestError.

Everything here is ASCII-strict (``re.ASCII``, ``fullmatch``): ``"１２"`` or ``"12\\n"`` are
rejected rather than silently normalised.
"""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import quote

from .errors import InvalidRequestError

__all__ = [
    "EXT_PREFIX",
    "ext_id",
    "validate_date",
    "validate_day",
    "validate_hour",
    "validate_message_id",
    "validate_positive_int",
    "validate_reservation_id",
    "validate_room_id",
]

EXT_PREFIX = "ext/"
_DIGITS = re.compile(r"[0-9]{1,18}", re.ASCII)
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", re.ASCII)
_HOUR = re.compile(r"([0-9]{2}):([0-9]{2}):([0-9]{2})", re.ASCII)


def validate_positive_int(value: object, what: str) -> int:
    """An int > 0, or a string of ASCII digits denoting one. ``bool`` is rejected."""
    if isinstance(value, bool):
        raise InvalidRequestError(f"{what} must be a positive integer, not a bool")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    else:
        raise InvalidRequestError(f"{what} must be a positive integer, got {_show(value)}")
    if number <= 0:
        raise InvalidRequestError(f"{what} must be a positive integer, got {number}")
    return number


def validate_room_id(value: object) -> int:
    return validate_positive_int(value, "room id")


def validate_message_id(value: object) -> int:
    """An ``X-MessageId`` header value (surrounding whitespace tolerated) or an int."""
    if isinstance(value, str):
        value = value.strip(" \t")
    return validate_positive_int(value, "message id")


def validate_date(value: object) -> str:
    """A real calendar date as ``YYYY-MM-DD`` (``datetime.date`` accepted)."""
    if isinstance(value, dt.datetime):
        raise InvalidRequestError("date must be a date, not a datetime")
    if isinstance(value, dt.date):
        return value.isoformat()
    if not isinstance(value, str):
        raise InvalidRequestError(f"date must be 'YYYY-MM-DD', got {_show(value)}")
    match = _DATE.fullmatch(value)
    if match is None:
        raise InvalidRequestError(f"date must be 'YYYY-MM-DD', got {_show(value)}")
    try:
        dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise InvalidRequestError(f"date {_show(value)} is not a real date") from None
    return value


def validate_hour(value: object) -> str:
    """A time of day as ``HH:MM:SS`` (``datetime.time`` accepted, seconds kept, tz refused)."""
    if isinstance(value, dt.time):
        if value.tzinfo is not None:
            raise InvalidRequestError("hour is venue-local; pass a naive time")
        return value.replace(microsecond=0).isoformat()
    if not isinstance(value, str):
        raise InvalidRequestError(f"hour must be 'HH:MM:SS', got {_show(value)}")
    match = _HOUR.fullmatch(value)
    if match is None:
        raise InvalidRequestError(f"hour must be 'HH:MM:SS', got {_show(value)}")
    if int(match[1]) > 23 or int(match[2]) > 59 or int(match[3]) > 59:
        raise InvalidRequestError(f"hour {_show(value)} is not a valid time of day")
    return value


def validate_day(value: object) -> int:
    """Weekday 0 (Monday) … 6 (Sunday)."""
    if isinstance(value, bool):
        raise InvalidRequestError("day must be 0..6, not a bool")
    if isinstance(value, str) and re.fullmatch(r"[0-6]", value, re.ASCII):
        return int(value)
    if isinstance(value, int) and 0 <= value <= 6:
        return value
    raise InvalidRequestError(f"day must be 0 (Monday) .. 6 (Sunday), got {_show(value)}")


def ext_id(extid: str | int) -> str:
    """Reservation id addressing your own external id: ``ext_id("b-17") == "ext/b-17"``."""
    if isinstance(extid, bool) or not isinstance(extid, str | int):
        raise InvalidRequestError("extid must be a string or an integer")
    text = str(extid)
    if not text:
        raise InvalidRequestError("extid must not be empty")
    return EXT_PREFIX + text


def validate_reservation_id(value: object) -> str:
    """Path segment(s) for a reservation id: a positive Lockme id, or ``ext/<extid>``.

    The extid after ``ext/`` is percent-encoded completely (``/`` becomes ``%2F``); the
    ``ext/`` prefix itself stays literal.
    """
    if isinstance(value, str) and value.startswith(EXT_PREFIX):
        extid = value[len(EXT_PREFIX) :]
        if not extid:
            raise InvalidRequestError("ext/ reservation id needs an extid")
        return EXT_PREFIX + quote(extid, safe="")
    return str(validate_positive_int(value, "reservation id"))


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
