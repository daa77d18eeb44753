"""Venue-local booking slots → aware UTC instants, with explicit DST rules.

Lockme gives a reservation as a venue-local ``date`` (``YYYY-MM-DD``) and ``hour``
(``HH:MM:SS``) with no offset. Two wall-clock times need a rule:

* **Nonexistent** (spring forward, e.g. Europe/Warsaw 2026-03-29 02:30): the time is shifted
  forward by the length of the gap — 02:30 becomes 03:30 CEST (01:30 UTC). This is what
  PEP 495 ``fold=0`` gives and it keeps the slot's distance from the previous midnight.
* **Ambiguous** (autumn back, e.g. 2026-10-25 02:30): the first occurrence (``fold=0``,
  still CEST, 00:30 UTC) is used.

A slot's duration is real elapsed minutes: a 120-minute slot starting 01:30 on the spring
day ends at 04:30 local (three wall-clock hours later, two real hours).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "DEFAULT_TIMEZONE",
    "LocalTimeKind",
    "Slot",
    "SlotError",
    "classify_local",
    "local_to_utc",
    "parse_date",
    "parse_hour",
    "resolve_timezone",
    "slot_for",
]

DEFAULT_TIMEZONE = "Europe/Warsaw"


class SlotError(ValueError):
    """A booking's date, hour, duration or timezone cannot be turned into a slot."""


class LocalTimeKind(enum.StrEnum):
    """How a wall-clock time maps to UTC in its zone."""

    NORMAL = "normal"
    NONEXISTENT = "nonexistent"
    """Falls in a spring-forward gap; shifted forward by the gap."""
    AMBIGUOUS = "ambiguous"
    """Occurs twice (autumn); the first occurrence is used."""


@dataclass(frozen=True, slots=True)
class Slot:
    """A booking's slot as aware UTC instants; ``end - start`` is the real duration."""

    start: datetime
    end: datetime
    local_kind: LocalTimeKind = LocalTimeKind.NORMAL


def resolve_timezone(tz: str | ZoneInfo) -> ZoneInfo:
    """``tz`` as a ZoneInfo; unknown names raise :class:`SlotError`."""
    if isinstance(tz, ZoneInfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SlotError(f"unknown timezone {tz!r}") from exc


def parse_date(value: date | str) -> date:
    """A ``date`` or ``YYYY-MM-DD`` string."""
    if isinstance(value, datetime):
        raise SlotError(f"date must be a calendar date, not a datetime: {value!r}")
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value.strip())
    except ValueError as exc:
        raise SlotError(f"invalid date {value!r} (expected YYYY-MM-DD)") from exc


def parse_hour(value: time | str) -> time:
    """A naive ``time`` or an ``HH:MM[:SS]`` string."""
    if isinstance(value, time):
        if value.tzinfo is not None:
            raise SlotError("hour must be venue-local wall-clock time without an offset")
        return value
    text = value.strip()
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() and len(p) <= 2 for p in parts):
        raise SlotError(f"invalid hour {value!r} (expected HH:MM or HH:MM:SS)")
    try:
        numbers = [int(p) for p in parts]
        return time(numbers[0], numbers[1], numbers[2] if len(numbers) == 3 else 0)
    except ValueError as exc:
        raise SlotError(f"invalid hour {value!r} (expected HH:MM or HH:MM:SS)") from exc


def classify_local(day: date, at: time, tz: ZoneInfo) -> LocalTimeKind:
    """Whether ``day at`` is a normal, nonexistent or ambiguous wall-clock time in ``tz``."""
    return _local(day, at, tz)[1]


def local_to_utc(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The aware UTC instant of venue-local ``day at`` (rules in the module docstring)."""
    return _local(day, at, tz)[0]


_LOCAL_CACHE = 16_384
"""Distinct (date, time, zone) triples remembered: a venue has a few slot times a day, so a
resync of months of bookings converts each wall-clock time once instead of per booking."""


@lru_cache(maxsize=_LOCAL_CACHE)
def _local(day: date, at: time, tz: ZoneInfo) -> tuple[datetime, LocalTimeKind]:
    """:func:`local_to_utc` and :func:`classify_local` of one wall-clock time (pure, so
    cached; ``datetime``/``ZoneInfo`` values are immutable)."""
    first = datetime.combine(day, at).replace(tzinfo=tz, fold=0)
    utc = first.astimezone(UTC)
    return utc, _classify(first, utc, tz)


def _classify(first: datetime, utc: datetime, tz: ZoneInfo) -> LocalTimeKind:
    second = first.replace(fold=1)
    if first.utcoffset() == second.utcoffset():
        return LocalTimeKind.NORMAL
    roundtrip = utc.astimezone(tz).replace(tzinfo=None)
    if roundtrip != first.replace(tzinfo=None):
        return LocalTimeKind.NONEXISTENT
    return LocalTimeKind.AMBIGUOUS


def slot_for(
    day: date | str,
    hour: time | str,
    duration: timedelta,
    tz: str | ZoneInfo = DEFAULT_TIMEZONE,
) -> Slot:
    """The UTC slot of a booking starting at venue-local ``day hour`` lasting ``duration``."""
    if duration <= timedelta(0):
        raise SlotError(f"slot duration must be positive, got {duration}")
    zone = resolve_timezone(tz)
    d, h = parse_date(day), parse_hour(hour)
    return _slot(d, h, duration, zone)


@lru_cache(maxsize=_LOCAL_CACHE)
def _slot(day: date, at: time, duration: timedelta, tz: ZoneInfo) -> Slot:
    """:func:`slot_for` of parsed values (pure, so cached; :class:`Slot` is frozen)."""
    start, kind = _local(day, at, tz)
    return Slot(start=start, end=start + duration, local_kind=kind)
