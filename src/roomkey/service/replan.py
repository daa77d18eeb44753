"""Recompute and store the door plan of rooms whose bookings changed.

For the rooms asked for, plus every room that shares a lock with them (transitively — a
shared lock's plan needs the windows of all its rooms):

1. load each room's policy, locks and live bookings from the mirror;
2. ``plan_room`` per room, ``merge_lock_actions`` across them (per-lock plans);
3. per lock, ``diff_actions`` against the stored door actions (history included, so a door
   we left unlocked is locked now when its booking vanished);
4. write the changes: create, move in place, supersede, skip (with an alert); store
   ``door_windows`` per room.

Runs inside the caller's transaction (the message worker commits it together with the mirror
change). Serialised per lock across replicas (advisory locks on PostgreSQL; SQLite has one
writer anyway).

Storage mapping: the diff keys actions by ``(key, generation)``; a stored ``door_actions.key``
is the planner key for generation 0 and ``"{key}~{generation}"`` after that. The stored row
has no command column: the command of a ``lock`` action is the room policy's
``lock_action`` (see :func:`stored_command`).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Select, Table, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from roomkey.service.commands import DoorCommand
from roomkey.service.db._sql import serialize_scopes
from roomkey.service.db.alerts import open_alert_if_new
from roomkey.service.db.bulk import (
    JSONText,
    chunked,
    in_chunks,
    insert_columns,
    one_of,
    read_rows,
)
from roomkey.service.db.models import (
    Command,
    DoorAction,
    DoorActionKind,
    DoorActionStatus,
    Reservation,
    Room,
    RoomLock,
)
from roomkey.service.db.plans import WindowSpec, replace_room_door_windows
from roomkey.service.plan_diff import (
    ActionChanges,
    ActionCreate,
    ActionStatus,
    ChangeReason,
    StoredAction,
    diff_actions,
)
from roomkey.service.planner import (
    ActionRole,
    LockPlan,
    PlannedAction,
    RoomPlan,
    merge_lock_actions,
    plan_room,
)
from roomkey.service.policy import DoorPolicy, LockAction
from roomkey.service.slots import resolve_timezone

__all__ = [
    "BOOKING_LOOKBACK",
    "HISTORY_LOOKBACK",
    "ReplanResult",
    "StoredBooking",
    "booking_input",
    "parse_stored_key",
    "replan_rooms",
    "stored_command",
    "stored_key",
]

log = logging.getLogger(__name__)

BOOKING_LOOKBACK = dt.timedelta(days=1)
"""Bookings that ended longer ago than this are not planned again."""
HISTORY_LOOKBACK = dt.timedelta(days=3)
"""Stored actions this old (and every still-planned one) feed the diff as history."""

ROLE_TO_KIND: Mapping[ActionRole, DoorActionKind] = {
    ActionRole.UNLOCK: DoorActionKind.UNLOCK,
    ActionRole.OPEN_HOUSE_ON: DoorActionKind.OPEN_HOUSE_ON,
    ActionRole.OPEN: DoorActionKind.OPEN,
    ActionRole.OPEN_HOUSE_OFF: DoorActionKind.OPEN_HOUSE_OFF,
    ActionRole.LOCK: DoorActionKind.LOCK,
}
KIND_TO_ROLE: Mapping[DoorActionKind, ActionRole] = {v: k for k, v in ROLE_TO_KIND.items()}
_GEN_SEP = "~"
_ARMS_PER_STATEMENT = 8
"""``IN`` lists per ``UNION ALL`` statement when reading stored actions (bound variables stay
far below SQLite's limit)."""


@dataclass
class ReplanResult:
    """What re-planning changed (keys as stored in ``door_actions``)."""

    rooms: frozenset[int] = frozenset()
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.superseded or self.skipped)

    def merge(self, other: ReplanResult) -> ReplanResult:
        return ReplanResult(
            self.rooms | other.rooms,
            self.created + other.created,
            self.updated + other.updated,
            self.superseded + other.superseded,
            self.skipped + other.skipped,
        )

    def summary(self) -> str:
        return (
            f"rooms={sorted(self.rooms)} created={len(self.created)} "
            f"updated={len(self.updated)} superseded={len(self.superseded)} "
            f"skipped={len(self.skipped)}"
        )


def stored_key(key: str, generation: int) -> str:
    """``door_actions.key`` of one incarnation of a planner key."""
    return key if generation == 0 else f"{key}{_GEN_SEP}{generation}"


def parse_stored_key(stored: str) -> tuple[str, int]:
    """Inverse of :func:`stored_key`."""
    base, sep, gen = stored.rpartition(_GEN_SEP)
    if sep and gen.isdigit():
        return base, int(gen)
    return stored, 0


def stored_command(kind: DoorActionKind, policy: DoorPolicy) -> DoorCommand:
    """The lock command a stored action stands for."""
    if kind is DoorActionKind.UNLOCK:
        return DoorCommand.DAY_LOCK
    if kind is DoorActionKind.LOCK:
        return (
            DoorCommand.NIGHT_LOCK
            if policy.lock_action is LockAction.NIGHT_LOCK
            else DoorCommand.DAY_LOCK
        )
    return DoorCommand(kind.value)


def _duration(value: Any) -> int | None:
    if type(value) is int:  # the usual shape
        return value if 0 < value <= 7 * 24 * 60 else None
    try:
        minutes = int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None
    return minutes if minutes is not None and 0 < minutes <= 7 * 24 * 60 else None


_LOCKME_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")


def _created_at(value: Any, tz: ZoneInfo) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        if _LOCKME_TIME.fullmatch(text):
            parsed = dt.datetime.fromisoformat(text)  # the usual shape, 10× faster
        else:
            parsed = dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return parsed.replace(tzinfo=tz)


class _ReservationRow(Protocol):
    """What :func:`booking_input` reads: a ``Reservation`` or a Core row of its columns."""

    @property
    def id(self) -> int: ...
    @property
    def room_id(self) -> int: ...
    @property
    def date(self) -> dt.date: ...
    @property
    def hour(self) -> dt.time: ...
    @property
    def status(self) -> int: ...
    @property
    def source(self) -> str | None: ...
    @property
    def deleted(self) -> bool: ...
    @property
    def data(self) -> dict[str, Any]: ...


class StoredBooking(NamedTuple):
    """The planner's view of a mirrored reservation (a :class:`~roomkey.service.planner.
    Booking`): plain values read from the mirror, already valid, so no model validation per
    booking."""

    reservation_id: str
    room_id: int
    date: dt.date
    hour: dt.time
    duration_minutes: int | None
    status: bool
    source: str | None
    deleted: bool
    created_at: dt.datetime | None
    """Lockme's ``time``: read only where the planner uses it (an unpaid ``web`` cart lapses
    by age), None otherwise."""
    lapsed: bool = False


def booking_input(row: _ReservationRow, tz: ZoneInfo) -> StoredBooking:
    """The planner's view of a mirrored reservation."""
    data = row.data if isinstance(row.data, dict) else {}
    return _stored_booking(
        row.id,
        row.room_id,
        row.date,
        row.hour,
        row.status,
        row.source,
        row.deleted,
        data.get("duration"),
        data.get("time"),
        tz,
    )


def _stored_booking(
    reservation_id: int,
    room_id: int,
    date: dt.date,
    hour: dt.time,
    status: int,
    source: str | None,
    deleted: bool,
    duration: Any,
    time: Any,
    tz: ZoneInfo,
) -> StoredBooking:
    """``duration``/``time``: those entries of the reservation's Lockme data (None when
    absent)."""
    paid = bool(status)
    return StoredBooking(
        str(reservation_id),
        room_id,
        date,
        hour,
        _duration(duration),
        paid,
        source,
        bool(deleted),
        None if paid or source != "web" else _created_at(time, tz),
    )


def _policy(room: Room) -> DoorPolicy:
    try:
        return DoorPolicy.model_validate(room.policy or {})
    except ValueError:
        log.error("room %s has an unusable stored policy; using defaults", room.id)
        return DoorPolicy()


@dataclass
class _Scope:
    rooms: dict[int, Room]
    links: dict[int, list[str]]
    """room id → its lock ids (only active rooms are linked)."""

    @property
    def locks(self) -> set[str]:
        return {lock for locks in self.links.values() for lock in locks}


async def _scope(session: AsyncSession, room_ids: Iterable[int]) -> _Scope:
    """The rooms asked for plus every room sharing a lock with them, transitively."""
    links: dict[int, list[str]] = {}
    rooms: dict[int, Room] = {}
    todo = set(room_ids)
    while todo:
        found = (await session.execute(select(Room).where(Room.id.in_(sorted(todo))))).scalars()
        for room in found:
            rooms[room.id] = room
        pairs = await session.execute(
            select(RoomLock.room_id, RoomLock.lock_id).where(RoomLock.room_id.in_(sorted(todo)))
        )
        new_locks: set[str] = set()
        for room_id, lock_id in pairs.all():
            if room_id in rooms and rooms[room_id].active:
                links.setdefault(room_id, []).append(lock_id)
                new_locks.add(lock_id)
        done = set(rooms) | todo
        todo = set()
        if new_locks:
            sharing = (
                await session.execute(
                    select(RoomLock.room_id).where(RoomLock.lock_id.in_(sorted(new_locks)))
                )
            ).scalars()
            todo = set(sharing) - done
    for locks in links.values():
        locks.sort()
    return _Scope(rooms, links)


async def _stored_actions(
    session: AsyncSession,
    locks: set[str],
    room_ids: set[int],
    policies: Mapping[int, DoorPolicy],
    *,
    now: dt.datetime,
) -> tuple[list[StoredAction], dict[tuple[str, int], DoorAction]]:
    """Stored actions of these locks or rooms still planned or recent enough to be history,
    with a few ``IN`` queries (one per chunk of locks, of rooms, of command ids)."""
    if not locks and not room_ids:
        return [], {}
    # Index-friendly arms joined by UNION ALL instead of one ``… AND (planned OR recent)``:
    # without table statistics SQLite answers that OR by scanning every planned action of the
    # venue (ix_door_actions_status_planned), once per re-plan — quadratic over a resync.
    since = now - HISTORY_LOOKBACK
    arms: list[Select[Any]] = [
        select(DoorAction).where(DoorAction.lock_id.in_(part), DoorAction.planned_at >= since)
        for part in chunked(sorted(locks))
    ]
    arms += [
        select(DoorAction).where(DoorAction.room_id.in_(part), DoorAction.planned_at >= since)
        for part in chunked(sorted(room_ids))
    ]
    # Still planned but older (overdue, rare): venue-wide by the status index, then filtered.
    arms.append(
        select(DoorAction).where(
            DoorAction.status == DoorActionStatus.PLANNED, DoorAction.planned_at < since
        )
    )
    found: dict[str, DoorAction] = {}
    for group in chunked(arms, _ARMS_PER_STATEMENT):
        stmt = group[0] if len(group) == 1 else select(DoorAction).from_statement(union_all(*group))
        for row in (await session.execute(stmt)).scalars():
            if row.lock_id in locks or row.room_id in room_ids:
                found[row.key] = row
    rows = [found[key] for key in sorted(found)]
    command_ids = sorted({r.command_id for r in rows if r.command_id})
    commands: dict[str, Command] = {}
    for id_part in chunked(command_ids):
        for command in (
            await session.execute(select(Command).where(Command.id.in_(id_part)))
        ).scalars():
            commands[command.id] = command
    stored: list[StoredAction] = []
    by_ref: dict[tuple[str, int], DoorAction] = {}
    default_policy = DoorPolicy()
    for row in rows:
        key, generation = parse_stored_key(row.key)
        policy = policies.get(row.room_id, default_policy)
        reservation = str(row.reservation_ids[0]) if row.reservation_ids else key.rsplit(":", 1)[-1]
        stored.append(
            StoredAction(
                key=key,
                generation=generation,
                room_id=row.room_id,
                lock_id=row.lock_id,
                role=KIND_TO_ROLE[DoorActionKind(row.kind)],
                command=stored_command(DoorActionKind(row.kind), policy),
                at=row.planned_at,
                status=_status(row, commands.get(row.command_id or ""), now),
                reservation_id=reservation,
            )
        )
        by_ref[(key, generation)] = row
    return stored, by_ref


def _status(row: DoorAction, command: Command | None, now: dt.datetime) -> ActionStatus:
    status = DoorActionStatus(row.status)
    if status is DoorActionStatus.PLANNED:
        claimed = row.claim_owner is not None and (
            row.claim_until is None or row.claim_until >= now
        )
        return ActionStatus.RUNNING if claimed or row.command_id else ActionStatus.PENDING
    if status is DoorActionStatus.SUPERSEDED:
        return ActionStatus.SUPERSEDED
    if status is DoorActionStatus.SKIPPED:
        return ActionStatus.SKIPPED
    # done / failed: did anything possibly reach the lock?
    if command is not None and command.sent_at is None and command.sending_at is None:
        return ActionStatus.NOT_SENT
    return ActionStatus.DONE


_RESERVATIONS = cast(Table, Reservation.__table__)
_BOOKING_COLUMNS = (
    _RESERVATIONS.c.id,
    _RESERVATIONS.c.room_id,
    _RESERVATIONS.c.date,
    _RESERVATIONS.c.hour,
    _RESERVATIONS.c.status,
    _RESERVATIONS.c.source,
    # Only the two entries of Lockme's data the planner reads, not the whole document.
    _RESERVATIONS.c.data["duration"],
    _RESERVATIONS.c.data["time"],
)


async def _bookings(
    session: AsyncSession, rooms: list[int], tzs: Mapping[int, ZoneInfo], *, now: dt.datetime
) -> dict[int, list[StoredBooking]]:
    """The live bookings of ``rooms`` (plain rows, one ``IN`` query per chunk of rooms)."""
    bookings: dict[int, list[StoredBooking]] = {room_id: [] for room_id in rooms}
    table = _RESERVATIONS
    for part in in_chunks(session, rooms):
        rows = await read_rows(
            session,
            select(*_BOOKING_COLUMNS)
            .where(
                one_of(session, table.c.room_id, part),
                table.c.deleted.is_(False),
                table.c.end_at >= now - BOOKING_LOOKBACK,
            )
            .order_by(table.c.room_id, table.c.id),
        )
        for rid, room_id, date, hour, status, source, duration, time in rows:
            bookings[room_id].append(  # not deleted: the query's condition
                _stored_booking(
                    rid, room_id, date, hour, status, source, False, duration, time, tzs[room_id]
                )
            )
    return bookings


async def replan_rooms(
    session: AsyncSession, room_ids: Iterable[int], *, now: dt.datetime
) -> ReplanResult:
    """Re-plan ``room_ids`` (and rooms sharing their locks) and store the result.

    One path for one room (a webhook) and for many (a resync): everything the rooms need is
    read with a few ``IN`` queries, planned and diffed in memory, and written back in bulk.
    """
    scope = await _scope(session, room_ids)
    if not scope.rooms:
        return ReplanResult()
    await serialize_scopes(session, (f"lock-plan:{lock}" for lock in scope.locks))
    policies = {room_id: _policy(room) for room_id, room in scope.rooms.items()}
    planned_rooms = sorted(scope.rooms)
    tzs = {room_id: resolve_timezone(room.timezone) for room_id, room in scope.rooms.items()}
    bookings = await _bookings(session, planned_rooms, tzs, now=now)
    plans: list[RoomPlan] = []
    for room_id in planned_rooms:
        plans.append(
            plan_room(
                room_id,
                bookings[room_id],
                policies[room_id],
                scope.links.get(room_id, []),
                now=now,
                tz=tzs[room_id],
                with_lock_plans=False,
            )
        )
    del bookings
    lock_plans: dict[str, LockPlan] = merge_lock_actions(plans)
    stored, by_ref = await _stored_actions(
        session, scope.locks, set(planned_rooms), policies, now=now
    )
    stored_by_lock: dict[str, list[StoredAction]] = {}
    for action in stored:
        stored_by_lock.setdefault(action.lock_id, []).append(action)
    rooms_by_lock: dict[str, list[int]] = {}
    for room_id in planned_rooms:
        for lock in scope.links.get(room_id, []):
            rooms_by_lock.setdefault(lock, []).append(room_id)
    result = ReplanResult(rooms=frozenset(planned_rooms))
    writer = _Writer(by_ref, now=now)
    for lock in sorted(scope.locks | set(stored_by_lock)):
        lock_policies = [policies[r] for r in rooms_by_lock.get(lock, [])] or [DoorPolicy()]
        strict = any(p.lock_action is LockAction.NIGHT_LOCK for p in lock_policies)
        planned = list(lock_plans[lock].actions) if lock in lock_plans else []
        changes = diff_actions(
            stored_by_lock.get(lock, []),
            planned,
            now=now,
            max_lateness=min(p.max_lateness for p in lock_policies),
            lock_command=DoorCommand.NIGHT_LOCK if strict else DoorCommand.DAY_LOCK,
        )
        writer.add(changes, planned)
    await writer.write(session, result)
    await replace_room_door_windows(
        session,
        {
            plan.room_id: [
                WindowSpec(int(w.reservation_id), plan.room_id, w.start, w.end)
                for w in plan.windows
            ]
            for plan in plans
        },
        now=now,
    )
    await session.flush()
    if result.changed:
        log.info("re-planned: %s", result.summary())
    return result


async def _free_keys(session: AsyncSession, wanted: list[tuple[str, int]]) -> list[str]:
    """For each ``(key, generation)`` a stored key no row uses yet (old history is not
    loaded, so the database is asked), distinct within the batch: a few ``IN`` queries."""
    generations = [generation for _key, generation in wanted]
    chosen: list[str] = [""] * len(wanted)
    taken: set[str] = set()
    checked: set[str] = set()
    todo = list(range(len(wanted)))
    while todo:
        probe = sorted({stored_key(wanted[i][0], generations[i]) for i in todo} - checked)
        column = cast(Table, DoorAction.__table__).c.key
        for part in in_chunks(session, probe):
            rows = await read_rows(session, select(column).where(one_of(session, column, part)))
            taken.update(key for (key,) in rows)
        checked.update(probe)
        left: list[int] = []
        for i in todo:
            key = stored_key(wanted[i][0], generations[i])
            if key in taken:
                generations[i] += 1
                left.append(i)
            else:
                chosen[i] = key
                taken.add(key)
        todo = left
    return chosen


def _reservation_ids(action: PlannedAction) -> list[int]:
    return [int(r) for r in action.reservation_ids if r.isdigit()]


def _reservation_ids_json(action: PlannedAction) -> list[int] | JSONText:
    """:func:`_reservation_ids` for a new row; the usual single canonical id directly as the
    JSON text it is stored as."""
    ids = action.reservation_ids
    if len(ids) == 1:
        rid = ids[0]
        if rid.isdigit() and (rid[0] != "0" or len(rid) == 1):
            return JSONText(f"[{rid}]")
    return _reservation_ids(action)


_INSERTED = (
    "room_id",
    "lock_id",
    "kind",
    "planned_at",
    "status",
    "reservation_ids",
    "reason",
    "finished_at",
)
"""Columns of a new door action that vary per row (the rest are constants of the batch)."""


@dataclass
class _NewSkip:
    """A skipped action to report: a new row (``index`` into the inserts) or an existing one."""

    index: int | None
    key: str
    room_id: int
    lock_id: str
    reason: str
    code: str


class _Writer:
    """Collects the diff's changes over many locks, then writes them in bulk: new rows with
    one multi-row ``INSERT`` per chunk (``COPY`` on PostgreSQL), changed rows through the
    ORM (batched at flush). New rows are gathered column by column, the shape the bulk
    insert sends."""

    def __init__(self, by_ref: dict[tuple[str, int], DoorAction], *, now: dt.datetime) -> None:
        self.by_ref = by_ref
        self.now = now
        self.wanted: list[tuple[str, int]] = []
        self.columns: dict[str, list[Any]] = {name: [] for name in _INSERTED}
        self._appends = tuple(self.columns[name].append for name in _INSERTED)
        self.created: list[int] = []
        self.updated: list[str] = []
        self.superseded: list[str] = []
        self.skipped: list[_NewSkip] = []

    def _insert(
        self,
        key: str,
        generation: int,
        action: PlannedAction,
        *,
        at: dt.datetime,
        status: DoorActionStatus,
        reason: str | None,
        finished_at: dt.datetime | None,
    ) -> int:
        self.wanted.append((key, generation))
        values = (
            action.room_id,
            action.lock_id,
            ROLE_TO_KIND[action.role],
            at,
            status,
            _reservation_ids(action),
            reason,
            finished_at,
        )
        for append, value in zip(self._appends, values, strict=True):
            append(value)
        return len(self.wanted) - 1

    def _create(self, creates: Sequence[ActionCreate]) -> None:
        """New pending rows, a column at a time (the bulk of a resync)."""
        first = len(self.wanted)
        actions = [create.action for create in creates]
        self.wanted.extend([(a.key, c.generation) for a, c in zip(actions, creates, strict=True)])
        columns = self.columns
        columns["room_id"].extend([a.room_id for a in actions])
        columns["lock_id"].extend([a.lock_id for a in actions])
        columns["kind"].extend([ROLE_TO_KIND[a.role] for a in actions])
        columns["planned_at"].extend([a.at for a in actions])
        columns["status"].extend([DoorActionStatus.PLANNED] * len(actions))
        columns["reservation_ids"].extend([_reservation_ids_json(a) for a in actions])
        columns["reason"].extend(
            [None if c.reason is ChangeReason.NEW else c.reason.value for c in creates]
        )
        columns["finished_at"].extend([None] * len(actions))
        self.created.extend(range(first, len(self.wanted)))

    def add(self, changes: ActionChanges, planned: list[PlannedAction]) -> None:
        now = self.now
        by_ref = self.by_ref
        planned_by_key = {p.key: p for p in planned} if changes.update or changes.keep else {}
        if changes.create:
            self._create(changes.create)
        for upd in changes.update:
            row = by_ref[(upd.key, upd.generation)]
            row.planned_at = upd.at
            row.reason = upd.reason.value
            source = planned_by_key.get(upd.key)
            if source is not None:
                row.reservation_ids = _reservation_ids(source)
            row.version += 1
            row.updated_at = now
            self.updated.append(row.key)
        for ref in changes.supersede:
            row = by_ref[(ref.key, ref.generation)]
            row.status = DoorActionStatus.SUPERSEDED
            row.reason = ref.reason.value
            row.version += 1
            row.updated_at = now
            row.finished_at = now
            row.claim_owner = None
            row.claim_until = None
            self.superseded.append(row.key)
        for skip in changes.skip:
            reason = f"{skip.reason.value}: due {skip.at.isoformat()}, late by {skip.late_by}"
            if skip.action is not None:
                index = self._insert(
                    skip.key,
                    skip.generation,
                    skip.action,
                    at=skip.at,
                    status=DoorActionStatus.SKIPPED,
                    reason=reason,
                    finished_at=now,
                )
                self.skipped.append(
                    _NewSkip(
                        index,
                        "",
                        skip.action.room_id,
                        skip.action.lock_id,
                        reason,
                        skip.reason.value,
                    )
                )
                continue
            row = by_ref[(skip.key, skip.generation)]
            row.status = DoorActionStatus.SKIPPED
            # Record the time the plan wanted, so the next diff sees this generation as
            # settled and does not write one more skipped row for it.
            row.planned_at = skip.at
            row.reason = reason
            row.version += 1
            row.updated_at = now
            row.finished_at = now
            row.claim_owner = None
            row.claim_until = None
            self.skipped.append(
                _NewSkip(None, row.key, row.room_id, row.lock_id, reason, skip.reason.value)
            )
        for ref in changes.keep:
            kept = by_ref.get((ref.key, ref.generation))
            source = planned_by_key.get(ref.key)
            if kept is not None and source is not None and kept.status == DoorActionStatus.PLANNED:
                ids = _reservation_ids(source)
                if list(kept.reservation_ids) != ids:
                    kept.reservation_ids = ids
                    kept.updated_at = now

    async def write(self, session: AsyncSession, result: ReplanResult) -> None:
        keys = await _free_keys(session, self.wanted)
        now = self.now
        await insert_columns(
            session,
            cast(Table, DoorAction.__table__),
            {"key": keys, **self.columns},
            constants={
                "command_id": None,
                "version": 1,
                "created_at": now,
                "updated_at": now,
                "claim_owner": None,
                "claim_until": None,
            },
        )
        result.created.extend(keys[i] for i in self.created)
        result.updated.extend(self.updated)
        result.superseded.extend(self.superseded)
        for skip in self.skipped:
            key = keys[skip.index] if skip.index is not None else skip.key
            result.skipped.append(key)
            await open_alert_if_new(
                session,
                kind="action_skipped",
                dedupe_key=f"action_skipped:{key}",
                message=f"door action {key} was not run: {skip.reason}",
                now=now,
                lock_id=skip.lock_id,
                room_id=skip.room_id,
                details={"key": key, "reason": skip.code},
            )
