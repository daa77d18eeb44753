"""The local reservation mirror: Lockme reservations as roomkey last saw them.

Keyed by Lockme's reservation id, so applying the same snapshot twice changes nothing, and a
reservation moved between rooms or dates is updated in place. Each change reports the rooms
whose door plan it touches (old *and* new room on a move). Deletions are soft (``deleted``) and
sticky against late messages: Lockme never reuses a reservation id, so an ``add``/``edit``
arriving after a ``delete`` (out-of-order retry) is ignored; only reconciliation, which reads
Lockme's current truth, may bring a deleted reservation back.

Reservations of rooms roomkey does not know are kept too; they simply plan nothing.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roomkey.lockme.models import Reservation as LockmeReservation
from roomkey.service.db._sql import serialize_scope
from roomkey.service.db.models import Reservation, Room
from roomkey.service.policy import DoorPolicy
from roomkey.service.slots import local_to_utc

__all__ = [
    "DEFAULT_TIMEZONE",
    "MirrorChange",
    "MirrorResult",
    "apply_snapshot",
    "mark_deleted",
    "room_context",
]

DEFAULT_TIMEZONE = "Europe/Warsaw"


class MirrorChange(enum.StrEnum):
    ADDED = "added"
    CHANGED = "changed"
    DELETED = "deleted"
    UNCHANGED = "unchanged"
    IGNORED = "ignored"
    """A stale add/edit for a reservation already deleted, or a delete of one never seen."""
    FRESHER = "fresher"
    """Left alone: the row changed after the caller's snapshot was taken."""


@dataclass(frozen=True)
class MirrorResult:
    """What applying one snapshot or deletion did."""

    reservation_id: int
    change: MirrorChange
    rooms: frozenset[int]
    """Rooms whose door plan must be recomputed (empty when nothing changed)."""

    @property
    def changed(self) -> bool:
        return self.change in (MirrorChange.ADDED, MirrorChange.CHANGED, MirrorChange.DELETED)


@dataclass(frozen=True)
class RoomContext:
    """What the mirror needs to know about a room: its time zone and default slot length."""

    timezone: ZoneInfo
    default_slot_minutes: int


async def room_context(session: AsyncSession, room_id: int) -> RoomContext:
    """The room's time zone and default slot (defaults for a room roomkey does not know)."""
    room = await session.get(Room, room_id)
    tz_name = room.timezone if room is not None and room.timezone else DEFAULT_TIMEZONE
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo(DEFAULT_TIMEZONE)
    slot = DoorPolicy().default_slot_minutes
    if room is not None and isinstance(room.policy, dict):
        value = room.policy.get("default_slot_minutes")
        if isinstance(value, int) and value > 0:
            slot = value
    return RoomContext(tz, slot)


async def _locked(session: AsyncSession, reservation_id: int) -> Reservation | None:
    """The row, locked for this transaction; concurrent writers of the same reservation id
    (message worker, reconciliation, other replicas) queue here even before it exists."""
    await serialize_scope(session, f"reservation:{reservation_id}")
    return await session.get(
        Reservation, reservation_id, with_for_update=True, populate_existing=True
    )


def _older_message(message_id: str | None, last_message_id: str | None) -> bool:
    """True when ``message_id`` was issued before the message that last changed the row.

    Lockme numbers its messages in issue order, so a smaller id is an older message.
    Ids that are not plain integers are never compared (the message then applies).
    """
    if message_id is None or last_message_id is None:
        return False
    if not (message_id.isdecimal() and last_message_id.isdecimal()):
        return False
    return int(message_id) < int(last_message_id)


def _fields(snapshot: LockmeReservation, room_id: int, context: RoomContext) -> dict[str, Any]:
    start = local_to_utc(snapshot.date, snapshot.hour, context.timezone)
    minutes = snapshot.duration if snapshot.duration and snapshot.duration > 0 else None
    end = start + dt.timedelta(minutes=minutes or context.default_slot_minutes)
    return {
        "room_id": room_id,
        "date": snapshot.date,
        "hour": snapshot.hour,
        "start_at": start,
        "end_at": end,
        "status": 1 if snapshot.paid else 0,
        "source": snapshot.source,
        "extid": snapshot.extid,
        "data": snapshot.model_dump(mode="json", exclude_none=True),
    }


_COMPARED = ("room_id", "date", "hour", "start_at", "end_at", "status", "source", "extid")
"""Fields that matter to the plan; ``data`` (customer details) is refreshed silently."""


async def apply_snapshot(
    session: AsyncSession,
    reservation_id: int,
    room_id: int,
    snapshot: LockmeReservation,
    *,
    now: dt.datetime,
    message_id: str | None = None,
    authoritative: bool = False,
    unless_updated_after: dt.datetime | None = None,
) -> MirrorResult:
    """Insert or update one reservation from a Lockme snapshot (``add``/``edit`` data or a
    ``list_reservations`` item).

    ``authoritative`` (reconciliation: the snapshot was just read from Lockme) revives a
    reservation marked deleted; a message (not authoritative) never does. With
    ``unless_updated_after`` a row changed at or after that moment is left alone
    (``FRESHER``): a message applied while reconciliation read the list wins.
    """
    context = await room_context(session, room_id)
    fields = _fields(snapshot, room_id, context)
    row = await _locked(session, reservation_id)
    if (
        row is not None
        and unless_updated_after is not None
        and (row.updated_at >= unless_updated_after)
    ):
        return MirrorResult(reservation_id, MirrorChange.FRESHER, frozenset())
    if row is not None and _older_message(message_id, row.last_message_id):
        # A late redelivery of an older message (e.g. a dropped delivery retried after a
        # newer edit was applied) must not undo the newer state.
        return MirrorResult(reservation_id, MirrorChange.FRESHER, frozenset())
    if row is None:
        session.add(
            Reservation(
                id=reservation_id,
                deleted=False,
                created_at=now,
                updated_at=now,
                last_message_id=message_id,
                **fields,
            )
        )
        await session.flush()
        return MirrorResult(reservation_id, MirrorChange.ADDED, frozenset({room_id}))
    if row.deleted and not authoritative:
        return MirrorResult(reservation_id, MirrorChange.IGNORED, frozenset())
    old_room = row.room_id
    differs = row.deleted or any(getattr(row, name) != fields[name] for name in _COMPARED)
    if not differs:
        row.data = fields["data"]
        if message_id is not None:
            row.last_message_id = message_id
        return MirrorResult(reservation_id, MirrorChange.UNCHANGED, frozenset())
    for name, value in fields.items():
        setattr(row, name, value)
    row.deleted = False
    row.updated_at = now
    if message_id is not None:
        row.last_message_id = message_id
    await session.flush()
    return MirrorResult(reservation_id, MirrorChange.CHANGED, frozenset({old_room, room_id}))


async def mark_deleted(
    session: AsyncSession,
    reservation_id: int,
    *,
    now: dt.datetime,
    message_id: str | None = None,
    room_id: int | None = None,
    snapshot: LockmeReservation | None = None,
    unless_updated_after: dt.datetime | None = None,
) -> MirrorResult:
    """Soft-delete a reservation (a ``delete`` message, a lapsed cart, or vanished on
    reconciliation). A delete of a reservation never seen is recorded as a deleted row, so a
    late ``add`` for it is ignored."""
    row = await _locked(session, reservation_id)
    if (
        row is not None
        and unless_updated_after is not None
        and (row.updated_at >= unless_updated_after)
    ):
        return MirrorResult(reservation_id, MirrorChange.FRESHER, frozenset())
    if row is None:
        if room_id is None or snapshot is None:
            return MirrorResult(reservation_id, MirrorChange.IGNORED, frozenset())
        context = await room_context(session, room_id)
        session.add(
            Reservation(
                id=reservation_id,
                deleted=True,
                created_at=now,
                updated_at=now,
                last_message_id=message_id,
                **_fields(snapshot, room_id, context),
            )
        )
        await session.flush()
        return MirrorResult(reservation_id, MirrorChange.IGNORED, frozenset())
    if row.deleted:
        return MirrorResult(reservation_id, MirrorChange.UNCHANGED, frozenset())
    row.deleted = True
    row.updated_at = now
    if message_id is not None:
        row.last_message_id = message_id
    await session.flush()
    return MirrorResult(reservation_id, MirrorChange.DELETED, frozenset({row.room_id}))


async def live_reservations(
    session: AsyncSession, room_ids: list[int], *, start: dt.datetime, end: dt.datetime
) -> list[Reservation]:
    """Not-deleted reservations of these rooms starting in ``[start, end)``."""
    result = await session.scalars(
        select(Reservation)
        .where(
            Reservation.room_id.in_(room_ids),
            Reservation.deleted.is_(False),
            Reservation.start_at >= start,
            Reservation.start_at < end,
        )
        .order_by(Reservation.start_at, Reservation.id)
    )
    return list(result)
