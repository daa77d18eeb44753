"""Two executors (two engines, two replicas) on one database race over the same work and
never send the same command twice — counted on what the simulator's lock received."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine
from test_executor_harness import ROOM, World, make_world

from roomkey.service.crypto import SecretBox
from roomkey.service.db.engine import create_engine
from roomkey.service.db.models import CommandState, DoorActionKind, DoorActionStatus
from roomkey.service.manual import manual_action
from roomkey.sim.loqed.model import Verdict


async def _pair(
    engine: AsyncEngine, db_url: str, secret_box: SecretBox, tmp_path: Path
) -> tuple[World, World, AsyncEngine]:
    a = await make_world(engine, secret_box, tmp_path, instance_id="replica-a")
    engine_b = create_engine(db_url)
    b = await make_world(
        engine_b, secret_box, tmp_path, instance_id="replica-b", clock=a.clock, sim=a.sim
    )
    return a, b, engine_b


async def test_two_executors_share_due_actions_without_sending_any_twice(
    engine: AsyncEngine, db_url: str, secret_box: SecretBox, tmp_path: Path
) -> None:
    a, b, engine_b = await _pair(engine, db_url, secret_box, tmp_path)
    try:
        kinds = [DoorActionKind.UNLOCK, DoorActionKind.LOCK] * 4
        keys = await a.plan(*[(kind, 30.0 + 60.0 * i) for i, kind in enumerate(kinds)])
        for _ in kinds:
            await a.advance(60)
            await asyncio.gather(a.executor.run_once(), b.executor.run_once())
        await a.advance(60)
        await asyncio.gather(a.executor.run_once(), b.executor.run_once())

        actions = {x.key: x for x in await a.actions()}
        assert all(actions[k].status is DoorActionStatus.DONE for k in keys)
        commands = await a.commands()
        assert len(commands) == len(keys)
        assert sorted(c.door_action_key or "" for c in commands) == sorted(keys)
        assert all(c.state is CommandState.CONFIRMED for c in commands)
        for command in commands:
            assert len(await a.attempts(command.id)) == 1
        received = a.bridge_commands()
        assert len(received) == len(keys)
        assert all(r.verdict is Verdict.ACCEPTED for r in received)
        expected = ["day_lock" if k is DoorActionKind.UNLOCK else "night_lock" for k in kinds]
        assert [r.action for r in received] == expected
        assert a.executor.attempts_made + b.executor.attempts_made == len(keys)
    finally:
        await b.close()
        await a.close()
        await engine_b.dispose()


async def test_two_executors_racing_for_the_same_pending_commands_send_each_once(
    engine: AsyncEngine, db_url: str, secret_box: SecretBox, tmp_path: Path
) -> None:
    a, b, engine_b = await _pair(engine, db_url, secret_box, tmp_path)
    try:
        created: list[str] = []
        for i in range(6):
            action = ("open", "unlock", "lock")[i % 3]
            (result,) = await manual_action(a.ctx, ROOM, action, actor="ops", send=False)
            created.append(result.command_id)
            # Both replicas pick up work at the same moment, several times.
            await asyncio.gather(
                a.executor.run_once(),
                b.executor.run_once(),
                b.executor.send_now([result.command_id]),
                a.executor.send_now([result.command_id]),
            )
            await a.advance(20)
        commands = {c.id: c for c in await a.commands()}
        assert set(created) <= set(commands)
        sends = 0
        for command in commands.values():
            attempts = await a.attempts(command.id)
            assert len(attempts) <= 1
            sends += len(attempts)
        received = a.bridge_commands()
        assert len(received) == sends == len(commands)
        assert a.executor.attempts_made + b.executor.attempts_made == sends
        assert all(c.state is CommandState.CONFIRMED for c in commands.values())
    finally:
        await b.close()
        await a.close()
        await engine_b.dispose()
