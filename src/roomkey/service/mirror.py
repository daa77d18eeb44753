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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roomkey.lockme.models import Reservation as LockmeReservation
from roomkey.service.db._sql import serialize_scope, serialize_scopes
from roomkey.service.db.bulk import JSONText, chunked
from roomkey.service.db.models import Reservation, Room
from roomkey.service.db.reservations import (
    ReservationState,
    load_reservation_states,
    upsert_reservation_columns,
)
from roomkey.service.policy import DoorPolicy
from roomkey.service.slots import local_to_utc

__all__ = [
    "DEFAULT_TIMEZONE",
    "MirrorChange",
    "MirrorResult",
    "SnapshotInput",
    "apply_snapshot",
    "apply_snapshots",
    "mark_deleted",
    "room_context",
    "room_contexts",
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


class MirrorResult(NamedTuple):
    """What applying one snapshot or deletion did (a named tuple: one per snapshot)."""

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


def _context(room: Room | None) -> RoomContext:
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


async def room_context(session: AsyncSession, room_id: int) -> RoomContext:
    """The room's time zone and default slot (defaults for a room roomkey does not know)."""
    return _context(await session.get(Room, room_id))


async def room_contexts(session: AsyncSession, room_ids: Iterable[int]) -> dict[int, RoomContext]:
    """:func:`room_context` of many rooms with one ``IN`` query per chunk."""
    wanted = sorted(set(room_ids))
    found: dict[int, Room] = {}
    for part in chunked(wanted):
        for room in (await session.execute(select(Room).where(Room.id.in_(part)))).scalars():
            found[room.id] = room
    return {room_id: _context(found.get(room_id)) for room_id in wanted}


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
    return {
        **dict(zip(_COMPARED, _plan_fields(snapshot, room_id, context), strict=True)),
        "data": snapshot.model_dump(mode="json", exclude_none=True),
    }


def _plan_fields(snapshot: LockmeReservation, room_id: int, context: RoomContext) -> _PlanFields:
    """The stored values of a snapshot that matter to the plan, in :data:`_COMPARED` order."""
    start = local_to_utc(snapshot.date, snapshot.hour, context.timezone)
    minutes = snapshot.duration if snapshot.duration and snapshot.duration > 0 else None
    end = start + dt.timedelta(minutes=minutes or context.default_slot_minutes)
    return (
        room_id,
        snapshot.date,
        snapshot.hour,
        start,
        end,
        1 if snapshot.paid else 0,
        snapshot.source,
        snapshot.extid,
    )


_PlanFields = tuple[int, dt.date, dt.time, dt.datetime, dt.datetime, int, str | None, str | None]
_COMPARED = ("room_id", "date", "hour", "start_at", "end_at", "status", "source", "extid")
"""Fields that matter to the plan; ``data`` (customer details) is refreshed silently."""
_WRITTEN = (*_COMPARED, "id", "data", "deleted", "created_at", "updated_at", "last_message_id")


class _Writes:
    """Complete reservation rows to upsert, gathered column by column."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in _WRITTEN}
        self._appends = tuple(self.columns[name].append for name in _WRITTEN)

    def add(
        self,
        fields: Sequence[Any],
        rid: int,
        data: Any,
        *,
        created_at: dt.datetime,
        updated_at: dt.datetime,
        last_message_id: str | None,
    ) -> None:
        values = (*fields, rid, data, False, created_at, updated_at, last_message_id)
        for append, value in zip(self._appends, values, strict=True):
            append(value)


@dataclass(frozen=True, slots=True)
class SnapshotInput:
    """One reservation snapshot to mirror (an ``add``/``edit`` message's data or a
    ``list_reservations`` item) and the message it came with, if any."""

    reservation_id: int
    room_id: int
    snapshot: LockmeReservation
    message_id: str | None = None


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
    """Insert or update one reservation from a Lockme snapshot: :func:`apply_snapshots`
    with a set of one."""
    (result,) = await apply_snapshots(
        session,
        [SnapshotInput(reservation_id, room_id, snapshot, message_id)],
        now=now,
        authoritative=authoritative,
        unless_updated_after=unless_updated_after,
    )
    return result


async def apply_snapshots(
    session: AsyncSession,
    items: Sequence[SnapshotInput],
    *,
    now: dt.datetime,
    authoritative: bool = False,
    unless_updated_after: dt.datetime | None = None,
) -> list[MirrorResult]:
    """Insert or update reservations from Lockme snapshots, in bulk; one result per item,
    in order (several items for one reservation apply one after another).

    ``authoritative`` (reconciliation: the snapshot was just read from Lockme) revives a
    reservation marked deleted; a message (not authoritative) never does. With
    ``unless_updated_after`` a row changed at or after that moment is left alone
    (``FRESHER``): a message applied while reconciliation read the list wins.

    Statements per call, whatever its size: the rooms' contexts, one advisory lock statement
    (PostgreSQL), one ``SELECT … FOR UPDATE`` and one ``INSERT … ON CONFLICT DO UPDATE`` per
    chunk of :data:`~roomkey.service.db.reservations.IN_CHUNK` reservations.
    """
    if not items:
        return []
    contexts = await room_contexts(session, (item.room_id for item in items))
    results: list[MirrorResult] = []
    for part in _distinct_runs(items):
        results.extend(
            await _apply_run(
                session,
                part,
                contexts,
                now=now,
                authoritative=authoritative,
                unless_updated_after=unless_updated_after,
            )
        )
    return results


def _distinct_runs(items: Sequence[SnapshotInput]) -> list[Sequence[SnapshotInput]]:
    """Consecutive runs of ``items`` in which no reservation id repeats."""
    runs: list[Sequence[SnapshotInput]] = []
    start = 0
    seen: set[int] = set()
    for index, item in enumerate(items):
        if item.reservation_id in seen:
            runs.append(items[start:index])
            start, seen = index, set()
        seen.add(item.reservation_id)
    runs.append(items[start:])
    return runs


async def _apply_run(
    session: AsyncSession,
    items: Sequence[SnapshotInput],
    contexts: Mapping[int, RoomContext],
    *,
    now: dt.datetime,
    authoritative: bool,
    unless_updated_after: dt.datetime | None,
) -> list[MirrorResult]:
    ids = [item.reservation_id for item in items]
    # Concurrent writers of the same reservation ids (message worker, reconciliation, other
    # replicas) queue here even before the rows exist.
    await serialize_scopes(session, (f"reservation:{rid}" for rid in ids))
    stored = await load_reservation_states(session, ids, for_update=True)
    if not stored:
        return await _insert_new(session, items, contexts, now=now)
    results: list[MirrorResult] = []
    inserts, writes = _Writes(), _Writes()
    for item in items:
        rid, room_id, message_id = item.reservation_id, item.room_id, item.message_id
        snapshot = item.snapshot
        fields = _plan_fields(snapshot, room_id, contexts[room_id])
        row = stored.get(rid)
        if row is None:
            inserts.add(
                fields,
                rid,
                JSONText(snapshot.model_dump_json(exclude_none=True)),
                created_at=now,
                updated_at=now,
                last_message_id=message_id,
            )
            results.append(MirrorResult(rid, MirrorChange.ADDED, frozenset({room_id})))
            continue
        if unless_updated_after is not None and row.updated_at >= unless_updated_after:
            results.append(MirrorResult(rid, MirrorChange.FRESHER, frozenset()))
            continue
        if _older_message(message_id, row.last_message_id):
            # A late redelivery of an older message (e.g. a dropped delivery retried after a
            # newer edit was applied) must not undo the newer state.
            results.append(MirrorResult(rid, MirrorChange.FRESHER, frozenset()))
            continue
        if row.deleted and not authoritative:
            results.append(MirrorResult(rid, MirrorChange.IGNORED, frozenset()))
            continue
        last_message_id = message_id if message_id is not None else row.last_message_id
        data = snapshot.model_dump(mode="json", exclude_none=True)
        if not row.deleted and _stored_plan_fields(row) == fields:
            if row.data != data or last_message_id != row.last_message_id:
                writes.add(
                    _stored_plan_fields(row),
                    rid,
                    data,
                    created_at=row.created_at,
                    updated_at=row.updated_at,
                    last_message_id=last_message_id,
                )
            results.append(MirrorResult(rid, MirrorChange.UNCHANGED, frozenset()))
            continue
        writes.add(
            fields,
            rid,
            data,
            created_at=row.created_at,
            updated_at=now,
            last_message_id=last_message_id,
        )
        results.append(MirrorResult(rid, MirrorChange.CHANGED, frozenset({row.room_id, room_id})))
    # Ids not stored yet (locked above, so no other writer adds them meanwhile) are plain
    # inserts; the rest overwrite their rows.
    await upsert_reservation_columns(session, inserts.columns, new=True)
    await upsert_reservation_columns(session, writes.columns)
    return results


async def _insert_new(
    session: AsyncSession,
    items: Sequence[SnapshotInput],
    contexts: Mapping[int, RoomContext],
    *,
    now: dt.datetime,
) -> list[MirrorResult]:
    """:func:`_apply_run` when none of the reservations is stored yet (every one is
    ``ADDED``), a column at a time."""
    count = len(items)
    fields = [_plan_fields(i.snapshot, i.room_id, contexts[i.room_id]) for i in items]
    columns: dict[str, Sequence[Any]] = dict(zip(_COMPARED, zip(*fields, strict=True), strict=True))
    columns["id"] = [i.reservation_id for i in items]
    columns["data"] = [JSONText(i.snapshot.model_dump_json(exclude_none=True)) for i in items]
    columns["deleted"] = [False] * count
    columns["created_at"] = columns["updated_at"] = [now] * count
    columns["last_message_id"] = [i.message_id for i in items]
    await upsert_reservation_columns(session, columns, new=True)
    added = MirrorChange.ADDED
    return [MirrorResult(i.reservation_id, added, frozenset((i.room_id,))) for i in items]


def _stored_plan_fields(row: ReservationState) -> _PlanFields:
    return (
        row.room_id,
        row.date,
        row.hour,
        row.start_at,
        row.end_at,
        row.status,
        row.source,
        row.extid,
    )


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
