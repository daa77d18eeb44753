"""The executor against the real LOQED simulator: timing, lifecycle, transports, lateness."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from test_executor_harness import LOCK, LOQED_ID, ROOM, World, make_world

from roomkey.service.crypto import SecretBox
from roomkey.service.db.models import (
    CommandReason,
    CommandState,
    DoorActionKind,
    DoorActionStatus,
)
from roomkey.service.executor import Executor, context_for
from roomkey.service.manual import manual_action
from roomkey.sim.loqed.model import Verdict


@pytest.fixture
async def world(engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path) -> AsyncIterator[World]:
    w = await make_world(engine, secret_box, tmp_path)
    try:
        yield w
    finally:
        await w.close()


async def test_due_day_lock_fires_within_a_second_and_is_confirmed_by_lock_events(
    world: World,
) -> None:
    (key,) = await world.plan((DoorActionKind.UNLOCK, 30.0))
    planned_at = world.now() + dt.timedelta(seconds=30)

    # Not yet due: nothing is sent, and the executor asks to be woken at the planned time.
    delay = await world.executor.run_once()
    assert world.bridge_commands() == []
    assert delay is not None
    assert 29.0 < delay <= 30.1

    await world.advance(delay)
    await world.executor.run_once()

    (command,) = await world.commands()
    assert command.action.value == "day_lock"
    assert command.door_action_key == key
    assert command.state is CommandState.SENT
    assert command.sending_at is not None
    assert abs((command.sending_at - planned_at).total_seconds()) < 1.0
    (received,) = world.bridge_commands()
    assert received.via == "bridge"
    assert received.verdict is Verdict.ACCEPTED
    assert received.key_local_id == 1
    (attempt,) = await world.attempts(command.id)
    assert attempt.transport == "bridge"
    assert attempt.outcome == "accepted_by_transport"

    # GO_TO arrives 0.4-2.5 s later: accepted; STATE_CHANGED 4-8 s later: confirmed.
    await world.advance(2.6)
    (command,) = await world.commands()
    assert command.state is CommandState.ACCEPTED
    await world.advance(6.0)
    (command,) = await world.commands()
    assert command.state is CommandState.CONFIRMED
    assert command.confirmed_at is not None

    lock = await world.lock_row()
    assert lock.bolt_state == "day_lock"
    assert lock.online is True
    linked = [e for e in await world.events() if e.command_id == command.id]
    assert [e.kind for e in linked] == ["go_to_state", "state_changed"]
    (action,) = await world.actions()
    assert action.status is DoorActionStatus.DONE
    assert action.command_id == command.id
    assert world.sim_lock.bolt_state.value == "day_lock"
    assert await world.alerts() == []


async def test_the_running_worker_fires_at_the_planned_time(world: World) -> None:
    """The supervisor-driven loop (not a direct pass) wakes for the action by itself."""
    from roomkey.service.runtime import Supervisor

    await world.plan((DoorActionKind.UNLOCK, 20.0))
    planned_at = world.now() + dt.timedelta(seconds=20)
    from roomkey.service.executor import executor_worker

    supervisor = Supervisor(world.clock)
    supervisor.add(executor_worker(world.executor))
    await supervisor.start()
    try:
        for _ in range(200):  # let the first pass run and go to sleep until the action
            await asyncio.sleep(0.01)
            if world.clock.pending() > 0 and supervisor.status()[0].passes >= 1:
                break
        await world.advance(20.01)
        for _ in range(300):
            await asyncio.sleep(0.01)
            if world.bridge_commands():
                break
    finally:
        await supervisor.stop()
        await world.executor.drain()
    (received,) = world.bridge_commands()
    assert abs(received.at - planned_at.timestamp()) < 1.0
    (command,) = await world.commands()
    assert command.state is CommandState.SENT


async def test_lock_fires_with_the_room_policy_lock_action(world: World) -> None:
    await world.plan((DoorActionKind.UNLOCK, 0.0), (DoorActionKind.LOCK, 60.0))
    await world.executor.run_once()
    await world.advance(15)
    await world.advance(46)
    await world.executor.run_once()
    await world.advance(15)
    commands = await world.commands()
    assert [c.action.value for c in commands] == ["day_lock", "night_lock"]
    assert [c.state for c in commands] == [CommandState.CONFIRMED, CommandState.CONFIRMED]
    assert world.sim_lock.bolt_state.value == "night_lock"
    assert [r.action for r in world.bridge_commands()] == ["day_lock", "night_lock"]


async def test_overdue_actions_after_downtime_run_within_lateness_and_are_skipped_beyond(
    world: World,
) -> None:
    # Planned 20 min ago (beyond the 15 min lateness) and 5 min ago (within it).
    keys = await world.plan((DoorActionKind.UNLOCK, -20 * 60.0), (DoorActionKind.LOCK, -5 * 60.0))
    await world.executor.run_once()
    actions = {a.key: a for a in await world.actions()}
    assert actions[keys[0]].status is DoorActionStatus.SKIPPED
    assert "late" in (actions[keys[0]].reason or "")
    assert actions[keys[1]].status is DoorActionStatus.DONE
    (command,) = await world.commands()
    assert command.action.value == "night_lock"
    assert command.door_action_key == keys[1]
    assert [r.action for r in world.bridge_commands()] == ["night_lock"]
    (alert,) = await world.alerts()
    assert alert.kind == "action_skipped"
    assert alert.details is not None
    assert alert.details["door_action"] == keys[0]
    (entry,) = await world.audit()
    assert entry.action == "door_action.skipped"
    assert entry.target == keys[0]


async def test_a_lock_action_is_never_skipped_for_lateness(world: World) -> None:
    # After a long outage both sides of a window are overdue: the unlock is skipped, but the
    # lock still runs so a door roomkey may have left unlocked is locked (relocking is harmless).
    keys = await world.plan(
        (DoorActionKind.UNLOCK, -3 * 3600.0), (DoorActionKind.LOCK, -2 * 3600.0)
    )
    await world.executor.run_once()
    actions = {a.key: a for a in await world.actions()}
    assert actions[keys[0]].status is DoorActionStatus.SKIPPED
    assert actions[keys[1]].status is DoorActionStatus.DONE
    assert [r.action for r in world.bridge_commands()] == ["night_lock"]


async def test_not_sent_on_the_bridge_falls_through_to_the_cloud_with_a_fresh_signature(
    world: World,
) -> None:
    rule = world.sim.app.faults.add("/bridges/b1/to_lock", "refuse", count=1)
    assert rule.kind == "refuse"
    await world.plan((DoorActionKind.UNLOCK, 0.0))
    await world.executor.run_once()

    (command,) = await world.commands()
    attempts = await world.attempts(command.id)
    assert [(a.transport, a.outcome) for a in attempts] == [
        ("bridge", "not_sent"),
        ("cloud", "accepted_by_transport"),
    ]
    assert attempts[0].error == "NotSentError"
    assert command.state is CommandState.SENT
    assert command.transport == "cloud"
    # The lock got exactly one command, through the cloud with the token's own key slot.
    (received,) = world.bridge_commands()
    assert received.via == "cloud"
    token_key = world.sim.tokens[0].key_ids[LOQED_ID]
    assert received.key_local_id == token_key
    # Cloud events carry the token's key slot: roomkey learned it and confirms the command.
    await world.advance(12)
    (command,) = await world.commands()
    assert command.state is CommandState.CONFIRMED


async def test_maybe_delivered_is_never_retried_and_ends_unconfirmed_without_events(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    # No webhooks registered: the lock acts, but roomkey never hears about it.
    w = await make_world(engine, secret_box, tmp_path, bridge_webhook=False)
    try:
        w.sim.app.faults.add("/bridges/b1/to_lock", "drop_after", count=1)
        await w.plan((DoorActionKind.UNLOCK, 0.0))
        await w.executor.run_once()
        (command,) = await w.commands()
        attempts = await w.attempts(command.id)
        assert [(a.transport, a.outcome) for a in attempts] == [("bridge", "maybe_delivered")]
        assert command.state is CommandState.SENT
        await w.advance(31)
        await w.executor.run_once()
        (command,) = await w.commands()
        assert command.state is CommandState.EXPIRED
        assert command.reason is CommandReason.NO_RESPONSE
        assert len(w.bridge_commands()) == 1  # the dropped answer's command reached the lock
        assert len(await w.attempts(command.id)) == 1
        (alert,) = await w.alerts()
        assert alert.kind == "command_unconfirmed"
        assert alert.lock_id == LOCK
        (action,) = await w.actions()
        assert action.status is DoorActionStatus.FAILED
    finally:
        await w.close()


async def test_maybe_delivered_is_confirmed_when_the_lock_events_say_so(world: World) -> None:
    world.sim.app.faults.add("/bridges/b1/to_lock", "drop_after", count=1)
    await world.plan((DoorActionKind.UNLOCK, 0.0))
    await world.executor.run_once()
    await world.advance(12)
    await world.executor.run_once()
    (command,) = await world.commands()
    assert command.state is CommandState.CONFIRMED
    assert len(await world.attempts(command.id)) == 1
    assert len(world.bridge_commands()) == 1


async def test_unreachable_everywhere_fails_unreachable_with_an_alert(world: World) -> None:
    world.sim.app.faults.add("/bridges/b1/to_lock", "refuse", count=1)
    world.sim.app.faults.add("/api/locks", "refuse")  # the key-slot read and the command
    await world.plan((DoorActionKind.UNLOCK, 0.0))
    await world.executor.run_once()
    (command,) = await world.commands()
    assert command.state is CommandState.FAILED
    assert command.reason is CommandReason.UNREACHABLE
    assert world.bridge_commands() == []
    (alert,) = await world.alerts()
    assert alert.kind == "command_failed"


async def test_command_for_the_state_the_lock_is_in_is_confirmed_by_go_to_alone(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    w = await make_world(engine, secret_box, tmp_path, bolt_state="day_lock")
    try:
        # roomkey knows the lock is latched (from an earlier event).
        w.sim.manual(LOQED_ID, "knob", "night_lock")
        await w.advance(3)
        w.sim.manual(LOQED_ID, "knob", "day_lock")
        await w.advance(3)
        assert (await w.lock_row()).bolt_state == "day_lock"
        await w.plan((DoorActionKind.UNLOCK, 0.0))
        await w.executor.run_once()
        await w.advance(20)
        (command,) = await w.commands()
        assert command.state is CommandState.CONFIRMED
        linked = [e for e in await w.events() if e.command_id == command.id]
        assert [e.kind for e in linked] == ["go_to_state"]
    finally:
        await w.close()


async def test_motor_stall_fails_the_command_as_stalled_with_an_alert(world: World) -> None:
    world.sim.inject_stall(LOQED_ID)
    await world.plan((DoorActionKind.UNLOCK, 0.0))
    await world.executor.run_once()
    await world.advance(15)
    (command,) = await world.commands()
    assert command.state is CommandState.FAILED
    assert command.reason is CommandReason.STALLED
    kinds = sorted(a.kind for a in await world.alerts())
    assert kinds == ["command_failed", "motor_stall"]
    assert (await world.lock_row()).bolt_state == "unknown"
    assert world.sim_lock.bolt_state.value == "unknown"


async def test_go_to_alone_with_unknown_state_is_confirmed_from_the_bridge_status(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    w = await make_world(engine, secret_box, tmp_path, bolt_state="day_lock")
    try:
        w.sim.app.faults.add("/bridges/b1/status", "refuse", count=1)  # no state at start
        await w.plan((DoorActionKind.UNLOCK, 0.0))
        await w.executor.run_once()
        assert (await w.lock_row()).bolt_state is None
        await w.advance(20)
        (command,) = await w.commands()
        assert command.state is CommandState.ACCEPTED  # GO_TO only: the lock did not move
        await w.advance(11)
        await w.executor.run_once()
        (command,) = await w.commands()
        assert command.state is CommandState.CONFIRMED
        assert command.detail is not None
        assert "already in the target state" in command.detail
        assert (await w.lock_row()).bolt_state == "day_lock"
    finally:
        await w.close()


async def test_the_service_runs_the_executor_as_one_of_its_workers(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    from roomkey.service.runtime import Service

    w = await make_world(engine, secret_box, tmp_path)
    try:
        service = Service(
            w.service.config,
            clock=w.clock,
            engine=engine,
            secret_box=secret_box,
            loqed_http=w.service.loqed_http,
            instance_id="replica-x",
        )
        assert "executor" in service.supervisor.workers
        assert service.supervisor.workers["executor"].wake is service.wakes.executor
        await w.plan((DoorActionKind.UNLOCK, 0.0))
        worker = service.supervisor.workers["executor"]
        executor = worker.step.__self__  # type: ignore[attr-defined]
        assert isinstance(executor, Executor)
        assert executor.ctx is context_for(service)
        assert executor.ctx.owner == "replica-x"
        delay = await service.supervisor.run_once("executor")
        await executor.drain()  # the pass sends in the background
        assert [r.action for r in w.bridge_commands()] == ["day_lock"]
        assert delay is not None
    finally:
        await w.close()


async def test_no_secret_or_signed_command_reaches_logs_or_stored_errors(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    from test_executor_harness import BRIDGE_KEY, CLOUD_SECRET, KEY_SECRET

    from roomkey.service.logging import redact

    caplog.set_level(logging.DEBUG)
    token = world.sim.tokens[0].token
    world.sim.app.faults.add("/bridges/b1/to_lock", "refuse", count=1)
    world.sim.app.faults.add("/api/locks", "status", count=1, status=500)
    await world.plan((DoorActionKind.UNLOCK, 0.0), (DoorActionKind.LOCK, 60.0))
    await world.executor.run_once()
    world.sim.app.faults.add("/bridges/b1/to_lock", "drop_after", count=1)
    await world.advance(61)
    await world.executor.run_once()
    client = world.receiver()
    await client.post(f"/hooks/loqed/cloud/{CLOUD_SECRET}x", json={"event_type": "X"})
    await client.post(
        f"/hooks/loqed/bridge/{LOCK}", content=b"{}", headers={"HASH": "0" * 64, "TIMESTAMP": "1"}
    )
    await world.advance(40)
    await world.executor.run_once()

    secrets = [KEY_SECRET, BRIDGE_KEY, token, CLOUD_SECRET]
    ours = [r for r in caplog.records if r.name.startswith("roomkey")]
    assert ours
    for record in ours:
        text = record.getMessage() + (record.exc_text or "")
        assert "command_signed_base64" not in text
        assert not any(s in text for s in secrets), text
    for record in caplog.records:  # third-party lines too, once the service's filter ran
        text = redact(record.getMessage())
        assert not any(s in text for s in secrets), text
        assert "command_signed_base64=" not in text or "command_signed_base64=***" in text
    stored: list[str] = []
    for command in await world.commands():
        stored.append(command.detail or "")
        stored += [a.error or "" for a in await world.attempts(command.id)]
    assert any(stored)
    for text in stored:
        assert "http" not in text
        assert not any(s in text for s in secrets)
    assert not any(s in repr(world.ctx) for s in secrets)


async def test_open_house_goes_through_the_cloud_and_a_lock_follows_it(world: World) -> None:
    keys = await world.plan(
        (DoorActionKind.OPEN_HOUSE_ON, -60.0),
        (DoorActionKind.OPEN_HOUSE_OFF, -2.0),
        (DoorActionKind.LOCK, -1.0),
    )
    await world.executor.run_once()
    await world.executor.run_once()  # the lock waited for the open-house change's place
    await world.advance(12)
    commands = {c.action.value: c for c in await world.commands()}  # same instant: by action
    assert {a: (c.state, c.transport) for a, c in commands.items()} == {
        "open_house_on": (CommandState.SUPERSEDED, None),
        "open_house_off": (CommandState.CONFIRMED, "cloud"),
        "night_lock": (CommandState.CONFIRMED, "bridge"),
    }
    assert commands["open_house_on"].superseded_by == commands["open_house_off"].id
    assert [(r.via, r.action) for r in world.bridge_commands()] == [("bridge", "night_lock")]
    assert world.sim_lock.settings["open_house_mode"] == 0
    actions = {a.key: a for a in await world.actions()}
    assert all(actions[k].status is DoorActionStatus.DONE for k in keys)


async def test_run_executor_loops_until_stopped_and_wakes_on_poke(world: World) -> None:
    from roomkey.service.executor import run_executor

    world.ctx.wake = asyncio.Event()
    stop = asyncio.Event()
    task = asyncio.create_task(run_executor(world.ctx, interval=3600, stop=stop))
    try:
        for _ in range(100):  # first pass done: it sleeps (nothing planned)
            await asyncio.sleep(0.01)
            if world.clock.pending() > 0:
                break
        await manual_action(world.ctx, ROOM, "lock", actor="ops", send=False)  # pokes
        for _ in range(300):
            await asyncio.sleep(0.01)
            if world.bridge_commands():
                break
        assert [r.action for r in world.bridge_commands()] == ["night_lock"]
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    assert task.done()
    assert not task.cancelled()


async def test_not_sent_on_the_bridge_falls_through_to_the_app_api_signed_afresh(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    w = await make_world(engine, secret_box, tmp_path, transports=("bridge", "app"))
    try:
        w.sim.app.faults.add("/bridges/b1/to_lock", "refuse", count=1)
        await w.plan((DoorActionKind.UNLOCK, 0.0))
        await w.executor.run_once()
        (command,) = await w.commands()
        attempts = await w.attempts(command.id)
        assert [(a.transport, a.outcome) for a in attempts] == [
            ("bridge", "not_sent"),
            ("app", "accepted_by_transport"),
        ]
        (received,) = w.bridge_commands()
        app_key = w.sim.app_keys[0]
        # A command signed with the app key at this very moment (45-byte form), accepted.
        assert (received.via, received.verdict) == ("app_api", Verdict.ACCEPTED)
        assert received.key_local_id == app_key.local_id
        assert received.command_timestamp == int(w.clock.time())
        await w.advance(12)
        (command,) = await w.commands()
        assert command.state is CommandState.CONFIRMED  # events name the app key's slot
    finally:
        await w.close()
