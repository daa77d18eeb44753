"""Property: whatever the transports do, an OPEN is never sent twice.

Hypothesis drives random sequences of manual OPEN requests (each with a random fault on the
bridge and on the cloud: refused connection, connection dropped before or after the request
was processed, 503, 401), executor passes and time steps, against the real simulator.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine
from test_executor_harness import ROOM, World, make_world

from roomkey.service.crypto import SecretBox
from roomkey.service.db.models import Base, CommandAction, CommandState
from roomkey.service.manual import manual_action

FAULTS = st.sampled_from(
    [None, ("refuse",), ("drop_before",), ("drop_after",), ("status", 503), ("status", 401)]
)
STEP = st.one_of(
    st.tuples(st.just("open"), FAULTS, FAULTS, st.booleans()),
    st.tuples(st.just("advance"), st.floats(min_value=0.2, max_value=40.0)),
    st.tuples(st.just("pass")),
)
LEFT = {"accepted_by_transport", "maybe_delivered"}


async def _clear(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(delete(table))


def _fault(world: World, path: str, fault: tuple[Any, ...] | None) -> None:
    if fault is None:
        return
    if fault[0] == "status":
        world.sim.app.faults.add(path, "status", count=1, status=fault[1])
    else:
        world.sim.app.faults.add(path, fault[0], count=1)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(STEP, min_size=1, max_size=7))
async def test_an_open_is_never_sent_twice(
    engine: AsyncEngine, secret_box: SecretBox, steps: list[tuple[Any, ...]]
) -> None:
    await _clear(engine)
    scratch = tempfile.TemporaryDirectory()  # a fresh status budget file per example
    world = await make_world(engine, secret_box, Path(scratch.name), cloud_webhook=True)
    try:
        for step in steps:
            if step[0] == "open":
                world.sim.app.faults.clear()
                _fault(world, "/bridges/b1/to_lock", step[1])
                _fault(world, "/api/locks", step[2])
                await manual_action(world.ctx, ROOM, "open", actor="prop", send=step[3])
            elif step[0] == "advance":
                await world.advance(step[1])
            else:
                await world.executor.run_once()
        world.sim.app.faults.clear()
        await world.advance(60)
        await world.executor.run_once()

        commands = await world.commands()
        opens = [c for c in commands if c.action is CommandAction.OPEN]
        for command in opens:
            attempts = await world.attempts(command.id)
            left = [a for a in attempts if a.outcome in LEFT or a.outcome is None]
            assert len(left) <= 1, [(a.transport, a.outcome) for a in attempts]
            assert command.state not in (CommandState.PENDING, CommandState.SENDING)
        received = [r for r in world.bridge_commands() if r.action == "open"]
        # Every OPEN the lock saw belongs to a different command.
        assert len(received) <= len(opens)
        sent = [c for c in opens if c.attempts > 0]
        assert len(received) <= len(sent)
        event(f"OPEN commands={len(opens)}, reached the lock={len(received)}")
    finally:
        await world.close()
        scratch.cleanup()
