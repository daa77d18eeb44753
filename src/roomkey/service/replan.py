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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from roomkey.service.commands import DoorCommand
from roomkey.service.db._sql import serialize_scope
from roomkey.service.db.alerts import open_alert_if_new
from roomkey.service.db.models import (
    Command,
    DoorAction,
    DoorActionKind,
    DoorActionStatus,
    Reservation,
    Room,
    RoomLock,
)
from roomkey.service.db.plans import WindowSpec, replace_door_windows
from roomkey.service.plan_diff import (
    ActionChanges,
    ActionStatus,
    StoredAction,
    diff_actions,
)
from roomkey.service.planner import (
    ActionRole,
    BookingInput,
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


def _duration(data: Mapping[str, Any]) -> int | None:
    value = data.get("duration")
    try:
        minutes = int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None
    return minutes if minutes is not None and 0 < minutes <= 7 * 24 * 60 else None


def _created_at(data: Mapping[str, Any], tz: ZoneInfo) -> dt.datetime | None:
    value = data.get("time")
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return parsed.replace(tzinfo=tz)


def booking_input(row: Reservation, tz: ZoneInfo) -> BookingInput:
    """The planner's view of a mirrored reservation."""
    data = row.data if isinstance(row.data, dict) else {}
    return BookingInput(
        reservation_id=str(row.id),
        room_id=row.room_id,
        date=row.date,
        hour=row.hour,
        duration_minutes=_duration(data),
        status=bool(row.status),
        source=row.source,
        deleted=row.deleted,
        created_at=_created_at(data, tz),
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
    if not locks and not room_ids:
        return [], {}
    rows = list(
        (
            await session.execute(
                select(DoorAction).where(
                    or_(DoorAction.lock_id.in_(sorted(locks)), DoorAction.room_id.in_(room_ids)),
                    or_(
                        DoorAction.status == DoorActionStatus.PLANNED,
                        DoorAction.planned_at >= now - HISTORY_LOOKBACK,
                    ),
                )
            )
        ).scalars()
    )
    command_ids = [r.command_id for r in rows if r.command_id]
    commands: dict[str, Command] = {}
    if command_ids:
        for command in (
            await session.execute(select(Command).where(Command.id.in_(command_ids)))
        ).scalars():
            commands[command.id] = command
    stored: list[StoredAction] = []
    by_ref: dict[tuple[str, int], DoorAction] = {}
    for row in rows:
        key, generation = parse_stored_key(row.key)
        policy = policies.get(row.room_id, DoorPolicy())
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


async def replan_rooms(
    session: AsyncSession, room_ids: Iterable[int], *, now: dt.datetime
) -> ReplanResult:
    """Re-plan ``room_ids`` (and rooms sharing their locks) and store the result."""
    scope = await _scope(session, room_ids)
    if not scope.rooms:
        return ReplanResult()
    for lock in sorted(scope.locks):
        await serialize_scope(session, f"lock-plan:{lock}")
    policies = {room_id: _policy(room) for room_id, room in scope.rooms.items()}
    planned_rooms = sorted(scope.rooms)
    bookings: dict[int, list[BookingInput]] = {room_id: [] for room_id in planned_rooms}
    tzs = {room_id: resolve_timezone(room.timezone) for room_id, room in scope.rooms.items()}
    rows = (
        await session.execute(
            select(Reservation).where(
                Reservation.room_id.in_(planned_rooms),
                Reservation.deleted.is_(False),
                Reservation.end_at >= now - BOOKING_LOOKBACK,
            )
        )
    ).scalars()
    for row in rows:
        bookings[row.room_id].append(booking_input(row, tzs[row.room_id]))
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
            )
        )
    lock_plans: dict[str, LockPlan] = merge_lock_actions(plans)
    stored, by_ref = await _stored_actions(
        session, scope.locks, set(planned_rooms), policies, now=now
    )
    result = ReplanResult(rooms=frozenset(planned_rooms))
    locks = sorted(scope.locks | {s.lock_id for s in stored})
    for lock in locks:
        lock_rooms = [r for r in planned_rooms if lock in scope.links.get(r, [])]
        lock_policies = [policies[r] for r in lock_rooms] or [DoorPolicy()]
        strict = any(p.lock_action is LockAction.NIGHT_LOCK for p in lock_policies)
        planned = list(lock_plans[lock].actions) if lock in lock_plans else []
        changes = diff_actions(
            [s for s in stored if s.lock_id == lock],
            planned,
            now=now,
            max_lateness=min(p.max_lateness for p in lock_policies),
            lock_command=DoorCommand.NIGHT_LOCK if strict else DoorCommand.DAY_LOCK,
        )
        await _write(session, changes, planned, by_ref, now=now, result=result)
    for plan in plans:
        await replace_door_windows(
            session,
            plan.room_id,
            [WindowSpec(int(w.reservation_id), plan.room_id, w.start, w.end) for w in plan.windows],
            now=now,
        )
    await session.flush()
    if result.changed:
        log.info("re-planned: %s", result.summary())
    return result


async def _free_key(session: AsyncSession, key: str, generation: int) -> tuple[str, int]:
    """A stored key for a new incarnation that no row uses yet (old history is not loaded)."""
    while await session.get(DoorAction, stored_key(key, generation)) is not None:
        generation += 1
    return stored_key(key, generation), generation


def _reservation_ids(action: PlannedAction) -> list[int]:
    return [int(r) for r in action.reservation_ids if r.isdigit()]


async def _write(
    session: AsyncSession,
    changes: ActionChanges,
    planned: list[PlannedAction],
    by_ref: dict[tuple[str, int], DoorAction],
    *,
    now: dt.datetime,
    result: ReplanResult,
) -> None:
    planned_by_key = {p.key: p for p in planned}
    for create in changes.create:
        action = create.action
        key, _gen = await _free_key(session, action.key, create.generation)
        session.add(
            DoorAction(
                key=key,
                room_id=action.room_id,
                lock_id=action.lock_id,
                kind=ROLE_TO_KIND[action.role],
                planned_at=action.at,
                status=DoorActionStatus.PLANNED,
                reservation_ids=_reservation_ids(action),
                reason=None if create.reason.value == "new" else create.reason.value,
                version=1,
                created_at=now,
                updated_at=now,
            )
        )
        await session.flush()
        result.created.append(key)
    for upd in changes.update:
        row = by_ref[(upd.key, upd.generation)]
        row.planned_at = upd.at
        row.reason = upd.reason.value
        source = planned_by_key.get(upd.key)
        if source is not None:
            row.reservation_ids = _reservation_ids(source)
        row.version += 1
        row.updated_at = now
        result.updated.append(row.key)
    for ref in changes.supersede:
        row = by_ref[(ref.key, ref.generation)]
        row.status = DoorActionStatus.SUPERSEDED
        row.reason = ref.reason.value
        row.version += 1
        row.updated_at = now
        row.finished_at = now
        row.claim_owner = None
        row.claim_until = None
        result.superseded.append(row.key)
    for skip in changes.skip:
        reason = f"{skip.reason.value}: due {skip.at.isoformat()}, late by {skip.late_by}"
        if skip.action is not None:
            key, _gen = await _free_key(session, skip.key, skip.generation)
            session.add(
                DoorAction(
                    key=key,
                    room_id=skip.action.room_id,
                    lock_id=skip.action.lock_id,
                    kind=ROLE_TO_KIND[skip.action.role],
                    planned_at=skip.at,
                    status=DoorActionStatus.SKIPPED,
                    reservation_ids=_reservation_ids(skip.action),
                    reason=reason,
                    version=1,
                    created_at=now,
                    updated_at=now,
                    finished_at=now,
                )
            )
            await session.flush()
            room_id, lock_id = skip.action.room_id, skip.action.lock_id
        else:
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
            key, room_id, lock_id = row.key, row.room_id, row.lock_id
        result.skipped.append(key)
        await open_alert_if_new(
            session,
            kind="action_skipped",
            dedupe_key=f"action_skipped:{key}",
            message=f"door action {key} was not run: {reason}",
            now=now,
            lock_id=lock_id,
            room_id=room_id,
            details={"key": key, "reason": skip.reason.value},
        )
    for ref in changes.keep:
        kept = by_ref.get((ref.key, ref.generation))
        source = planned_by_key.get(ref.key)
        if kept is not None and source is not None and kept.status == DoorActionStatus.PLANNED:
            ids = _reservation_ids(source)
            if list(kept.reservation_ids) != ids:
                kept.reservation_ids = ids
                kept.updated_at = now
