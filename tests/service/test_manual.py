"""Manual open/unlock/lock of a room: audited, through the same pipeline as planned actions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from test_executor_harness import LOCK, ROOM, World, make_world

from roomkey.service.crypto import SecretBox
from roomkey.service.db.models import CommandOrigin, CommandState
from roomkey.service.manual import (
    ManualError,
    UnknownRoomError,
    manual_action,
    wait_for_commands,
)


@pytest.fixture
async def world(engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path) -> AsyncIterator[World]:
    w = await make_world(engine, secret_box, tmp_path, bolt_state="day_lock")
    try:
        yield w
    finally:
        await w.close()


async def test_manual_open_is_sent_once_confirmed_and_audited(world: World) -> None:
    (result,) = await manual_action(world.ctx, ROOM, "open", actor="alice@venue")
    assert result.lock_id == LOCK
    assert result.command == "open"
    assert result.state == "sent"
    assert result.decision == "independent"
    await world.advance(12)
    (command,) = await world.commands()
    assert command.id == result.command_id
    assert command.origin is CommandOrigin.MANUAL
    assert command.actor == "alice@venue"
    assert command.state is CommandState.CONFIRMED
    assert [r.action for r in world.bridge_commands()] == ["open"]
    (entry,) = await world.audit()
    assert entry.actor == "alice@venue"
    assert entry.action == "manual.open"
    assert entry.target == f"room:{ROOM}/lock:{LOCK}"
    assert entry.details is not None
    assert entry.details["command_id"] == command.id
    # The lock re-latched by itself (key 255) after the OPEN: state follows the events.
    assert (await world.lock_row()).bolt_state == "day_lock"


async def test_rooms_are_found_by_id_or_name_and_actions_map_to_commands(world: World) -> None:
    (lock,) = await manual_action(world.ctx, "the vault", "lock", actor="bob")
    assert lock.command == "night_lock"
    await world.advance(12)
    (unlock,) = await manual_action(world.ctx, str(ROOM), "unlock", actor="bob")
    assert unlock.command == "day_lock"
    await world.advance(12)
    assert [r.action for r in world.bridge_commands()] == ["night_lock", "day_lock"]
    assert [e.action for e in await world.audit()] == ["manual.lock", "manual.unlock"]


async def test_bad_requests_are_refused_before_anything_happens(world: World) -> None:
    with pytest.raises(UnknownRoomError):
        await manual_action(world.ctx, "no such room", "open", actor="bob")
    with pytest.raises(ManualError):
        await manual_action(world.ctx, ROOM, "open", actor="  ")
    with pytest.raises(ValueError):
        await manual_action(world.ctx, ROOM, "explode", actor="bob")
    assert await world.commands() == []
    assert world.bridge_commands() == []


async def test_latest_pending_command_wins(world: World) -> None:
    (first,) = await manual_action(world.ctx, ROOM, "unlock", actor="a", send=False)
    (second,) = await manual_action(world.ctx, ROOM, "lock", actor="b", send=False)
    assert second.decision == "supersede"
    await world.executor.run_once()
    await world.advance(12)
    commands = {c.id: c for c in await world.commands()}
    assert commands[first.command_id].state is CommandState.SUPERSEDED
    assert commands[first.command_id].superseded_by == second.command_id
    assert commands[second.command_id].state is CommandState.CONFIRMED
    assert [r.action for r in world.bridge_commands()] == ["night_lock"]


async def test_equal_requests_coalesce_into_one_open(world: World) -> None:
    (first,) = await manual_action(world.ctx, ROOM, "open", actor="a", send=False)
    (again,) = await manual_action(world.ctx, ROOM, "open", actor="b", send=False)
    assert again.decision == "coalesce"
    assert again.command_id == first.command_id
    await world.executor.run_once()
    (sent_again,) = await manual_action(world.ctx, ROOM, "open", actor="c")
    assert sent_again.decision == "coalesce"  # still on the wire: no second OPEN
    await world.advance(12)
    assert [r.action for r in world.bridge_commands()] == ["open"]
    assert len(await world.commands()) == 1
    assert len(await world.audit()) == 3


async def test_a_new_command_queues_behind_one_on_the_wire(world: World) -> None:
    (first,) = await manual_action(world.ctx, ROOM, "lock", actor="a")
    (queued,) = await manual_action(world.ctx, ROOM, "unlock", actor="a")
    assert queued.decision == "queue"
    assert queued.state == "pending"  # not sent while the first may still be moving the bolt
    assert [r.action for r in world.bridge_commands()] == ["night_lock"]
    await world.advance(12)  # the first is confirmed
    await world.executor.run_once()
    await world.advance(12)
    commands = {c.id: c for c in await world.commands()}
    assert commands[first.command_id].state is CommandState.CONFIRMED
    assert commands[queued.command_id].state is CommandState.CONFIRMED
    assert [r.action for r in world.bridge_commands()] == ["night_lock", "day_lock"]


async def test_wait_for_commands_follows_the_clock(world: World) -> None:
    (result,) = await manual_action(world.ctx, ROOM, "lock", actor="a")
    waiter = asyncio.create_task(wait_for_commands(world.ctx, [result.command_id], within=30))
    for _ in range(40):
        await asyncio.sleep(0)
        await world.advance(0.5)
        if waiter.done():
            break
    states = await waiter
    assert states == {result.command_id: CommandState.CONFIRMED}


async def test_a_queued_command_gets_its_own_time_after_the_one_before_it(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    # No webhooks: the first command is never confirmed and holds the lock to its deadline.
    w = await make_world(engine, secret_box, tmp_path, bridge_webhook=False)
    try:
        (first,) = await manual_action(w.ctx, ROOM, "unlock", actor="a")
        (queued,) = await manual_action(w.ctx, ROOM, "lock", actor="a")
        assert queued.decision == "queue"
        await w.advance(31)
        await w.executor.run_once()  # the first expires; the queued one goes out at once
        commands = {c.id: c for c in await w.commands()}
        assert commands[first.command_id].state is CommandState.EXPIRED
        assert commands[queued.command_id].state is CommandState.SENT
        assert [r.action for r in w.bridge_commands()] == ["day_lock", "night_lock"]
    finally:
        await w.close()
