"""The bulk path of the mirror and the re-planner: many reservations and rooms per call,
the same results as one at a time, and a number of SQL statements that does not grow with
the number of reservations (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine
from test_runtime_harness import DAY, START, WARSAW, Stack, make_stack

from roomkey.lockme.models import Reservation as LockmeReservation
from roomkey.service.crypto import SecretBox
from roomkey.service.db.models import DoorAction, DoorWindow, Reservation
from roomkey.service.db.plans import WindowSpec, replace_room_door_windows
from roomkey.service.mirror import MirrorChange, SnapshotInput, apply_snapshot, apply_snapshots
from roomkey.service.planner import merge_lock_actions, plan_room
from roomkey.service.policy import DoorPolicy
from roomkey.service.replan import booking_input, replan_rooms

NOW = dt.datetime.fromtimestamp(START, dt.UTC)


@pytest.fixture
async def stack(engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path) -> AsyncIterator[Stack]:
    s = await make_stack(engine, secret_box, tmp_path, shared_room=True)
    try:
        yield s
    finally:
        await s.close()


def _snap(hour: str, *, day: str = DAY, **extra: object) -> LockmeReservation:
    return LockmeReservation.model_validate(
        {"date": day, "hour": hour, "status": 1, "source": "panel", "duration": 60, **extra}
    )


@contextmanager
def _counting(engine: AsyncEngine) -> Iterator[list[int]]:
    count = [0]

    def on_execute(*_args: Any) -> None:
        count[0] += 1

    event.listen(engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        yield count
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_execute)


def _day(n: int) -> str:
    return (dt.date.fromisoformat(DAY) + dt.timedelta(days=n)).isoformat()


async def test_apply_snapshots_reports_each_item_in_order(stack: Stack) -> None:
    a, b = stack.room_a, stack.room_b
    async with stack.service.session_factory() as session, session.begin():
        await apply_snapshot(session, 1, a, _snap("10:00:00"), now=NOW, message_id="5")
        await apply_snapshot(session, 2, a, _snap("12:00:00"), now=NOW)
        await apply_snapshot(session, 3, a, _snap("14:00:00"), now=NOW)
    later = NOW + dt.timedelta(minutes=1)
    async with stack.service.session_factory() as session, session.begin():
        from roomkey.service.mirror import mark_deleted

        await mark_deleted(session, 3, now=NOW)
        cached = await session.get(Reservation, 2)  # an ORM copy cached in this session
        assert cached is not None
        assert cached.room_id == a
        results = await apply_snapshots(
            session,
            [
                SnapshotInput(1, a, _snap("11:00:00"), message_id="4"),  # older message
                SnapshotInput(2, b, _snap("12:00:00")),  # moved to room b
                SnapshotInput(3, a, _snap("14:00:00")),  # deleted: a message never revives
                SnapshotInput(4, b, _snap("16:00:00")),  # new
                SnapshotInput(4, b, _snap("17:00:00")),  # same id again: applies after it
                SnapshotInput(5, a, _snap("18:00:00", name="x")),
            ],
            now=later,
        )
        assert [(r.reservation_id, r.change, r.rooms) for r in results] == [
            (1, MirrorChange.FRESHER, frozenset()),
            (2, MirrorChange.CHANGED, frozenset({a, b})),
            (3, MirrorChange.IGNORED, frozenset()),
            (4, MirrorChange.ADDED, frozenset({b})),
            (4, MirrorChange.CHANGED, frozenset({b})),
            (5, MirrorChange.ADDED, frozenset({a})),
        ]
        # the session's cached copy reads the new state, not the one it had loaded
        again = await session.get(Reservation, 2)
        assert again is not None
        assert again.room_id == b
        assert again.updated_at == later
        four = await session.get(Reservation, 4)
        assert four is not None
        assert four.hour == dt.time(17, 0)
        assert four.created_at == later
    async with stack.service.session_factory() as session, session.begin():
        same = await apply_snapshots(
            session,
            [SnapshotInput(5, a, _snap("18:00:00", name="y"), message_id="9")],
            now=later + dt.timedelta(minutes=1),
        )
        assert same[0].change is MirrorChange.UNCHANGED
        row = await session.get(Reservation, 5)
        assert row is not None
        assert row.data["name"] == "y"
        assert row.last_message_id == "9"
        assert row.updated_at == later  # unchanged for the plan: not touched


async def test_bulk_statements_do_not_grow_with_reservations(
    stack: Stack, engine: AsyncEngine
) -> None:
    rooms = [stack.room_a, stack.room_b]

    async def run(first_id: int, per_room: int, day: int) -> int:
        items = [
            SnapshotInput(first_id + 100 * i + n, room, _snap(f"{10 + n:02d}:00:00", day=_day(day)))
            for i, room in enumerate(rooms)
            for n in range(per_room)
        ]
        with _counting(engine) as count:
            async with stack.service.session_factory() as session, session.begin():
                results = await apply_snapshots(session, items, now=NOW)
                touched = {room for r in results for room in r.rooms}
                await replan_rooms(session, touched, now=NOW)
        return count[0]

    small = await run(1000, 1, day=1)
    large = await run(5000, 10, day=2)
    assert large == small
    async with stack.service.session_factory() as session:
        windows = (await session.execute(select(DoorWindow.reservation_id))).scalars().all()
    assert len(windows) == 2 + 20  # every reservation was planned


async def test_bulk_plan_equals_the_planner_and_is_idempotent(stack: Stack) -> None:
    rooms = [stack.room_a, stack.room_b]
    assert stack.shared_room is not None
    items = [
        SnapshotInput(100 * i + n, room, _snap(f"{10 + 2 * n:02d}:00:00", day=_day(n % 3)))
        for i, room in enumerate([*rooms, stack.shared_room])
        for n in range(6)
    ]
    async with stack.service.session_factory() as session, session.begin():
        results = await apply_snapshots(session, items, now=NOW)
        first = await replan_rooms(session, {r for x in results for r in x.rooms}, now=NOW)
    assert first.created
    assert not (first.updated)
    assert not (first.superseded)
    assert not (first.skipped)
    async with stack.service.session_factory() as session, session.begin():
        again = await replan_rooms(session, [stack.room_a], now=NOW)
        assert not again.changed
        stored = {
            (row.key, row.planned_at, tuple(row.reservation_ids))
            for row in (await session.execute(select(DoorAction))).scalars()
        }
        windows = {
            (w.reservation_id, w.room_id, w.start_at, w.end_at)
            for w in (await session.execute(select(DoorWindow))).scalars()
        }
        reservations = list((await session.execute(select(Reservation))).scalars())
    config = stack.service.config
    plans = []
    for room in config.rooms:
        bookings = [booking_input(r, WARSAW) for r in reservations if r.room_id == room.id]
        policy = DoorPolicy.model_validate(config.policy_for(room).model_dump(mode="json"))
        plans.append(plan_room(room.id, bookings, policy, sorted(room.locks), now=NOW, tz=WARSAW))
    expected = {
        (a.key, a.at, tuple(int(r) for r in a.reservation_ids))
        for lock_plan in merge_lock_actions(plans).values()
        for a in lock_plan.actions
    }
    assert stored == expected
    assert windows == {
        (int(w.reservation_id), plan.room_id, w.start, w.end)
        for plan in plans
        for w in plan.windows
    }
    assert set(first.created) == {key for key, _at, _ids in expected}


async def test_replace_room_door_windows_moves_deletes_and_refreshes(stack: Stack) -> None:
    a, b = stack.room_a, stack.room_b
    t = NOW + dt.timedelta(hours=2)
    async with stack.service.session_factory() as session, session.begin():
        for rid, room in ((1, a), (2, a), (3, b)):
            await apply_snapshot(session, rid, room, _snap("10:00:00"), now=NOW)
        await replace_room_door_windows(
            session,
            {a: [WindowSpec(1, a, t, t), WindowSpec(2, a, t, t)], b: [WindowSpec(3, b, t, t)]},
            now=NOW,
        )
    later = t + dt.timedelta(hours=1)
    async with stack.service.session_factory() as session, session.begin():
        cached = await session.get(DoorWindow, 1)
        assert cached is not None
        assert cached.room_id == a
        await replace_room_door_windows(
            session,
            {a: [WindowSpec(2, a, t, later)], b: [WindowSpec(1, b, later, later)]},
            now=NOW,
        )
        moved = await session.get(DoorWindow, 1)
        assert moved is not None
        assert (moved.room_id, moved.start_at) == (b, later)
        rows = {
            w.reservation_id: (w.room_id, w.start_at, w.end_at)
            for w in (await session.execute(select(DoorWindow))).scalars()
        }
    # 3 was room b's and is not wanted any more; 1 moved from a to b; 2 changed in place
    assert rows == {1: (b, later, later), 2: (a, t, later)}
    async with stack.service.session_factory() as session, session.begin():
        with pytest.raises(ValueError, match="not in room"):
            await replace_room_door_windows(session, {a: [WindowSpec(2, b, t, t)]}, now=NOW)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-01 10:00:00", dt.datetime(2026, 1, 1, 10, 0, tzinfo=WARSAW)),
        ("2026-1-1 10:00:00", dt.datetime(2026, 1, 1, 10, 0, tzinfo=WARSAW)),
        (" 2026-01-01 10:00:05 ", dt.datetime(2026, 1, 1, 10, 0, 5, tzinfo=WARSAW)),
        ("2026-01-01 10:00+01", None),
        ("2026-01-01T10:00:00", None),
        ("2026-13-01 10:00:00", None),
        ("yesterday", None),
    ],
)
def test_booking_created_at_parsing(value: str, expected: dt.datetime | None) -> None:
    row = Reservation(
        id=1,
        room_id=1,
        date=dt.date(2026, 1, 2),
        hour=dt.time(10),
        status=0,
        source="web",
        deleted=False,
        data={"time": value},
    )
    assert booking_input(row, WARSAW).created_at == expected


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=WARSAW),
        dt.datetime(2026, 3, 29, 2, 30, tzinfo=WARSAW),  # nonexistent local time
        dt.datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=WARSAW),  # ambiguous, second
        dt.datetime(2026, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=-2, minutes=-30))),
        None,
    ],
)
def test_bulk_datetimes_are_stored_like_the_orm_stores_them(value: dt.datetime | None) -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    from roomkey.service.db.bulk import _utc, _utc_sqlite
    from roomkey.service.db.types import UTCDateTime

    column = UTCDateTime()
    lite = column._cached_bind_processor(sqlite.dialect())
    pg = column._cached_bind_processor(postgresql.psycopg.dialect())
    assert lite is not None
    assert _utc_sqlite(value) == lite(value)
    expected = (
        pg(value) if pg is not None else column.process_bind_param(value, postgresql.dialect())
    )
    assert _utc(value) == expected
    if value is not None:
        assert _utc(value).tzinfo is dt.UTC  # type: ignore[union-attr]


def test_bulk_refuses_naive_datetimes() -> None:
    from roomkey.service.db.bulk import _utc, _utc_sqlite

    for convert in (_utc, _utc_sqlite):
        with pytest.raises(ValueError, match="naive"):
            convert(dt.datetime(2026, 1, 1))


async def test_bulk_rows_compare_with_orm_written_rows(stack: Stack) -> None:
    """A row written by the bulk path and one written by the ORM hold the same stored
    values: range queries and equality on their datetimes see them alike."""
    a = stack.room_a
    t = dt.datetime(2027, 2, 1, 9, 0, 0, 1, tzinfo=WARSAW)
    async with stack.service.session_factory() as session, session.begin():
        for rid in (1, 2):
            await apply_snapshot(session, rid, a, _snap("10:00:00"), now=NOW)
        session.add(DoorWindow(reservation_id=1, room_id=a, start_at=t, end_at=t, updated_at=NOW))
        await session.flush()
        await replace_room_door_windows(
            session,
            {a: [WindowSpec(1, a, t, t), WindowSpec(2, a, t, t)]},
            now=NOW,
        )
        found = (
            await session.execute(
                select(DoorWindow.reservation_id).where(
                    DoorWindow.start_at == t,
                    DoorWindow.end_at >= t,
                    DoorWindow.end_at < t + dt.timedelta(microseconds=1),
                )
            )
        ).scalars()
        assert sorted(found) == [1, 2]


async def test_overdue_planned_actions_still_feed_the_diff(stack: Stack) -> None:
    """A still-planned action older than the history window is found (by the status index,
    not the lock's history) and superseded when its room is re-planned; another room's is
    left alone."""
    from roomkey.service.db.models import DoorActionKind, DoorActionStatus

    old = NOW - dt.timedelta(days=5)
    config = stack.service.config
    locks = {room.id: sorted(room.locks)[0] for room in config.rooms}
    async with stack.service.session_factory() as session, session.begin():
        for room in (stack.room_a, stack.room_b):
            session.add(
                DoorAction(
                    key=f"{room}:{locks[room]}:lock:77{room}",
                    room_id=room,
                    lock_id=locks[room],
                    kind=DoorActionKind.LOCK,
                    planned_at=old,
                    status=DoorActionStatus.PLANNED,
                    reservation_ids=[],
                    version=1,
                    created_at=old,
                    updated_at=old,
                )
            )
    async with stack.service.session_factory() as session, session.begin():
        result = await replan_rooms(session, [stack.room_a], now=NOW)
    assert f"{stack.room_a}:{locks[stack.room_a]}:lock:77{stack.room_a}" in result.superseded
    async with stack.service.session_factory() as session:
        statuses = {
            row.room_id: row.status
            for row in (await session.execute(select(DoorAction))).scalars()
            if row.key.endswith(f":77{row.room_id}")
        }
    assert statuses[stack.room_a] == DoorActionStatus.SUPERSEDED
    if stack.room_b not in result.rooms:
        assert statuses[stack.room_b] == DoorActionStatus.PLANNED


async def test_large_batches_take_the_bulk_path_and_store_what_the_orm_reads(
    stack: Stack, engine: AsyncEngine
) -> None:
    """A batch above ``COPY_MIN_ROWS`` (PostgreSQL: ``COPY``; an upsert through the staging
    table) stores the same rows a small batch stores; every statement is counted; applying
    a mix of new, changed and unchanged snapshots again lands every change."""
    from roomkey.service.db.bulk import COPY_MIN_ROWS

    rooms = [stack.room_a, stack.room_b]
    per_room = COPY_MIN_ROWS // 2 + 10  # both rooms together: above the COPY threshold

    def items(day_offset: int, *, name: str) -> list[SnapshotInput]:
        return [
            SnapshotInput(
                10_000 * (i + 1) + n,
                room,
                _snap(
                    f"{10 + 2 * (n % 6):02d}:00:00",
                    day=_day(1 + n // 6 + day_offset),
                    name=name,
                    extid=f"x{n}",
                ),
            )
            for i, room in enumerate(rooms)
            for n in range(per_room)
        ]

    first = items(0, name="Ann")
    with _counting(engine) as count:
        async with stack.service.session_factory() as session, session.begin():
            results = await apply_snapshots(session, first, now=NOW)
            replanned = await replan_rooms(session, {r for x in results for r in x.rooms}, now=NOW)
    assert {r.change for r in results} == {MirrorChange.ADDED}
    assert count[0] > 0
    assert len(replanned.created) >= len(first)
    # again: the first half moves a day later (changed), the rest only renames (unchanged
    # for the plan, data refreshed), plus new ones
    later = NOW + dt.timedelta(minutes=5)
    moved = items(1, name="Ann")[: len(first) // 2]
    renamed = items(0, name="Bob")[len(first) // 2 :]
    extra = [
        SnapshotInput(90_000 + n, stack.room_a, _snap("21:00:00", day=_day(40 + n)))
        for n in range(COPY_MIN_ROWS)
    ]
    async with stack.service.session_factory() as session, session.begin():
        again = await apply_snapshots(session, [*moved, *renamed, *extra], now=later)
        await replan_rooms(session, {r for x in again for r in x.rooms}, now=later)
    changes = [r.change for r in again]
    assert changes == (
        [MirrorChange.CHANGED] * len(moved)
        + [MirrorChange.UNCHANGED] * len(renamed)
        + [MirrorChange.ADDED] * len(extra)
    )
    async with stack.service.session_factory() as session:
        stored = {r.id: r for r in (await session.execute(select(Reservation))).scalars()}
        windows = {
            w.reservation_id: w for w in (await session.execute(select(DoorWindow))).scalars()
        }
    assert len(stored) == len(first) + len(extra)
    for item in moved:
        row = stored[item.reservation_id]
        assert row.date.isoformat() == item.snapshot.date.isoformat()
        assert row.updated_at == later
        assert row.created_at == NOW
        assert row.data["name"] == "Ann"
        assert windows[item.reservation_id].start_at < row.start_at  # unlock lead
    for item in renamed:
        row = stored[item.reservation_id]
        assert row.data == item.snapshot.model_dump(mode="json", exclude_none=True)
        assert row.data["name"] == "Bob"
        assert row.extid == item.snapshot.extid
        assert row.updated_at == NOW  # unchanged for the plan: not touched
    for item in extra:
        row = stored[item.reservation_id]
        assert row.start_at == dt.datetime.combine(
            item.snapshot.date, item.snapshot.hour, WARSAW
        ).astimezone(dt.UTC)
        assert row.end_at - row.start_at == dt.timedelta(minutes=60)
        assert not row.deleted
    assert set(windows) == set(stored)


async def test_bulk_insert_applies_repeated_conflict_keys_in_order(stack: Stack) -> None:
    """Rows repeating a conflict target cannot go through one set-based upsert; the bulk
    writer then applies them one after another (the last one wins), even for a large batch."""
    from typing import cast

    from sqlalchemy import Table

    from roomkey.service.db.bulk import COPY_MIN_ROWS, insert_columns

    count = COPY_MIN_ROWS + 5
    ids = [7, *range(100, 100 + count - 2), 7]
    day = dt.date(2027, 3, 1)
    start = dt.datetime(2027, 3, 1, 9, tzinfo=dt.UTC)
    columns: dict[str, list[Any]] = {
        "id": ids,
        "room_id": [stack.room_a] * count,
        "date": [day] * count,
        "hour": [dt.time(10)] * count,
        "start_at": [start] * count,
        "end_at": [start + dt.timedelta(hours=1)] * count,
        "status": [1] * count,
        "source": ["panel"] * count,
        "extid": [None] * count,
        "data": [{"n": n} for n in range(count)],
        "deleted": [False] * count,
        "created_at": [NOW] * count,
        "updated_at": [NOW] * count,
        "last_message_id": [None] * count,
    }
    async with stack.service.session_factory() as session, session.begin():
        await insert_columns(
            session, cast(Table, Reservation.__table__), columns, update_on_conflict=("id",)
        )
    async with stack.service.session_factory() as session:
        seven = await session.get(Reservation, 7)
        total = len((await session.execute(select(Reservation.id))).scalars().all())
    assert seven is not None
    assert seven.data == {"n": count - 1}
    assert total == count - 1
