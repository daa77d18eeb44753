"""The stored door plan: per-reservation door windows and keyed door actions.

The planner (pure) computes a room's complete plan; the pipeline stores it here with
:func:`replace_door_windows` and :func:`upsert_door_actions` in the same transaction as the
reservation change. Actions are keyed by the planner's deterministic key, so re-planning updates
in place and never duplicates. The executor takes due actions with :func:`claim_due_door_actions`.

All functions run inside the caller's transaction and never commit.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, bindparam, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ._sql import serialize_scope, serialize_scopes
from .bulk import forget_cached, in_chunks, insert_columns, one_of
from .claims import claim_rows
from .models import DoorAction, DoorActionKind, DoorActionStatus, DoorWindow

__all__ = [
    "ActionSpec",
    "PlanDiff",
    "WindowSpec",
    "claim_due_door_actions",
    "finish_door_action",
    "get_door_action",
    "list_door_actions",
    "list_door_windows",
    "replace_door_windows",
    "replace_room_door_windows",
    "upsert_door_actions",
]


class WindowSpec(NamedTuple):
    """The door window of one reservation."""

    reservation_id: int
    room_id: int
    start_at: datetime
    end_at: datetime


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """One planned action as the planner produced it."""

    key: str
    room_id: int
    lock_id: str
    kind: DoorActionKind
    planned_at: datetime
    reservation_ids: tuple[int, ...]


@dataclass(slots=True)
class PlanDiff:
    """Keys of the actions :func:`upsert_door_actions` inserted, changed, superseded or kept."""

    inserted: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.inserted or self.updated or self.superseded)


async def replace_door_windows(
    session: AsyncSession, room_id: int, windows: Iterable[WindowSpec], *, now: datetime
) -> None:
    """Make ``windows`` the room's complete set of door windows (upsert by reservation id)."""
    await replace_room_door_windows(session, {room_id: windows}, now=now)


async def replace_room_door_windows(
    session: AsyncSession, windows_by_room: Mapping[int, Iterable[WindowSpec]], *, now: datetime
) -> None:
    """For each room, make its windows the room's complete set of door windows (upsert by
    reservation id), in bulk: a few ``IN`` reads, then one ``DELETE``, one ``UPDATE``
    (executemany) and one multi-row ``INSERT`` per chunk (``COPY`` on PostgreSQL)."""
    wanted: dict[int, WindowSpec] = {}
    for room_id, windows in windows_by_room.items():
        for w in windows:
            if w.room_id != room_id:
                raise ValueError(
                    f"window of reservation {w.reservation_id} is not in room {room_id}"
                )
            wanted[w.reservation_id] = w
    rooms = sorted(windows_by_room)
    if not rooms:
        return
    await serialize_scopes(session, (f"plan:{room_id}" for room_id in rooms))
    table = cast(Table, DoorWindow.__table__)
    columns = (table.c.reservation_id, table.c.room_id, table.c.start_at, table.c.end_at)
    existing: dict[int, tuple[int, datetime, datetime]] = {}
    for part in in_chunks(session, rooms):
        for rid, room_id, start_at, end_at in await session.execute(
            select(*columns).where(one_of(session, table.c.room_id, part))
        ):
            existing[rid] = (room_id, start_at, end_at)
    elsewhere = sorted(set(wanted) - set(existing))
    for moved_part in in_chunks(session, elsewhere):
        for rid, room_id, start_at, end_at in await session.execute(
            select(*columns).where(one_of(session, table.c.reservation_id, moved_part))
        ):
            existing[rid] = (room_id, start_at, end_at)
    in_rooms = set(rooms)
    gone = sorted(rid for rid, row in existing.items() if rid not in wanted and row[0] in in_rooms)
    inserts: dict[str, list[Any]] = {
        "reservation_id": [],
        "room_id": [],
        "start_at": [],
        "end_at": [],
    }
    new_ids, new_rooms = inserts["reservation_id"], inserts["room_id"]
    new_starts, new_ends = inserts["start_at"], inserts["end_at"]
    updates: list[dict[str, Any]] = []
    for rid, w in wanted.items():
        current = existing.get(rid)
        if current is None:
            new_ids.append(rid)
            new_rooms.append(w.room_id)
            new_starts.append(w.start_at)
            new_ends.append(w.end_at)
        elif current != (w.room_id, w.start_at, w.end_at):
            updates.append(
                {
                    "rid": rid,
                    "room_id": w.room_id,
                    "start_at": w.start_at,
                    "end_at": w.end_at,
                    "updated_at": now,
                }
            )
    for gone_part in in_chunks(session, gone):
        await session.execute(
            delete(table).where(one_of(session, table.c.reservation_id, gone_part))
        )
    if updates:
        await session.execute(
            update(table).where(table.c.reservation_id == bindparam("rid")), updates
        )
    await insert_columns(session, table, inserts, constants={"updated_at": now})
    forget_cached(session, DoorWindow, [*gone, *(u["rid"] for u in updates)])


async def upsert_door_actions(
    session: AsyncSession,
    room_id: int,
    actions: Iterable[ActionSpec],
    *,
    now: datetime,
    superseded_reason: str = "replanned",
) -> PlanDiff:
    """Store the room's complete current plan.

    * new keys are inserted as ``planned``;
    * ``planned`` (or previously ``superseded``) actions whose time, kind, lock or reservations
      changed are updated in place (``version`` + 1, back to ``planned``);
    * actions already ``done``/``skipped``/``failed`` are left alone (they happened);
    * the room's ``planned`` actions missing from ``actions`` become ``superseded``.
    """
    await serialize_scope(session, f"plan:{room_id}")
    wanted = {a.key: a for a in actions}
    diff = PlanDiff()
    rows = (
        await session.execute(
            select(DoorAction).where(
                or_(
                    (DoorAction.room_id == room_id)
                    & (DoorAction.status == DoorActionStatus.PLANNED),
                    DoorAction.key.in_(list(wanted)),
                )
            )
        )
    ).scalars()
    existing = {row.key: row for row in rows}
    for key, row in existing.items():
        if key not in wanted and row.room_id == room_id and row.status == DoorActionStatus.PLANNED:
            row.status = DoorActionStatus.SUPERSEDED
            row.reason = superseded_reason
            row.updated_at = now
            row.version += 1
            row.claim_owner = row.claim_until = None
            diff.superseded.append(key)
    for key, spec in wanted.items():
        found = existing.get(key)
        reservation_ids = list(spec.reservation_ids)
        if found is None:
            session.add(
                DoorAction(
                    key=key,
                    room_id=spec.room_id,
                    lock_id=spec.lock_id,
                    kind=spec.kind,
                    planned_at=spec.planned_at,
                    status=DoorActionStatus.PLANNED,
                    reservation_ids=reservation_ids,
                    version=1,
                    created_at=now,
                    updated_at=now,
                )
            )
            diff.inserted.append(key)
            continue
        if found.status not in (DoorActionStatus.PLANNED, DoorActionStatus.SUPERSEDED):
            diff.unchanged.append(key)
            continue
        same = (
            found.status == DoorActionStatus.PLANNED
            and found.room_id == spec.room_id
            and found.lock_id == spec.lock_id
            and found.kind == spec.kind
            and found.planned_at == spec.planned_at
            and list(found.reservation_ids) == reservation_ids
        )
        if same:
            diff.unchanged.append(key)
            continue
        found.room_id = spec.room_id
        found.lock_id = spec.lock_id
        found.kind = spec.kind
        found.planned_at = spec.planned_at
        found.reservation_ids = reservation_ids
        found.status = DoorActionStatus.PLANNED
        found.reason = None
        found.updated_at = now
        found.version += 1
        diff.updated.append(key)
    await session.flush()
    return diff


async def claim_due_door_actions(
    session: AsyncSession,
    *,
    owner: str,
    now: datetime,
    limit: int = 20,
    lease: timedelta = timedelta(seconds=30),
) -> list[DoorAction]:
    """Claim ``planned`` actions with ``planned_at <= now`` (overdue ones too: the executor
    compares their lateness with the room's ``max_lateness`` and skips them if too late)."""
    return await claim_rows(
        session,
        DoorAction,
        owner=owner,
        now=now,
        lease=lease,
        limit=limit,
        where=[DoorAction.status == DoorActionStatus.PLANNED, DoorAction.planned_at <= now],
        order_by=[DoorAction.planned_at, DoorAction.key],
    )


async def finish_door_action(
    session: AsyncSession,
    key: str,
    *,
    status: DoorActionStatus,
    now: datetime,
    owner: str | None = None,
    expected_version: int | None = None,
    command_id: str | None = None,
    reason: str | None = None,
) -> bool:
    """Move a ``planned`` action to ``status`` (done/skipped/failed/superseded).

    False if it is no longer planned (e.g. re-planning superseded it meanwhile), if
    ``expected_version`` no longer matches, or if ``owner`` no longer holds its claim.
    """
    if status == DoorActionStatus.PLANNED:
        raise ValueError("finish_door_action needs a final status")
    stmt = update(DoorAction).where(
        DoorAction.key == key, DoorAction.status == DoorActionStatus.PLANNED
    )
    if owner is not None:
        stmt = stmt.where(DoorAction.claim_owner == owner)
    if expected_version is not None:
        stmt = stmt.where(DoorAction.version == expected_version)
    values: dict[str, object] = {
        "status": status,
        "finished_at": now,
        "updated_at": now,
        "reason": reason,
        "claim_owner": None,
        "claim_until": None,
    }
    if command_id is not None:
        values["command_id"] = command_id
    result = await session.execute(stmt.values(values).execution_options(synchronize_session=False))
    return bool(getattr(result, "rowcount", 0))


async def get_door_action(session: AsyncSession, key: str) -> DoorAction | None:
    return await session.get(DoorAction, key, populate_existing=True)


async def list_door_actions(
    session: AsyncSession,
    *,
    room_id: int | None = None,
    lock_id: str | None = None,
    statuses: Collection[DoorActionStatus] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int | None = None,
) -> list[DoorAction]:
    """Actions by planned time (ascending), filtered; ``[start, end)`` bounds planned_at."""
    stmt = select(DoorAction).order_by(DoorAction.planned_at, DoorAction.key)
    if room_id is not None:
        stmt = stmt.where(DoorAction.room_id == room_id)
    if lock_id is not None:
        stmt = stmt.where(DoorAction.lock_id == lock_id)
    if statuses:
        stmt = stmt.where(DoorAction.status.in_(list(statuses)))
    if start is not None:
        stmt = stmt.where(DoorAction.planned_at >= start)
    if end is not None:
        stmt = stmt.where(DoorAction.planned_at < end)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list((await session.execute(stmt)).scalars())


async def list_door_windows(
    session: AsyncSession,
    *,
    room_id: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[DoorWindow]:
    """Windows overlapping ``[start, end)``, by start time."""
    stmt = select(DoorWindow).order_by(DoorWindow.start_at, DoorWindow.reservation_id)
    if room_id is not None:
        stmt = stmt.where(DoorWindow.room_id == room_id)
    if start is not None:
        stmt = stmt.where(DoorWindow.end_at > start)
    if end is not None:
        stmt = stmt.where(DoorWindow.start_at < end)
    return list((await session.execute(stmt)).scalars())
