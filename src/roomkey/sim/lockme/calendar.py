"""Dates, hours and slot lists in the venue's local time (pure functions)."""

from __future__ import annotations

import functools
import re
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from roomkey.sim.lockme.errors import BadRequest
from roomkey.sim.lockme.models import Slot

__all__ = [
    "VENUE_TZ",
    "add_days",
    "local_now",
    "parse_date",
    "parse_day",
    "parse_hour",
    "slot_start",
    "slot_timestamp",
    "validate_slots",
]

VENUE_TZ = ZoneInfo("Europe/Warsaw")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HOUR = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2}))?$")


def parse_date(value: object) -> str:
    """Validate a ``YYYY-MM-DD`` calendar date; returns it unchanged."""
    if not isinstance(value, str) or not _DATE.match(value):
        raise BadRequest("Invalid date, expected YYYY-MM-DD")
    try:
        date.fromisoformat(value)
    except ValueError:
        raise BadRequest("Invalid date, expected YYYY-MM-DD") from None
    return value


def parse_hour(value: object) -> str:
    """Validate ``HH:MM:SS`` (``HH:MM`` accepted); returns the ``HH:MM:SS`` form."""
    match = _HOUR.match(value) if isinstance(value, str) else None
    if match is None:
        raise BadRequest("Invalid hour, expected HH:MM:SS")
    hh, mm, ss = int(match[1]), int(match[2]), int(match[3] or 0)
    if hh > 23 or mm > 59 or ss > 59:
        raise BadRequest("Invalid hour, expected HH:MM:SS")
    return f"{hh:02d}:{mm:02d}:{ss:02d}"


def parse_day(value: object) -> int:
    """Validate a weekday number, 0 = Monday … 6 = Sunday."""
    try:
        day = int(str(value))
    except ValueError:
        raise BadRequest("Invalid day, expected 0 (Monday) to 6 (Sunday)") from None
    if not 0 <= day <= 6:
        raise BadRequest("Invalid day, expected 0 (Monday) to 6 (Sunday)")
    return day


def validate_slots(value: Any, known_pricers: set[int] | None = None) -> list[Slot]:
    """Check a slot list ``[{hour, pricers: [id, ...]}, ...]``; returns a normalised copy."""
    if not isinstance(value, list):
        raise BadRequest("Settings must be a list of slots")
    slots: list[Slot] = []
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, dict):
            raise BadRequest("Each slot must be an object with hour and pricers")
        hour = parse_hour(item.get("hour"))
        if hour in seen:
            raise BadRequest(f"Duplicate slot hour {hour}")
        seen.add(hour)
        pricers = item.get("pricers", [])
        if not isinstance(pricers, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in pricers
        ):
            raise BadRequest("Slot pricers must be a list of pricer ids")
        if known_pricers is not None:
            unknown = [p for p in pricers if p not in known_pricers]
            if unknown:
                raise BadRequest(f"Unknown pricer id {unknown[0]} for this room")
        slots.append({"hour": hour, "pricers": list(pricers)})
    slots.sort(key=lambda s: str(s["hour"]))
    return slots


def weekday(day: str) -> int:
    """Weekday of a ``YYYY-MM-DD`` date, 0 = Monday."""
    return date.fromisoformat(day).weekday()


def slot_start(day: str, hour: str) -> datetime:
    """Aware venue-local start of a slot."""
    return datetime.fromisoformat(f"{day}T{hour}").replace(tzinfo=VENUE_TZ)


@functools.lru_cache(maxsize=65536)
def slot_timestamp(day: str, hour: str) -> float:
    """Unix time of a slot start (cached: conflict checks call this a lot)."""
    return slot_start(day, hour).timestamp()


def local_now(unix: float) -> datetime:
    """The venue-local wall-clock time for a Unix timestamp."""
    return datetime.fromtimestamp(unix, tz=VENUE_TZ)


@functools.lru_cache(maxsize=65536)
def add_days(day: str, days: int) -> str:
    """``day`` shifted by ``days`` calendar days."""
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()
