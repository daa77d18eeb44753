"""The executor's due-time path: simultaneous actions of several locks go out together.

Door-1 is the simulated lock of the harness; door-2 and door-3 are extra configured locks
whose transport is a gate (a :class:`LockTransport` that records the command and waits until
the test opens it), so a send can be held "on the wire" as long as the test needs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine
from test_executor_harness import KEY_SECRET, LOCK, ROOM, World, make_world

from roomkey.service.commands import DoorCommand, Transport
from roomkey.service.crypto import SecretBox
from roomkey.service.db.models import (
    Command,
    CommandAttempt,
    CommandState,
    DoorActionKind,
    DoorActionStatus,
)
from roomkey.service.db.plans import ActionSpec, upsert_door_actions

GATED = ("door-2", "door-3")


class GateTransport:
    """A bridge-like transport that holds every send until :attr:`gate` opens."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.sent: list[DoorCommand] = []
        self.attempts_on_record: list[int] = []

    @property
    def kind(self) -> Transport:
        return Transport.BRIDGE

    @property
    def key_local_id(self) -> int | None:
        return 1

    def supports(self, command: DoorCommand) -> bool:
        return not command.is_setting

    async def send(self, command: DoorCommand) -> None:
        # What is committed at the moment the request would leave.
        async with self.world.service.session_factory() as session:
            rows = (await session.execute(select(CommandAttempt))).scalars().all()
        self.attempts_on_record.append(len(rows))
        self.sent.append(command)
        self.started.set()
        await self.gate.wait()


def _extra_locks() -> str:
    text = ""
    for i, lock_id in enumerate(GATED, start=2):
        text += f"""
[[locks]]
id = "{lock_id}"
name = "Gated door {i}"
loqed_id = "GATED{i:015d}"

[locks.bridge]
url = "http://loqed.sim/bridges/gated{i}"
key_secret = "{KEY_SECRET}"
local_key_id = 1
bridge_key = "{KEY_SECRET}"
"""
    return text


@pytest.fixture
async def world(engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path) -> AsyncIterator[World]:
    w = await make_world(
        engine, secret_box, tmp_path, transports=("bridge",), extra_loqed=_extra_locks()
    )
    try:
        yield w
    finally:
        await w.close()


def _gate(world: World, lock_id: str) -> GateTransport:
    gate = GateTransport(world)
    world.ctx._transports[lock_id] = [gate]  # what cached_transports serves for the lock
    return gate


async def _plan(world: World, *specs: tuple[str, float]) -> None:
    """An unlock per ``(lock, seconds from now)``, all in the harness room's plan."""
    now = world.now()
    actions = [
        ActionSpec(
            key=f"{ROOM}:{lock_id}:unlock:{i}",
            room_id=ROOM,
            lock_id=lock_id,
            kind=DoorActionKind.UNLOCK,
            planned_at=now + dt.timedelta(seconds=offset),
            reservation_ids=(),
        )
        for i, (lock_id, offset) in enumerate(specs)
    ]
    async with world.service.session_factory() as session, session.begin():
        await upsert_door_actions(session, ROOM, actions, now=now)


async def _until(condition: Any, what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_simultaneous_actions_of_several_locks_fire_in_one_transaction_and_go_out_together(
    world: World, engine: AsyncEngine
) -> None:
    gates = [_gate(world, lock_id) for lock_id in GATED]
    await _plan(world, (LOCK, 0.0), ("door-2", 0.0), ("door-3", 0.0))
    await world.executor.seed_lock_states()
    transactions: list[int] = []

    def on_begin(_conn: Any) -> None:
        transactions.append(1)

    event.listen(engine.sync_engine, "begin", on_begin)
    try:
        handled = await world.executor.fire_and_start()
    finally:
        event.remove(engine.sync_engine, "begin", on_begin)
    assert len(handled) == 3
    assert len(transactions) == 1  # claims, commands and first attempts: one transaction
    # Both gated sends are on the wire at the same time (not one after the other), and
    # each found all three attempts already committed.
    await _until(lambda: all(g.started.is_set() for g in gates), "both gated sends started")
    assert [g.sent for g in gates] == [[DoorCommand.DAY_LOCK], [DoorCommand.DAY_LOCK]]
    assert all(g.attempts_on_record == [3] for g in gates)
    await _until(lambda: bool(world.bridge_commands()), "the simulated lock got its command")
    for gate in gates:
        gate.gate.set()
    await world.executor.drain()
    commands = await world.commands()
    assert sorted(c.lock_id for c in commands) == sorted([LOCK, *GATED])
    assert all(c.state in (CommandState.SENT, CommandState.ACCEPTED) for c in commands)
    for command in commands:
        attempts = await world.attempts(command.id)
        assert [(a.transport, a.outcome) for a in attempts] == [("bridge", "accepted_by_transport")]
        assert attempts[0].started_at == commands[0].sending_at  # one moment for all
    assert {a.status for a in await world.actions()} == {DoorActionStatus.DONE}


async def test_a_lock_still_on_the_wire_does_not_hold_back_another_locks_next_action(
    world: World,
) -> None:
    (gate, _other) = (_gate(world, "door-2"), _gate(world, "door-3"))
    start = world.now()
    await _plan(world, ("door-2", 0.0), (LOCK, 5.0))
    first = asyncio.create_task(world.executor.step())
    await _until(gate.started.is_set, "door-2's send started")
    # The pass stays with the hanging send only until door-1's moment comes (time moves
    # in steps: the pass registers its sleep on the clock after its queries).
    for _ in range(10):
        await asyncio.sleep(0.05)
        if first.done():
            break
        await world.advance(1.0)
    assert first.done()
    assert first.result() == 0.0
    assert world.now() < start + dt.timedelta(seconds=10)  # before door-2's deadline
    second = asyncio.create_task(world.executor.step())
    await _until(lambda: bool(world.bridge_commands()), "door-1's command went out")
    (door2,) = [c for c in await world.commands() if c.lock_id == "door-2"]
    assert door2.state is CommandState.SENDING  # still waiting for its answer
    gate.gate.set()
    await asyncio.wait_for(second, timeout=30)
    await world.executor.drain()
    states = {c.lock_id: c.state for c in await world.commands()}
    assert states["door-2"] is CommandState.SENT
    assert states[LOCK] in (CommandState.SENT, CommandState.ACCEPTED, CommandState.CONFIRMED)


async def test_a_second_action_of_the_same_lock_in_one_batch_follows_the_supersede_rules(
    world: World,
) -> None:
    now = world.now()
    async with world.service.session_factory() as session, session.begin():
        # a lock action falling due in the same batch as the (earlier) unlock of the lock
        await upsert_door_actions(
            session,
            ROOM,
            [
                ActionSpec(
                    key=f"{ROOM}:{LOCK}:unlock:0",
                    room_id=ROOM,
                    lock_id=LOCK,
                    kind=DoorActionKind.UNLOCK,
                    planned_at=now - dt.timedelta(seconds=1),
                    reservation_ids=(),
                ),
                ActionSpec(
                    key=f"{ROOM}:{LOCK}:lock:1",
                    room_id=ROOM,
                    lock_id=LOCK,
                    kind=DoorActionKind.LOCK,
                    planned_at=now,
                    reservation_ids=(),
                ),
            ],
            now=now,
        )
    await world.executor.run_once()
    rows = await world.rows(Command, order=Command.created_at)
    # Latest wins: one pending per lock, the earlier one superseded before it was sent.
    assert [(r.action.value, r.state) for r in rows] == [
        ("day_lock", CommandState.SUPERSEDED),
        ("night_lock", CommandState.SENT),
    ]
    assert rows[0].superseded_by == rows[1].id
    assert [r.action for r in world.bridge_commands()] == ["night_lock"]


async def test_every_lock_shares_one_http_client_when_none_is_injected(world: World) -> None:
    from roomkey.service.executor import LoqedContext
    from roomkey.service.transports import BridgeTransport

    ctx = LoqedContext(
        config=world.service.config,
        sessions=world.service.session_factory,
        clock=world.clock,
        owner="replica-z",
    )
    bridges = [ctx.cached_transports(lock_id)[0] for lock_id in (LOCK, *GATED)]
    assert all(isinstance(b, BridgeTransport) for b in bridges)
    shared = ctx.shared_http()
    assert all(b.client._http is shared for b in bridges)  # type: ignore[attr-defined]
    await shared.aclose()
