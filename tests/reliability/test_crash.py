"""Crash suite: the real ``roomkey serve`` is SIGKILLed at random moments while the
simulators drive booking traffic and lock events, and restarted each time.

Afterwards the oracle (:mod:`harness.oracle`) compares what Lockme's simulator sent and what
the LOQED simulator's locks received with the correct plan (the planner over Lockme's final
bookings): zero lost messages, nothing marked read before it was durable, zero duplicated
commands or blind retries, zero missing door actions (each due action executed within the
maximum lateness, or reported), the future plan and the reservation mirror equal to
Lockme's. One run on SQLite and one on PostgreSQL, side by side (each has its own
simulators and its own ``roomkey serve``). ``ROOMKEY_LONG=1`` runs the long version.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from harness.chaos import ChaosPlan, ChaosResult, inject_latency, run_chaos
from harness.modes import pick, record_figures
from harness.oracle import sync_engine
from harness.pg import create_database, drop_database
from harness.serve import ServeProcess
from harness.world import free_port, make_world

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(pick(600, 3600))]


def crash_plan(seed: int) -> ChaosPlan:
    return ChaosPlan(
        seed=seed,
        traffic_seconds=pick(8.0, 240.0),
        op_interval=pick(0.3, 0.25),
        near_every=pick(1.5, 6.0),
        near_earliest=8.0,
        near_latest=pick(14.0, 40.0),
        kills=pick(5, 14),
        min_uptime=pick(0.0, 16.0),
        settle_limit=pick(240.0, 420.0),
        lockme_latency=pick(0.02, 0.1),
    )


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


async def crash_run(db_url: str, tmp: Path, seed: int) -> tuple[ChaosPlan, ChaosResult]:
    """One venue, one ``roomkey serve`` on ``db_url``, killed and restarted ``kills`` times."""
    _mkdir(tmp)
    world = await make_world(rooms=pick(5, 6), seed=seed)
    engine = sync_engine(db_url)
    port = free_port()
    config = world.write_config(tmp, db_url=db_url, port=port, replica_id="crash-1")
    proc = ServeProcess(
        config, port=port, secret_key=world.secrets.secret_key, log_path=tmp / "serve.log"
    )
    plan = crash_plan(seed)
    try:
        world.point_webhooks_at(proc.url)
        inject_latency(world, plan)
        await proc.start()
        result = await run_chaos(world, engine, [proc], plan)
    finally:
        await proc.stop()
        await world.close()
        engine.dispose()
    return plan, result


async def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    pg_url = create_database("roomkey_crash")
    try:
        runs = await asyncio.gather(
            crash_run(f"sqlite+aiosqlite:///{tmp_path / 'roomkey.sqlite3'}", tmp_path / "sqlite",
                      pick(20261122, 4242)),
            crash_run(pg_url, tmp_path / "postgres", pick(20261123, 4343)),
        )
    finally:
        drop_database(pg_url)
    problems: dict[str, Any] = {}
    for backend, (plan, result) in zip(("sqlite", "postgres"), runs, strict=True):
        figures = result.figures()
        record_figures("crash", backend, figures)
        violations = result.verdicts.violations()
        if violations:
            problems[backend] = {"violations": violations, "figures": figures}
            continue
        assert result.settled, f"{backend}: roomkey did not settle after the run: {figures}"
        assert result.kills >= max(1, plan.kills * 3 // 4), figures
        assert result.restarts == result.kills, figures
        assert result.verdicts.executed > 0, figures
        assert result.verdicts.messages > 20, figures
    assert not problems, f"guarantees broken: {problems}"
