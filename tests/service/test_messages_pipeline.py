"""The Lockme pipeline end to end, in-process: simulator → receiver → worker → simulator.

Runs on SQLite and PostgreSQL (``db_url`` fixture). The simulator's webhook deliveries reach
our receiver app; the worker fetches and marks read through the real SDK.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from test_runtime_harness import DAY, WARSAW, Stack, make_stack

from roomkey.service.crypto import SecretBox
from roomkey.service.db.models import Alert, DoorActionKind, DoorActionStatus, MessageState
from roomkey.service.db.plans import finish_door_action
from roomkey.service.messages import MessageWorker


@pytest.fixture
async def stack(engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path) -> AsyncIterator[Stack]:
    s = await make_stack(engine, secret_box, tmp_path)
    try:
        yield s
    finally:
        await s.close()


def _at(hour: int, minute: int = 0, day: str = DAY) -> dt.datetime:
    d = dt.date.fromisoformat(day)
    return dt.datetime(d.year, d.month, d.day, hour, minute, tzinfo=WARSAW).astimezone(dt.UTC)


async def test_paid_booking_is_mirrored_planned_and_marked_read(stack: Stack) -> None:
    rid = stack.sim.book(stack.room_a, DAY, "18:00:00", source="panel", status=1)
    await stack.deliver()
    (message,) = stack.sim.messages()
    stored = await stack.message(message.id)
    assert stored is not None
    assert stored.state is MessageState.RECEIVED
    assert not message.read  # nothing is acknowledged before processing

    outcomes = await stack.process()
    assert [o.state for o in outcomes] == [MessageState.ACKED]
    assert outcomes[0].rooms == frozenset({stack.room_a})
    assert stack.sim_message(message.id).read

    reservation = await stack.reservation(rid)
    assert reservation is not None
    assert not reservation.deleted
    assert reservation.room_id == stack.room_a
    assert reservation.start_at == _at(18)

    actions = await stack.actions(room_id=stack.room_a)
    kinds = {(a.kind, a.planned_at) for a in actions}
    assert kinds == {
        (DoorActionKind.UNLOCK, _at(17, 50)),  # start − 10 min lead
        (DoorActionKind.LOCK, _at(19, 15)),  # end (60 min slot) + 15 min lag
    }
    assert all(a.status is DoorActionStatus.PLANNED and a.reservation_ids == [rid] for a in actions)

    row = await stack.message(message.id)
    assert row is not None
    assert row.state is MessageState.ACKED
    assert row.raw is not None
    assert row.raw["action"] == "add"
    assert row.action == "add"
    assert row.reservation_id == rid
    assert row.fetched_at is not None
    assert row.applied_at is not None
    assert row.acked_at is not None


async def test_duplicate_and_redelivered_webhooks_change_nothing(stack: Stack) -> None:
    rid = stack.sim.book(stack.room_a, DAY, "12:00:00", source="panel", status=1)
    await stack.deliver()
    (message,) = stack.sim.messages()
    # Lockme delivers the same id again before we processed it (e.g. a resend)
    await stack.sim.webhooks.deliver(message)
    await stack.sim.webhooks.deliver(message)
    assert [a.status_code for a in message.attempts] == [200, 200, 200]
    outcomes = await stack.process()
    assert len(outcomes) == 1  # one stored row, processed once
    before = [(a.key, a.version, a.planned_at) for a in await stack.actions()]
    assert len(before) == 2
    # a redelivery after it was handled: accepted as a duplicate, nothing processed again
    await stack.sim.webhooks.deliver(message)
    assert await stack.process() == []
    after = [(a.key, a.version, a.planned_at) for a in await stack.actions()]
    assert after == before
    reservation = await stack.reservation(rid)
    assert reservation is not None
    assert reservation.last_message_id == str(message.id)


async def test_mark_read_failure_keeps_the_message_and_roomkey_retries_it(stack: Stack) -> None:
    stack.sim.book(stack.room_a, DAY, "14:00:00", source="panel", status=1)
    await stack.deliver()
    (message,) = stack.sim.messages()
    stack.lockme_api.fail("POST", "/v2.4/message/", count=2)

    (first,) = await stack.process()
    assert first.state is MessageState.FAILED
    row = await stack.message(message.id)
    assert row is not None
    assert row.state is MessageState.FAILED
    assert row.applied_at is not None  # applied and committed before mark-read
    assert row.last_error is not None
    assert "mark_read" in row.last_error
    assert "ServerError" in row.last_error
    assert row.next_attempt_at is not None
    assert not stack.sim_message(message.id).read  # Lockme keeps it unread
    planned = [(a.key, a.version) for a in await stack.actions()]
    assert len(planned) == 2

    assert await stack.process() == []  # not due yet (backoff)
    await stack.clock.advance(10)
    (second,) = await stack.process()
    assert second.state is MessageState.FAILED
    row = await stack.message(message.id)
    assert row is not None
    assert row.attempts == 2
    await stack.clock.advance(20)
    (third,) = await stack.process()
    assert third.state is MessageState.ACKED
    assert stack.sim_message(message.id).read
    assert stack.lockme_api.failed == [f"POST /v2.4/message/{message.id}"] * 2
    # the retries only marked it read: the plan was not written again
    assert [(a.key, a.version) for a in await stack.actions()] == planned


async def test_handler_exception_rolls_back_and_is_retried(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    rid = stack.sim.book(stack.room_a, DAY, "16:00:00", source="panel", status=1)
    await stack.deliver()
    (message,) = stack.sim.messages()
    real = stack.service.replan_rooms
    calls = 0

    async def broken(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("planner exploded")
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(stack.service, "replan_rooms", broken)
    (outcome,) = await stack.process()
    assert outcome.state is MessageState.FAILED
    row = await stack.message(message.id)
    assert row is not None
    assert row.state is MessageState.FAILED
    assert row.raw is not None  # stored raw before applying
    assert row.applied_at is None
    assert row.last_error == "apply: RuntimeError: planner exploded"
    assert await stack.reservation(rid) is None  # the mirror change was rolled back
    assert await stack.actions() == []
    assert not stack.sim_message(message.id).read

    await stack.clock.advance(10)
    (retry,) = await stack.process()
    assert retry.state is MessageState.ACKED
    assert await stack.reservation(rid) is not None
    assert len(await stack.actions()) == 2
    assert stack.sim_message(message.id).read


async def test_move_between_rooms_replans_both(stack: Stack) -> None:
    rid = stack.sim.book(stack.room_a, DAY, "18:00:00", source="panel", status=1)
    await stack.settle()
    assert len(await stack.actions(room_id=stack.room_a, status=DoorActionStatus.PLANNED)) == 2

    stack.sim.move(rid, roomid=stack.room_b, date="2027-02-02", hour="11:00:00")
    outcomes = await stack.settle()
    assert outcomes[-1].rooms == frozenset({stack.room_a, stack.room_b})
    reservation = await stack.reservation(rid)
    assert reservation is not None
    assert reservation.room_id == stack.room_b
    assert reservation.start_at == _at(11, day="2027-02-02")
    old = await stack.actions(room_id=stack.room_a)
    assert {a.status for a in old} == {DoorActionStatus.SUPERSEDED}
    new = await stack.actions(room_id=stack.room_b, status=DoorActionStatus.PLANNED)
    assert {(a.kind, a.planned_at, a.lock_id) for a in new} == {
        (DoorActionKind.UNLOCK, _at(10, 50, "2027-02-02"), "door-b"),
        (DoorActionKind.LOCK, _at(12, 15, "2027-02-02"), "door-b"),
    }


async def test_move_within_a_room_updates_actions_in_place(stack: Stack) -> None:
    rid = stack.sim.book(stack.room_a, DAY, "18:00:00", source="panel", status=1)
    await stack.settle()
    keys = sorted(a.key for a in await stack.actions())
    stack.sim.move(rid, roomid=stack.room_a, date=DAY, hour="20:00:00")
    await stack.settle()
    actions = await stack.actions()
    assert sorted(a.key for a in actions) == keys  # same keys: updated, not duplicated
    assert {a.planned_at for a in actions} == {_at(19, 50), _at(21, 15)}
    assert {a.version for a in actions} == {2}


async def test_delete_supersedes_planned_actions(stack: Stack) -> None:
    rid = stack.sim.book(stack.room_a, DAY, "18:00:00", source="panel", status=1)
    await stack.settle()
    stack.sim.cancel(rid)
    await stack.settle()
    reservation = await stack.reservation(rid)
    assert reservation is not None
    assert reservation.deleted
    actions = await stack.actions()
    assert len(actions) == 2
    assert {a.status for a in actions} == {DoorActionStatus.SUPERSEDED}
    assert all(m.read for m in stack.sim.messages())


async def test_delete_after_the_door_was_unlocked_locks_it_now(stack: Stack) -> None:
    rid = stack.sim.book(stack.room_a, DAY, "09:00:00", source="panel", status=1)
    await stack.settle()
    unlock = next(a for a in await stack.actions() if a.kind is DoorActionKind.UNLOCK)
    # the executor ran the unlock at 08:50
    await stack.clock.advance(55 * 60)
    async with stack.service.session_factory() as session, session.begin():
        assert await finish_door_action(
            session, unlock.key, status=DoorActionStatus.DONE, now=unlock.planned_at
        )
    stack.sim.cancel(rid)
    await stack.settle()
    lock = next(a for a in await stack.actions() if a.kind is DoorActionKind.LOCK)
    assert lock.status is DoorActionStatus.PLANNED
    now = dt.datetime.fromtimestamp(stack.clock.time(), dt.UTC)
    assert lock.planned_at == now  # moved to "now": the door is locked at once
    assert lock.reason == "close_door"


async def test_unpaid_cart_plans_nothing_and_its_lapse_deletes_it(stack: Stack) -> None:
    rid = stack.sim.book(stack.room_a, DAY, "15:00:00", source="web", status=0)
    await stack.settle()
    reservation = await stack.reservation(rid)
    assert reservation is not None
    assert reservation.status == 0
    assert await stack.actions() == []
    await stack.clock.advance(20 * 60)  # the 20-minute hold ends: Lockme deletes the cart
    actions = [m.action for m in stack.sim.messages()]
    assert actions == ["add", "delete"]
    await stack.settle()
    reservation = await stack.reservation(rid)
    assert reservation is not None
    assert reservation.deleted
    assert await stack.actions() == []
    assert all(m.read for m in stack.sim.messages())


async def test_paying_a_cart_opens_the_door(stack: Stack) -> None:
    rid = stack.sim.book(stack.room_a, DAY, "15:00:00", source="web", status=0)
    await stack.settle()
    stack.sim.pay(rid)
    await stack.settle()
    assert {a.kind for a in await stack.actions()} == {DoorActionKind.UNLOCK, DoorActionKind.LOCK}


async def test_test_message_is_acknowledged(stack: Stack) -> None:
    message = stack.sim.trigger_test(stack.department)
    outcomes = await stack.settle()
    assert [o.action for o in outcomes] == ["test"]
    assert stack.sim_message(message.id).read
    row = await stack.message(message.id)
    assert row is not None
    assert row.state is MessageState.ACKED
    assert row.action == "test"


async def test_stale_add_after_delete_is_ignored(stack: Stack) -> None:
    rid = stack.sim.book(stack.room_a, DAY, "18:00:00", source="panel", status=1)
    await stack.deliver()
    add_message = stack.sim.messages()[0]
    stack.lockme_api.fail("GET", f"/v2.4/message/{add_message.id}", count=1)
    (failed,) = await stack.process()  # the add fails to fetch and waits for a retry
    assert failed.state is MessageState.FAILED
    stack.sim.cancel(rid)
    await stack.settle()  # the delete is applied first
    await stack.clock.advance(10)
    (late,) = await stack.process()  # the add, retried after the delete
    assert late.state is MessageState.ACKED
    reservation = await stack.reservation(rid)
    assert reservation is not None
    assert reservation.deleted
    assert await stack.actions(status=DoorActionStatus.PLANNED) == []


async def test_unknown_message_id_fails_visibly_then_gives_up(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    from roomkey.service.messages import MessageSettings, record_delivery, retry_message

    s = await make_stack(
        engine,
        secret_box,
        tmp_path,
        settings=MessageSettings(max_attempts=2, backoff_initial=5, backoff_max=5),
    )
    try:
        assert await record_delivery(s.service, "999999")
        (o1,) = await s.process()
        assert o1.state is MessageState.FAILED
        assert o1.error is not None
        assert "NotFoundError" in o1.error
        await s.clock.advance(5)
        (o2,) = await s.process()
        row = await s.message("999999")
        assert row is not None
        assert row.state is MessageState.FAILED
        assert row.next_attempt_at is None  # out of automatic retries, still on record
        async with s.service.session_factory() as session:
            (alert,) = list((await session.execute(select(Alert))).scalars())
        assert alert.kind == "lockme_message_failed"
        assert "999999" in alert.message
        assert alert.acknowledged_at is None
        await s.clock.advance(3600)
        assert await s.process() == []
        assert await retry_message(s.service, "999999")
        assert s.service.wakes.messages.is_set()
        (o3,) = await s.process()
        assert o3.state is MessageState.FAILED
        assert o2.error == o3.error
    finally:
        await s.close()


async def test_two_replicas_process_each_message_once(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    import asyncio

    a = await make_stack(engine, secret_box, tmp_path)
    b = await make_stack(
        engine, secret_box, tmp_path, instance_id="replica-b", clock=a.clock, sim=a.sim
    )
    try:
        for hour in range(9, 21):
            a.sim.book(a.room_a if hour % 2 else a.room_b, DAY, f"{hour:02d}:00:00", source="panel")
        await a.deliver()
        worker_a = MessageWorker(a.service, a.service.messages.settings)
        worker_b = MessageWorker(b.service, b.service.messages.settings)
        res_a, res_b = await asyncio.gather(worker_a.run_until_idle(), worker_b.run_until_idle())
        ids_a = {o.message_id for o in res_a}
        ids_b = {o.message_id for o in res_b}
        assert not ids_a & ids_b
        assert len(ids_a | ids_b) == 12
        assert all(m.read for m in a.sim.messages())
        assert len(await a.actions(status=DoorActionStatus.PLANNED)) == 24
    finally:
        await b.close()
        await a.close()


async def test_a_worker_that_dies_mid_message_loses_it_to_the_next_one(stack: Stack) -> None:
    rid = stack.sim.book(stack.room_a, DAY, "18:00:00", source="panel", status=1)
    await stack.deliver()
    (message,) = stack.sim.messages()
    crashed = MessageWorker(stack.service, stack.service.messages.settings)
    assert await crashed.claim() == [str(message.id)]  # ... and then the process died
    assert await stack.process() == []  # the claim still holds: nobody else touches it
    await stack.clock.advance(stack.service.messages.settings.claim_seconds + 1)
    (outcome,) = await stack.process()
    assert outcome.state is MessageState.ACKED
    assert stack.sim_message(message.id).read
    reservation = await stack.reservation(rid)
    assert reservation is not None
    # the dead worker's late write is refused: its claim is gone
    late = await crashed.process(str(message.id))
    assert late.state is MessageState.ACKED  # nothing left to do for it
    assert len(await stack.actions()) == 2


async def test_worker_step_sleeps_until_the_next_retry_or_claim_expiry(stack: Stack) -> None:
    worker = stack.service.messages
    assert await worker.step() is None  # nothing stored: sleep the idle interval
    stack.sim.book(stack.room_a, DAY, "18:00:00", source="panel", status=1)
    await stack.deliver()
    other = MessageWorker(stack.service, worker.settings)
    other_claim = await other.claim()  # another replica is busy with it
    assert len(other_claim) == 1
    delay = await worker.step()
    # not 0 (no busy loop on a row someone else holds): wake when that claim would expire
    assert delay == worker.settings.claim_seconds
    stack.lockme_api.fail("GET", "/v2.4/message/", 1)
    await stack.clock.advance(worker.settings.claim_seconds + 1)
    # failed: retry later (second claim of this message, so the second backoff step)
    assert await worker.step() == 2 * worker.settings.backoff_initial
    await stack.clock.advance(2 * worker.settings.backoff_initial)
    assert await worker.step() is None  # done; nothing left
    assert all(m.read for m in stack.sim.messages())
