"""Reconciliation heals what the message stream missed (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from test_runtime_harness import DAY, WARSAW, Stack, make_stack

from roomkey.service.clock import utc_now
from roomkey.service.crypto import SecretBox
from roomkey.service.db.kv import kv_get
from roomkey.service.db.leases import try_acquire_lease
from roomkey.service.db.models import Alert, DoorActionKind, DoorActionStatus, MessageState
from roomkey.service.messages import MessageSettings, record_delivery
from roomkey.service.reconcile import LAST_RUN_KEY, LEASE_NAME, ReconcileProgress
from roomkey.sim.lockme import FaultRule


@pytest.fixture
async def stack(engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path) -> AsyncIterator[Stack]:
    s = await make_stack(engine, secret_box, tmp_path)
    try:
        yield s
    finally:
        await s.close()


def _roomkey_down(stack: Stack) -> None:
    """roomkey unreachable: every delivery attempt is lost on the way."""
    stack.sim.faults.add(FaultRule(kind="drop_webhook"))


def _roomkey_up(stack: Stack) -> None:
    stack.sim.faults.clear()


async def test_booking_made_while_down_beyond_redelivery_is_healed(stack: Stack) -> None:
    _roomkey_down(stack)
    rid = stack.sim.book(stack.room_a, "2027-02-03", "18:00:00", source="panel", status=1)
    await stack.clock.advance(25 * 3600)  # Lockme's 24 h of redeliveries pass unanswered
    (message,) = stack.sim.messages()
    assert len(message.attempts) == 9
    assert all(a.outcome == "dropped" for a in message.attempts)
    _roomkey_up(stack)
    assert await stack.message(message.id) is None  # roomkey never heard of it

    seen: list[ReconcileProgress] = []
    report = await stack.service.reconcile(progress=seen.append)
    assert report.ran
    assert report.added == [rid]
    assert report.changed == []
    assert report.deleted == []
    assert report.failures == []
    assert [p.done for p in seen] == list(range(1, 2 * 8 + 1))  # 2 rooms × (today + 7 days)
    assert {p.total for p in seen} == {16}
    assert stack.service.wakes.executor.is_set()

    reservation = await stack.reservation(rid)
    assert reservation is not None
    assert not reservation.deleted
    actions = await stack.actions(room_id=stack.room_a, status=DoorActionStatus.PLANNED)
    assert {a.kind for a in actions} == {DoorActionKind.UNLOCK, DoorActionKind.LOCK}

    again = await stack.service.reconcile()
    assert again.healed == 0  # nothing left to heal
    assert not again.replan.changed
    async with stack.service.session_factory() as session:
        last = await kv_get(session, LAST_RUN_KEY)
    assert last["added"] == 0
    assert "at" in last


async def test_vanished_and_changed_reservations_are_healed(stack: Stack) -> None:
    keep = stack.sim.book(stack.room_a, DAY, "12:00:00", source="panel", status=1)
    gone = stack.sim.book(stack.room_a, DAY, "18:00:00", source="panel", status=1)
    moved = stack.sim.book(stack.room_b, "2027-02-02", "10:00:00", source="panel", status=1)
    await stack.settle()
    _roomkey_down(stack)
    stack.sim.cancel(gone)
    stack.sim.move(moved, roomid=stack.room_a, date="2027-02-02", hour="20:00:00")
    await stack.clock.advance(60)  # roughly nothing delivered: roomkey is unreachable
    report = await stack.service.reconcile()
    assert report.deleted == [gone]
    assert report.changed == [moved]
    assert report.added == []
    gone_row = await stack.reservation(gone)
    assert gone_row is not None
    assert gone_row.deleted
    moved_row = await stack.reservation(moved)
    assert moved_row is not None
    assert moved_row.room_id == stack.room_a
    start = dt.datetime(2027, 2, 2, 20, tzinfo=WARSAW).astimezone(dt.UTC)
    assert moved_row.start_at == start
    planned = await stack.actions(status=DoorActionStatus.PLANNED)
    assert {r for a in planned for r in a.reservation_ids} == {keep, moved}
    assert await stack.actions(room_id=stack.room_b, status=DoorActionStatus.PLANNED) == []


async def test_a_failed_read_never_deletes(stack: Stack) -> None:
    rid = stack.sim.book(stack.room_a, DAY, "18:00:00", source="panel", status=1)
    await stack.settle()
    _roomkey_down(stack)
    stack.sim.cancel(rid)
    stack.lockme_api.fail("GET", f"/v2.4/room/{stack.room_a}/reservations/2027-02-04", 2)
    report = await stack.service.reconcile()
    assert len(report.failures) == 1
    assert "ServerError" in report.failures[0]
    assert report.deleted == []  # room A was not read completely: nothing deleted there
    row = await stack.reservation(rid)
    assert row is not None
    assert not row.deleted
    delay = await stack.service.reconciler.step()  # fails again: retries sooner than hourly
    assert delay is not None
    assert delay < stack.service.reconciler.settings.interval
    # A row touched at the very instant a run starts counts as fresher (a message may have
    # been applied while the list was read), so let time move before the healing run.
    await stack.clock.advance(1)
    healed = await stack.service.reconcile()
    assert healed.deleted == [rid]


async def test_only_one_replica_runs_it(stack: Stack) -> None:
    async with stack.service.session_factory() as session, session.begin():
        assert await try_acquire_lease(
            session,
            LEASE_NAME,
            owner="other-replica:reconcile",
            now=utc_now(stack.clock),
            ttl=dt.timedelta(minutes=10),
        )
    report = await stack.service.reconcile()
    assert not report.ran
    assert report.reason == "another replica is reconciling"
    forced = await stack.service.reconcile(force=True)
    assert forced.ran
    await stack.clock.advance(11 * 60)  # the other replica's lease expired
    assert (await stack.service.reconcile()).ran


async def test_message_that_ran_out_of_retries_is_rearmed(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    s = await make_stack(
        engine, secret_box, tmp_path, settings=MessageSettings(max_attempts=1, backoff_initial=5)
    )
    try:
        rid = s.sim.book(s.room_a, DAY, "18:00:00", source="panel", status=1)
        (message,) = s.sim.messages()
        s.lockme_api.fail("GET", f"/v2.4/message/{message.id}", 1)
        await s.deliver()
        await s.process()
        row = await s.message(message.id)
        assert row is not None
        assert row.state is MessageState.FAILED
        assert row.next_attempt_at is None
        report = await s.service.reconcile()
        assert report.rearmed_messages == 1
        assert report.added == [rid]  # reconciliation itself already healed the booking
        assert s.service.wakes.messages.is_set()
        (outcome,) = await s.process()
        assert outcome.state is MessageState.ACKED
        assert s.sim_message(message.id).read
        async with s.service.session_factory() as session:
            (alert,) = list((await session.execute(select(Alert))).scalars())
        assert alert.kind == "lockme_message_failed"
        assert alert.acknowledged_at is not None  # resolved once the message went through
    finally:
        await s.close()


async def test_fresher_message_wins_over_a_stale_list(stack: Stack) -> None:
    rid = stack.sim.book(stack.room_a, DAY, "18:00:00", source="panel", status=1)
    await stack.settle()
    real = stack.service.lockme.list_reservations
    moved = False

    async def list_then_move(room_id: int, date: str) -> object:
        nonlocal moved
        listed = await real(room_id, date)
        if not moved and room_id == stack.room_a and date == DAY:
            moved = True  # a staff move lands (and is processed) while we reconcile
            stack.sim.move(rid, roomid=stack.room_b, date=DAY, hour="20:00:00")
            await stack.clock.advance(1)
            await stack.settle()
        return listed

    stack.service.lockme.list_reservations = list_then_move  # type: ignore[method-assign]
    report = await stack.service.reconcile()
    assert rid in report.skipped_fresher
    row = await stack.reservation(rid)
    assert row is not None
    assert row.room_id == stack.room_b
    assert not row.deleted


async def test_periodic_worker_runs_on_start_and_on_wake(stack: Stack) -> None:
    import asyncio

    async def passes(at_least: int) -> int:
        for _ in range(1000):
            status = {s.name: s for s in stack.service.supervisor.status()}
            if status["reconcile"].passes >= at_least:
                break
            await asyncio.sleep(0.01)
        return status["reconcile"].passes

    stack.sim.book(stack.room_a, DAY, "18:00:00", source="panel", status=1)
    _roomkey_down(stack)
    await stack.service.start()
    try:
        assert await passes(1) == 1
        assert len(await stack.actions()) == 2  # the startup pass healed the missed booking
        stack.sim.book(stack.room_b, DAY, "18:00:00", source="panel", status=1)
        stack.service.wakes.reconcile.set()  # e.g. `roomkey sync` on another replica
        assert await passes(2) == 2
        assert len(await stack.actions()) == 4
    finally:
        await stack.service.stop()
    assert await record_delivery(stack.service, "1")  # the service stays usable after stop
