"""End to end through both simulators on loopback, on SQLite and on PostgreSQL.

Every scenario runs the real roomkey app under uvicorn, the Lockme simulator and the LOQED
simulator as real servers on 127.0.0.1, with one manual SimClock moved by the test. What the
locks really received (the LOQED simulator's log) is the ground truth for "the door moved".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from e2e_stack import (
    DAY,
    HOOK_SECRET,
    LAG,
    LEAD,
    Venue,
    actions,
    all_acked,
    as_utc,
    commands,
    confirmed_command,
    events,
    eventually,
    local,
    make_venue,
    messages,
    planned,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from roomkey.service.crypto import SecretBox
from roomkey.service.db.models import (
    CommandAction,
    CommandState,
    DoorActionKind,
    DoorActionStatus,
    MessageState,
)
from roomkey.service.executor import Executor
from roomkey.service.runtime import Service
from roomkey.sim.loqed import BoltState, ReceivedCommand

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def venue() -> AsyncIterator[Venue]:
    v = await make_venue()
    try:
        yield v
    finally:
        await v.close()


async def start(venue: Venue, db_url: str, engine: AsyncEngine, box: SecretBox, tmp: Path) -> None:
    await venue.start_node(db_url, engine, box, tmp)


async def book(venue: Venue, engine: AsyncEngine, room: int, hour: str, *, count: int,
               **fields: object) -> int:
    """Book like a customer would and wait until roomkey has processed ``count`` messages."""
    fields.setdefault("source", "panel")
    rid = venue.lockme.book(room, DAY, hour, **fields)  # type: ignore[arg-type]
    await venue.deliver()
    await eventually(lambda: all_acked(engine, count), what=f"{count} message(s) acked")
    return rid


async def test_paid_booking_unlocks_before_and_locks_after_confirmed_by_lock_events(
    venue: Venue, db_url: str, engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    await start(venue, db_url, engine, secret_box, tmp_path)
    rid = await book(venue, engine, venue.room_a, "10:00:00", count=1, status=1)
    start_at, end_at = local(DAY, "10:00:00"), local(DAY, "11:00:00")

    plan = planned(await actions(engine, room=venue.room_a))
    assert plan == [
        (DoorActionKind.UNLOCK, as_utc(start_at - LEAD), "door-a"),
        (DoorActionKind.LOCK, as_utc(end_at + LAG), "door-a"),
    ]
    # Nothing moves a second early.
    await venue.advance_to(start_at - LEAD - dt.timedelta(seconds=1))
    assert venue.received(venue.lock_a) == []

    await venue.pass_(start_at - LEAD)
    sent = await eventually(lambda: _sent(venue, 1), what="unlock received by the lock")
    assert sent[0].action == "day_lock"
    assert 0 <= sent[0].at - (start_at - LEAD).timestamp() <= 1.0
    await venue.advance(10)  # GO_TO_STATE and STATE_CHANGED arrive as signed bridge webhooks
    unlock = (await eventually(lambda: confirmed_command(engine, "door-a", 1), what="confirmed"))[0]
    assert unlock.action is CommandAction.DAY_LOCK
    assert venue.loqed.lock(venue.lock_a.loqed_id).bolt_state is BoltState.DAY_LOCK
    assert unlock.sending_at is not None
    assert (unlock.sending_at - as_utc(start_at - LEAD)).total_seconds() <= 1.0
    evs = await events(engine, lock="door-a")
    kinds = [e.kind for e in evs if e.command_id == unlock.id]
    assert "go_to_state" in kinds
    assert "state_changed" in kinds
    assert {e.reservation_id for e in evs if e.kind == "state_changed"} == {rid}

    await venue.pass_(end_at + LAG)
    await eventually(lambda: _sent(venue, 2), what="lock received by the lock")
    await venue.advance(10)
    done = await eventually(lambda: confirmed_command(engine, "door-a", 2), what="lock confirmed")
    assert done[1].action is CommandAction.NIGHT_LOCK
    assert venue.loqed.lock(venue.lock_a.loqed_id).bolt_state is BoltState.NIGHT_LOCK
    assert [r.action for r in venue.received(venue.lock_a)] == ["day_lock", "night_lock"]
    assert venue.received(venue.lock_b) == []
    statuses = {a.status for a in await actions(engine, room=venue.room_a)}
    assert statuses == {DoorActionStatus.DONE}


async def _sent(venue: Venue, count: int) -> list[ReceivedCommand] | None:
    got = venue.received(venue.lock_a)
    return got if len(got) >= count else None


async def test_edit_move_delete_and_lapsed_cart_do_the_right_thing(
    venue: Venue, db_url: str, engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    await start(venue, db_url, engine, secret_box, tmp_path)
    edited = await book(venue, engine, venue.room_a, "10:00:00", count=1)
    moved = await book(venue, engine, venue.room_a, "14:00:00", count=2)
    deleted = await book(venue, engine, venue.room_b, "12:00:00", count=3)
    cart = await book(venue, engine, venue.room_b, "16:00:00", count=4, source="web", status=0)

    # Edit: 10:00 → 11:00 in the same room: the window is updated in place.
    venue.lockme.edit(edited, {"hour": "11:00:00"})
    await venue.deliver()
    await eventually(lambda: all_acked(engine, 5), what="edit processed")
    # Move: room A 14:00 → room B 18:00.
    venue.lockme.move(moved, roomid=venue.room_b, date=DAY, hour="18:00:00")
    await venue.deliver()
    await eventually(lambda: all_acked(engine, 6), what="move processed")
    # Delete (staff cancels).
    venue.lockme.cancel(deleted)
    await venue.deliver()
    await eventually(lambda: all_acked(engine, 7), what="delete processed")

    live_a = planned(await actions(engine, room=venue.room_a))
    live_b = planned(await actions(engine, room=venue.room_b))
    assert live_a == [
        (DoorActionKind.UNLOCK, as_utc(local(DAY, "11:00:00") - LEAD), "door-a"),
        (DoorActionKind.LOCK, as_utc(local(DAY, "12:00:00") + LAG), "door-a"),
    ]
    assert live_b == [
        (DoorActionKind.UNLOCK, as_utc(local(DAY, "18:00:00") - LEAD), "door-b"),
        (DoorActionKind.LOCK, as_utc(local(DAY, "19:00:00") + LAG), "door-b"),
    ]
    # The unpaid cart planned nothing and lapses 20 minutes after it was made.
    await venue.advance(21 * 60)
    await eventually(lambda: all_acked(engine, 8), what="cart lapse processed")
    assert cart not in {r for a in await actions(engine) for r in a.reservation_ids}

    # Run the day through every time that was ever planned: only the edited and the moved
    # bookings move doors, at their new times; the deleted booking and the old times do not.
    moments = sorted({
        local(DAY, "10:50:00"), local(DAY, "12:15:00"),  # edited booking, new times
        local(DAY, "09:50:00"), local(DAY, "11:15:00"),  # edited booking, old times
        local(DAY, "13:50:00"), local(DAY, "15:15:00"),  # moved booking, old room
        local(DAY, "11:50:00"), local(DAY, "13:15:00"),  # deleted booking
        local(DAY, "17:50:00"), local(DAY, "19:15:00"),  # moved booking, new room
        local(DAY, "15:50:00"), local(DAY, "17:15:00"),  # the lapsed cart's slot
    })
    for moment in moments:
        if moment.timestamp() > venue.clock.time():
            await venue.pass_(moment)
            await venue.advance(10)
    await eventually(lambda: confirmed_command(engine, "door-b", 2), what="moved booking done")
    await eventually(lambda: confirmed_command(engine, "door-a", 2), what="edited booking done")
    a = venue.received(venue.lock_a)
    b = venue.received(venue.lock_b)
    assert [(r.action, round(r.at)) for r in a] == [
        ("day_lock", (local(DAY, "11:00:00") - LEAD).timestamp()),
        ("night_lock", (local(DAY, "12:00:00") + LAG).timestamp()),
    ]
    assert [(r.action, round(r.at)) for r in b] == [
        ("day_lock", (local(DAY, "18:00:00") - LEAD).timestamp()),
        ("night_lock", (local(DAY, "19:00:00") + LAG).timestamp()),
    ]


async def test_back_to_back_bookings_keep_the_door_unlocked_between_them(
    venue: Venue, db_url: str, engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    await start(venue, db_url, engine, secret_box, tmp_path)
    first = await book(venue, engine, venue.room_a, "10:00:00", count=1)
    second = await book(venue, engine, venue.room_a, "11:00:00", count=2)
    plan = planned(await actions(engine, room=venue.room_a))
    assert plan == [
        (DoorActionKind.UNLOCK, as_utc(local(DAY, "10:00:00") - LEAD), "door-a"),
        (DoorActionKind.LOCK, as_utc(local(DAY, "12:00:00") + LAG), "door-a"),
    ]
    live = [a for a in await actions(engine, room=venue.room_a)
            if a.status is DoorActionStatus.PLANNED]
    assert all(set(a.reservation_ids) == {first, second} for a in live)
    for moment in (local(DAY, "09:50:00"), local(DAY, "10:50:00"), local(DAY, "11:15:00"),
                   local(DAY, "12:15:00")):
        await venue.pass_(moment)
        await venue.advance(10)
    await eventually(lambda: confirmed_command(engine, "door-a", 2), what="both confirmed")
    assert [r.action for r in venue.received(venue.lock_a)] == ["day_lock", "night_lock"]


async def test_duplicate_and_redelivered_webhooks_change_nothing(
    venue: Venue, db_url: str, engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    await start(venue, db_url, engine, secret_box, tmp_path)
    node = venue.nodes[0]
    await book(venue, engine, venue.room_a, "10:00:00", count=1)
    message_id = (await messages(engine))[0].message_id
    plan_before = [(a.key, a.version, a.status) for a in await actions(engine)]

    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        # The same Lockme message again, by POST and by GET, as Lockme's retries would.
        for method in ("POST", "GET", "POST"):
            response = await client.request(
                method, f"/hooks/lockme/{HOOK_SECRET}", headers={"X-MessageId": message_id}
            )
            assert response.status_code == 200
        await venue.settle()
        assert [(a.key, a.version, a.status) for a in await actions(engine)] == plan_before

        # The door moves; every signed bridge webhook is delivered twice, back to back, as
        # LOQED gateways do.
        await venue.pass_(local(DAY, "09:50:00"))
        await eventually(lambda: _sent(venue, 1), what="unlock sent")
        replayed = 0
        for _ in range(10):
            await venue.advance(1)
            fresh = [d for d in venue.loqed.deliveries("bridge")
                     if d.url.startswith(node.url)][replayed // 2:]
            for delivery in fresh:
                response = await client.post(
                    delivery.url.removeprefix(node.url), content=delivery.body,
                    headers=delivery.headers,
                )
                assert response.status_code == 200
                replayed += 2
        await eventually(lambda: confirmed_command(engine, "door-a", 1), what="unlock confirmed")
        stored = await events(engine)
        assert [e.kind for e in stored] == ["go_to_state", "state_changed"]

        actions_before = [(a.key, a.version, a.status) for a in await actions(engine)]
        commands_before = [(c.id, c.state, c.attempts) for c in await commands(engine)]
        # Late redeliveries of everything (out of order, after the fact) change no decision.
        for delivery in [d for d in venue.loqed.deliveries("bridge") if d.url.startswith(node.url)]:
            response = await client.post(
                delivery.url.removeprefix(node.url), content=delivery.body,
                headers=delivery.headers,
            )
            assert response.status_code < 500
    # Lockme's own redelivery schedule runs on (the message is read: nothing more is sent).
    await venue.advance(16 * 60)
    await eventually(lambda: all_acked(engine, 1), what="still acked")

    assert [(a.key, a.version, a.status) for a in await actions(engine)] == actions_before
    assert [(c.id, c.state, c.attempts) for c in await commands(engine)] == commands_before
    assert len(await messages(engine)) == 1
    assert venue.lockme.message(message_id).read
    assert [r.action for r in venue.received(venue.lock_a)] == ["day_lock"]
    assert venue.loqed.lock(venue.lock_a.loqed_id).bolt_state is BoltState.DAY_LOCK


async def test_restart_mid_schedule_keeps_the_schedule_and_loses_no_message(
    venue: Venue, db_url: str, engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    from roomkey.service.db.engine import create_engine
    from roomkey.sim.lockme import FaultRule

    await start(venue, db_url, engine, secret_box, tmp_path)
    first = venue.nodes[0]
    port = first.server.port
    await book(venue, engine, venue.room_a, "10:00:00", count=1)
    await venue.pass_(local(DAY, "09:50:00"))
    await eventually(lambda: _sent(venue, 1), what="unlock sent")
    await venue.advance(10)
    await eventually(lambda: confirmed_command(engine, "door-a", 1), what="unlock confirmed")

    # A message arrives but cannot be fetched yet (Lockme answers 503): stored, not applied.
    venue.lockme.faults.add(FaultRule("error", status=503, path_prefix="/v2.4/message"))
    venue.lockme.book(venue.room_b, DAY, "13:00:00", source="panel")
    await venue.deliver()
    await eventually(
        lambda: _message_failed(engine), what="message stored and its fetch failed"
    )
    await venue.stop_node(first)

    # While roomkey is down a second booking is made: its webhook cannot be delivered.
    venue.lockme.book(venue.room_b, DAY, "15:00:00", source="panel")
    await venue.deliver()
    venue.lockme.faults.clear()

    engine2 = create_engine(db_url)
    try:
        await venue.start_node(db_url, engine2, secret_box, tmp_path, replica="replica-b",
                               port=port)
        await venue.advance(120)  # Lockme redelivers; roomkey retries its failed message
        await eventually(lambda: all_acked(engine2, 3), what="every message acked after restart")
        live_b = planned(await actions(engine2, room=venue.room_b))
        assert [k for k, _, _ in live_b] == [DoorActionKind.UNLOCK, DoorActionKind.LOCK] * 2

        # The schedule made before the restart is kept: the lock fires at end + lag.
        await venue.pass_(local(DAY, "11:15:00"))
        await eventually(lambda: _sent(venue, 2), what="lock after restart")
        await venue.advance(10)
        await eventually(lambda: confirmed_command(engine2, "door-a", 2), what="lock confirmed")
        for moment in (local(DAY, "12:50:00"), local(DAY, "14:15:00"), local(DAY, "14:50:00"),
                       local(DAY, "16:15:00")):
            await venue.pass_(moment)
            await venue.advance(10)
        await eventually(lambda: confirmed_command(engine2, "door-b", 4), what="room B done")
    finally:
        await venue.close()
        await engine2.dispose()
    assert [r.action for r in venue.received(venue.lock_a)] == ["day_lock", "night_lock"]
    assert [r.action for r in venue.received(venue.lock_b)] == [
        "day_lock", "night_lock", "day_lock", "night_lock"
    ]
    assert all(m.read for m in venue.lockme.messages())
    _token_refreshed_without_revoking(venue)


async def _message_failed(engine: AsyncEngine) -> bool:
    found = await messages(engine)
    return any(m.state is MessageState.FAILED or (m.attempts > 0 and m.state is not
               MessageState.ACKED) for m in found)


@pytest.mark.postgres
async def test_two_replicas_on_one_postgres_never_send_a_command_twice(
    venue: Venue, db_url: str, db_backend: str, engine: AsyncEngine, secret_box: SecretBox,
    tmp_path: Path,
) -> None:
    if db_backend != "postgresql":
        pytest.skip("replicas share PostgreSQL; SQLite is single-process")
    from roomkey.service.db.engine import create_engine

    engine2 = create_engine(db_url)
    try:
        await venue.start_node(db_url, engine, secret_box, tmp_path, replica="replica-a")
        await venue.start_node(db_url, engine2, secret_box, tmp_path, replica="replica-b",
                               lockme_webhooks=False)
        hours = ["09:00:00", "11:00:00", "13:30:00", "16:00:00", "19:00:00"]
        count = 0
        for room in (venue.room_a, venue.room_b):
            for hour in hours:
                count += 1
                await book(venue, engine, room, hour, count=count)
        expected = len(await actions(engine, status=DoorActionStatus.PLANNED))
        assert expected == 2 * 2 * len(hours)
        # Walk the day minute by minute around each action so both replicas race for it.
        for action in await actions(engine, status=DoorActionStatus.PLANNED):
            if action.planned_at.timestamp() > venue.clock.time():
                await venue.pass_(action.planned_at)
            await venue.advance(15)
        await venue.advance(60)
        await eventually(
            lambda: _all_done(engine, expected), what="every action done and confirmed"
        )
        # Both executors raced for every action; together they made one attempt per action.
        attempts = [_executor(node.service).attempts_made for node in venue.nodes]
        assert sum(attempts) == expected, attempts
    finally:
        await venue.close()
        await engine2.dispose()
    received = venue.received(venue.lock_a) + venue.received(venue.lock_b)
    assert len(received) == expected
    stamps = [(r.lock_id, r.action, r.at) for r in received]
    assert len(set(stamps)) == len(stamps)
    per_action: dict[str, int] = {}
    for c in await commands(engine):
        if c.door_action_key is not None:
            per_action[c.door_action_key] = per_action.get(c.door_action_key, 0) + 1
        assert c.state is CommandState.CONFIRMED
    assert len(per_action) == expected
    assert set(per_action.values()) == {1}
    _token_refreshed_without_revoking(venue)


def _token_refreshed_without_revoking(venue: Venue) -> None:
    """The hours walked outlive the access token: the replicas refreshed the one token they
    share in the database, one at a time, and no refresh was refused (a reused, rotated
    refresh token would be: ``invalid_grant``)."""
    grants = [g for g in venue.lockme.oauth.grants if g.grant_type == "refresh_token"]
    assert grants
    assert all(g.ok for g in grants), [g.error for g in grants]


def _executor(service: Service) -> Executor:
    step = service.supervisor.workers["executor"].step
    executor = getattr(step, "__self__", None)
    assert isinstance(executor, Executor)
    return executor


async def _all_done(engine: AsyncEngine, expected: int) -> bool:
    done = await actions(engine, status=DoorActionStatus.DONE)
    confirmed = [c for c in await commands(engine) if c.state is CommandState.CONFIRMED]
    return len(done) == expected and len(confirmed) == expected
