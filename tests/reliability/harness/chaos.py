"""The chaos run shared by the crash and scale-out suites.

Booking traffic runs in one task; a killer task SIGKILLs replicas at random moments (half
of them aimed at the instants door commands are on the wire) and restarts them; when the
traffic is over and every near booking's doors have moved, the run waits (bounded) for
roomkey to settle, stops the replicas and asks the oracle.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from harness.oracle import ReadWatch, Verdicts, judge
from harness.serve import ServeProcess
from harness.traffic import Traffic
from harness.world import World
from roomkey.service.db.models import Command, CommandState, LockmeMessage, MessageState
from roomkey.sim.lockme.faults import FaultRule

ACTIVE = (CommandState.PENDING, CommandState.SENDING, CommandState.SENT, CommandState.ACCEPTED)


@dataclass
class ChaosPlan:
    seed: int
    traffic_seconds: float
    op_interval: float
    near_every: float
    near_earliest: float = 15.0
    near_latest: float = 40.0
    kills: int = 4
    restart: bool = True
    aimed_share: float = 0.5
    settle_limit: float = 240.0
    min_uptime: float = 0.0
    """Real seconds a restarted replica runs at least before the next kill."""
    to_lock_latency: float = 0.8
    lockme_latency: float = 0.1


@dataclass
class ChaosResult:
    verdicts: Verdicts
    kills: int
    restarts: int
    ops: dict[str, int]
    startup_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0
    settled: bool = True

    def figures(self) -> dict[str, Any]:
        return {
            **self.verdicts.figures(),
            "kills": self.kills,
            "crashes_survived": self.restarts,
            "restarts": self.restarts,
            "lockme_operations": self.ops,
            "restart_seconds_max": round(max(self.startup_seconds), 2)
            if self.startup_seconds else None,
            "run_seconds": round(self.seconds, 1),
            "settled": self.settled,
        }


def inject_latency(world: World, plan: ChaosPlan) -> None:
    """Slow the wire a little so kills often land while a request is in flight."""
    for room in world.rooms:
        world.loqed.add_fault(
            f"/bridges/{room.lock.bridge_id}/to_lock", "latency", seconds=plan.to_lock_latency
        )
    world.lockme.faults.add(FaultRule("latency", seconds=plan.lockme_latency))


async def settled(world: World, engine: Engine) -> bool:
    """Every message read and acked, no command still in flight."""
    if not all(m.read for m in world.lockme.messages()):
        return False
    with engine.connect() as conn:
        open_messages = conn.execute(
            select(func.count()).select_from(LockmeMessage).where(
                LockmeMessage.state != MessageState.ACKED
            )
        ).scalar_one()
        active = conn.execute(
            select(func.count()).select_from(Command).where(Command.state.in_(ACTIVE))
        ).scalar_one()
    return open_messages == 0 and active == 0


async def run_chaos(
    world: World, engine: Engine, replicas: list[ServeProcess], plan: ChaosPlan
) -> ChaosResult:
    rng = random.Random(plan.seed)
    traffic = Traffic(world, rng)
    watch = ReadWatch(world, engine)
    began = time.monotonic()
    t0 = world.now()
    kill_times = sorted(
        t0 + rng.uniform(2.0, plan.traffic_seconds + plan.near_latest)
        for _ in range(round(plan.kills * (1 - plan.aimed_share)))
    )
    aimed_left = plan.kills - len(kill_times)
    done_kills = 0
    restarts = 0
    traffic_done = asyncio.Event()

    async def drive() -> None:
        nonlocal aimed_left
        next_near = t0
        while world.now() < t0 + plan.traffic_seconds:
            if world.now() >= next_near:
                if traffic.book_near(plan.near_earliest, plan.near_latest) is not None:
                    start = traffic.near_actions[-2]
                    for at in (start, start + 60.0):
                        if aimed_left > 0 and rng.random() < 0.5:
                            aimed_left -= 1
                            kill_times.append(at + rng.uniform(0.1, plan.to_lock_latency))
                            kill_times.sort()
                next_near += plan.near_every
            traffic.step()
            await asyncio.sleep(plan.op_interval)
        last_action = max(traffic.near_actions, default=world.now())
        while aimed_left > 0:  # aimed kills not placed yet: random moments before the end
            aimed_left -= 1
            kill_times.append(rng.uniform(world.now(), last_action))
        kill_times.sort()
        traffic_done.set()

    async def kill() -> None:
        nonlocal done_kills, restarts
        while True:
            last_action = max(traffic.near_actions, default=t0)
            if traffic_done.is_set() and world.now() > last_action + 2.0:
                return
            if kill_times and world.now() >= kill_times[0]:
                kill_times.pop(0)
                live = [p for p in replicas if p.alive]
                if live and (plan.restart or len(live) > 1):
                    victim = rng.choice(live)
                    victim.kill()
                    done_kills += 1
                    if plan.restart:
                        await asyncio.sleep(rng.uniform(0.0, 1.0))
                        await victim.start()
                        restarts += 1
                        if plan.min_uptime:
                            await asyncio.sleep(rng.uniform(plan.min_uptime / 2, plan.min_uptime))
            await asyncio.sleep(0.02)

    await asyncio.gather(drive(), kill())
    # every near booking's door actions are due now; wait for roomkey to settle (bounded)
    deadline = time.monotonic() + plan.settle_limit
    is_settled = False
    while time.monotonic() < deadline:
        if world.now() > max(traffic.near_actions, default=t0) + 5.0 and await settled(
            world, engine
        ):
            is_settled = True
            break
        await asyncio.sleep(0.5)
    executed_until = world.now() - 3.0
    for proc in replicas:
        await proc.stop()
    verdicts = judge(world, engine, executed_until=executed_until, watch=watch, started_at=t0)
    return ChaosResult(
        verdicts=verdicts,
        kills=done_kills,
        restarts=restarts,
        ops=dict(traffic.ops),
        startup_seconds=[s for p in replicas for s in p.startup_seconds],
        seconds=time.monotonic() - began,
        settled=is_settled,
    )
