"""Re-planning against the database: shared locks, generations, unknown rooms, windows."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from test_runtime_harness import DAY, START, WARSAW, Stack, make_stack

from roomkey.lockme.models import Reservation as LockmeReservation
from roomkey.service.commands import DoorCommand
from roomkey.service.crypto import SecretBox
from roomkey.service.db.models import (
    DoorAction,
    DoorActionKind,
    DoorActionStatus,
    DoorWindow,
    Room,
)
from roomkey.service.db.plans import finish_door_action
from roomkey.service.mirror import MirrorChange, apply_snapshot, mark_deleted
from roomkey.service.policy import DoorPolicy, LockAction
from roomkey.service.replan import parse_stored_key, replan_rooms, stored_command, stored_key

NOW = dt.datetime.fromtimestamp(START, dt.UTC)


@pytest.fixture
async def stack(engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path) -> AsyncIterator[Stack]:
    s = await make_stack(engine, secret_box, tmp_path, shared_room=True)
    try:
        yield s
    finally:
        await s.close()


def _snapshot(hour: str, *, day: str = DAY, status: int = 1, **extra: object) -> LockmeReservation:
    return LockmeReservation.model_validate(
        {"date": day, "hour": hour, "status": status, "source": "panel", **extra}
    )


def _at(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2027, 2, 1, hour, minute, tzinfo=WARSAW).astimezone(dt.UTC)


async def _add(stack: Stack, rid: int, room: int, hour: str, **extra: object) -> None:
    async with stack.service.session_factory() as session, session.begin():
        result = await apply_snapshot(session, rid, room, _snapshot(hour, **extra), now=NOW)
        await replan_rooms(session, result.rooms, now=NOW)


def test_stored_keys_round_trip() -> None:
    assert stored_key("1:door:lock:5", 0) == "1:door:lock:5"
    assert stored_key("1:door:lock:5", 3) == "1:door:lock:5~3"
    assert parse_stored_key("1:door:lock:5~3") == ("1:door:lock:5", 3)
    assert parse_stored_key("1:door:lock:5") == ("1:door:lock:5", 0)
    assert parse_stored_key("1:door~x:lock:5") == ("1:door~x:lock:5", 0)


def test_stored_command_follows_the_policy() -> None:
    strict = DoorPolicy()
    latch = DoorPolicy(lock_action=LockAction.DAY_LOCK)
    assert stored_command(DoorActionKind.LOCK, strict) is DoorCommand.NIGHT_LOCK
    assert stored_command(DoorActionKind.LOCK, latch) is DoorCommand.DAY_LOCK
    assert stored_command(DoorActionKind.UNLOCK, strict) is DoorCommand.DAY_LOCK
    assert stored_command(DoorActionKind.OPEN, strict) is DoorCommand.OPEN


async def test_rooms_sharing_a_lock_are_planned_together(stack: Stack) -> None:
    assert stack.shared_room is not None
    # back-to-back bookings in two rooms behind the same door: one merged interval
    await _add(stack, 1, stack.room_a, "12:00:00")
    await _add(stack, 2, stack.shared_room, "13:00:00")
    planned = await stack.actions(status=DoorActionStatus.PLANNED)
    door_a = [a for a in planned if a.lock_id == "door-a"]
    assert [(a.kind, a.planned_at) for a in door_a] == [
        (DoorActionKind.UNLOCK, _at(11, 50)),
        (DoorActionKind.LOCK, _at(14, 15)),  # no lock between the two bookings
    ]
    assert door_a[1].reservation_ids == [1, 2]
    async with stack.service.session_factory() as session:
        windows = list((await session.execute(select(DoorWindow))).scalars())
    assert {(w.reservation_id, w.room_id) for w in windows} == {
        (1, stack.room_a),
        (2, stack.shared_room),
    }


async def test_replanning_twice_changes_nothing(stack: Stack) -> None:
    await _add(stack, 1, stack.room_a, "12:00:00")
    async with stack.service.session_factory() as session, session.begin():
        result = await replan_rooms(session, [stack.room_a, stack.room_b], now=NOW)
    assert not result.changed
    assert result.rooms >= {stack.room_a, stack.room_b}


async def test_unknown_room_is_mirrored_but_plans_nothing(stack: Stack) -> None:
    async with stack.service.session_factory() as session, session.begin():
        result = await apply_snapshot(session, 9, 999, _snapshot("12:00:00"), now=NOW)
        assert result.change is MirrorChange.ADDED
        replanned = await replan_rooms(session, result.rooms, now=NOW)
    assert not replanned.changed
    assert await stack.actions() == []
    row = await stack.reservation(9)
    assert row is not None
    assert row.start_at == _at(12)


async def test_duration_and_room_timezone_are_honoured(stack: Stack) -> None:
    async with stack.service.session_factory() as session, session.begin():
        room = await session.get(Room, stack.room_b)
        assert room is not None
        room.timezone = "Europe/London"
    async with stack.service.session_factory() as session, session.begin():
        result = await apply_snapshot(
            session, 3, stack.room_b, _snapshot("12:00:00", duration=90), now=NOW
        )
        await replan_rooms(session, result.rooms, now=NOW)
    london_noon = dt.datetime(2027, 2, 1, 12, tzinfo=dt.UTC)  # GMT in February
    actions = await stack.actions(room_id=stack.room_b)
    assert {a.planned_at for a in actions} == {
        london_noon - dt.timedelta(minutes=10),
        london_noon + dt.timedelta(minutes=90 + 15),
    }


async def test_a_key_that_already_ran_gets_a_new_generation(stack: Stack) -> None:
    await _add(stack, 1, stack.room_a, "09:00:00")
    unlock = next(a for a in await stack.actions() if a.kind is DoorActionKind.UNLOCK)
    lock = next(a for a in await stack.actions() if a.kind is DoorActionKind.LOCK)
    later = NOW + dt.timedelta(hours=3)  # 11:00: both actions ran
    async with stack.service.session_factory() as session, session.begin():
        for action in (unlock, lock):
            assert await finish_door_action(
                session, action.key, status=DoorActionStatus.DONE, now=action.planned_at
            )
    # the booking is moved to the afternoon after it already happened once
    async with stack.service.session_factory() as session, session.begin():
        result = await apply_snapshot(session, 1, stack.room_a, _snapshot("15:00:00"), now=later)
        replanned = await replan_rooms(session, result.rooms, now=later)
    assert sorted(replanned.created) == sorted([f"{unlock.key}~1", f"{lock.key}~1"])
    rows = await stack.actions(room_id=stack.room_a)
    assert [(r.key, r.status) for r in rows] == [
        (unlock.key, DoorActionStatus.DONE),
        (lock.key, DoorActionStatus.DONE),
        (f"{unlock.key}~1", DoorActionStatus.PLANNED),
        (f"{lock.key}~1", DoorActionStatus.PLANNED),
    ]


async def test_missed_action_is_skipped_and_reported(stack: Stack) -> None:
    from roomkey.service.db.models import Alert

    # a booking for this morning arrives after roomkey was down: its unlock is 2 h late
    later = NOW + dt.timedelta(hours=2)
    async with stack.service.session_factory() as session, session.begin():
        result = await apply_snapshot(session, 1, stack.room_a, _snapshot("09:30:00"), now=later)
        replanned = await replan_rooms(session, result.rooms, now=later)
    assert replanned.skipped
    async with stack.service.session_factory() as session:
        skipped = list(
            (
                await session.execute(
                    select(DoorAction).where(DoorAction.status == DoorActionStatus.SKIPPED)
                )
            ).scalars()
        )
        alerts = list((await session.execute(select(Alert))).scalars())
    # unlock due 09:20, 40 min late (> 15 min max lateness); the 10:45 lock still runs
    (unlock,) = skipped
    assert unlock.kind is DoorActionKind.UNLOCK
    assert unlock.planned_at == _at(9, 20)
    assert unlock.reason is not None
    assert unlock.reason.startswith("late:")
    (alert,) = alerts
    assert alert.kind == "action_skipped"
    assert alert.room_id == stack.room_a
    lock = await stack.actions(status=DoorActionStatus.PLANNED)
    assert [(a.kind, a.planned_at) for a in lock] == [(DoorActionKind.LOCK, _at(10, 45))]


async def test_delete_of_an_unseen_reservation_blocks_a_late_add(stack: Stack) -> None:
    async with stack.service.session_factory() as session, session.begin():
        gone = await mark_deleted(
            session, 5, now=NOW, room_id=stack.room_a, snapshot=_snapshot("12:00:00")
        )
        assert gone.change is MirrorChange.IGNORED
        late = await apply_snapshot(session, 5, stack.room_a, _snapshot("12:00:00"), now=NOW)
        assert late.change is MirrorChange.IGNORED
        healed = await apply_snapshot(
            session, 5, stack.room_a, _snapshot("12:00:00"), now=NOW, authoritative=True
        )
        assert healed.change is MirrorChange.CHANGED
