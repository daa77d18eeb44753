"""The local mirror of Lockme reservations, keyed by Lockme's reservation id.

All functions run inside the caller's transaction and never commit.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, cast

from sqlalchemy import Table, and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ._sql import insert_for, serialize_scope
from .bulk import forget_cached, in_chunks, insert_columns, one_of
from .models import DoorWindow, Reservation, RoomLock

__all__ = [
    "ReservationChange",
    "ReservationData",
    "ReservationState",
    "get_reservation",
    "list_reservations",
    "load_reservation_states",
    "mark_reservation_deleted",
    "reservation_for_lock_at",
    "upsert_reservation",
    "upsert_reservation_columns",
]


@dataclass(frozen=True, slots=True)
class ReservationState:
    """A stored reservation row as the mirror compares it (plain values, no ORM object)."""

    id: int
    room_id: int
    date: date
    hour: time
    start_at: datetime
    end_at: datetime
    status: int
    source: str | None
    extid: str | None
    data: dict[str, Any]
    deleted: bool
    created_at: datetime
    updated_at: datetime
    last_message_id: str | None


_STATE_COLUMNS = [Reservation.__table__.c[name] for name in ReservationState.__slots__]


async def load_reservation_states(
    session: AsyncSession, ids: Collection[int], *, for_update: bool = False
) -> dict[int, ReservationState]:
    """The stored rows of ``ids`` (missing ids are absent), read with a few ``IN`` queries;
    ``for_update`` locks them for the transaction (PostgreSQL)."""
    found: dict[int, ReservationState] = {}
    for part in in_chunks(session, sorted(set(ids))):
        stmt = select(*_STATE_COLUMNS).where(one_of(session, Reservation.__table__.c.id, part))
        if for_update:
            stmt = stmt.with_for_update()
        for row in await session.execute(stmt):
            found[row[0]] = ReservationState(*row)
    return found


async def upsert_reservation_columns(
    session: AsyncSession, columns: Mapping[str, Sequence[Any]], *, new: bool = False
) -> None:
    """Write complete reservation rows (every :class:`ReservationState` field), given column
    by column, with one ``INSERT … ON CONFLICT (id) DO UPDATE`` per chunk (``COPY`` through a
    staging table for a large batch on PostgreSQL); ``created_at`` keeps its first value on
    conflict, and ids must not repeat within one call. ``new``: the caller
    holds the ids' locks (``serialize_scopes``) and found none of them stored, so a plain
    ``INSERT`` (``COPY`` on PostgreSQL) writes them; a row that exists after all fails the
    statement instead of being overwritten."""
    if not columns.get("id"):
        return
    await insert_columns(
        session,
        cast(Table, Reservation.__table__),
        columns,
        update_on_conflict=() if new else ("id",),
    )
    forget_cached(session, Reservation, columns["id"])


@dataclass(frozen=True, slots=True)
class ReservationData:
    """One reservation as the pipeline understood it from Lockme (times already in UTC)."""

    id: int
    room_id: int
    date: date
    hour: time
    start_at: datetime
    end_at: datetime
    status: int
    source: str | None
    extid: str | None
    data: dict[str, Any]
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class ReservationChange:
    """What an upsert did: the rooms whose plan must be recomputed are ``affected_rooms``."""

    created: bool
    previous_room_id: int | None
    room_id: int | None

    @property
    def affected_rooms(self) -> frozenset[int]:
        return frozenset(r for r in (self.previous_room_id, self.room_id) if r is not None)


async def upsert_reservation(
    session: AsyncSession, res: ReservationData, *, now: datetime, message_id: str | None = None
) -> ReservationChange:
    """Insert or update the mirror row of ``res`` (a move between rooms updates it in place)."""
    await serialize_scope(session, f"reservation:{res.id}")
    previous = (
        await session.execute(select(Reservation.room_id).where(Reservation.id == res.id))
    ).scalar_one_or_none()
    values: dict[str, Any] = {
        "room_id": res.room_id,
        "date": res.date,
        "hour": res.hour,
        "start_at": res.start_at,
        "end_at": res.end_at,
        "status": res.status,
        "source": res.source,
        "extid": res.extid,
        "data": res.data,
        "deleted": res.deleted,
        "updated_at": now,
        "last_message_id": message_id,
    }
    stmt = insert_for(session, Reservation).values(id=res.id, created_at=now, **values)
    stmt = stmt.on_conflict_do_update(index_elements=["id"], set_=values)
    await session.execute(stmt)
    return ReservationChange(
        created=previous is None, previous_room_id=previous, room_id=res.room_id
    )


async def mark_reservation_deleted(
    session: AsyncSession, reservation_id: int, *, now: datetime, message_id: str | None = None
) -> ReservationChange:
    """Flag a reservation deleted (kept for history). Unknown ids change nothing."""
    row = await session.get(Reservation, reservation_id, with_for_update=True)
    if row is None:
        return ReservationChange(created=False, previous_room_id=None, room_id=None)
    row.deleted = True
    row.updated_at = now
    if message_id is not None:
        row.last_message_id = message_id
    await session.flush()
    return ReservationChange(created=False, previous_room_id=row.room_id, room_id=row.room_id)


async def get_reservation(session: AsyncSession, reservation_id: int) -> Reservation | None:
    return await session.get(Reservation, reservation_id, populate_existing=True)


async def list_reservations(
    session: AsyncSession,
    *,
    room_ids: Collection[int] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    include_deleted: bool = False,
) -> list[Reservation]:
    """Reservations overlapping ``[start, end)`` (either bound optional), by start time."""
    stmt = select(Reservation).order_by(Reservation.start_at, Reservation.id)
    if room_ids is not None:
        stmt = stmt.where(Reservation.room_id.in_(list(room_ids)))
    if start is not None:
        stmt = stmt.where(Reservation.end_at > start)
    if end is not None:
        stmt = stmt.where(Reservation.start_at < end)
    if not include_deleted:
        stmt = stmt.where(Reservation.deleted.is_(False))
    return list((await session.execute(stmt)).scalars())


async def reservation_for_lock_at(session: AsyncSession, lock_id: str, at: datetime) -> int | None:
    """The reservation whose door window at a room served by ``lock_id`` contains ``at``.

    When several windows contain ``at`` (merged back-to-back bookings) the latest-starting one
    wins. Used to link lock events to the booking active at that door at that moment.
    """
    stmt = (
        select(DoorWindow.reservation_id)
        .join(RoomLock, RoomLock.room_id == DoorWindow.room_id)
        .where(
            RoomLock.lock_id == lock_id,
            and_(DoorWindow.start_at <= at, DoorWindow.end_at > at),
        )
        .order_by(DoorWindow.start_at.desc(), DoorWindow.reservation_id.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()
