"""Scale-out suite: three ``roomkey serve`` replicas on one PostgreSQL database, behind a
round-robin load balancer that receives every Lockme and LOQED webhook, with booking
traffic; one replica is SIGKILLed mid-run (at the moment a door command is on the wire) and
not restarted. The oracle of the crash suite then checks that no work was done twice (no
command for one planned action twice, no lock receiving a command twice) and nothing was
lost (every message applied and read, every due door action executed or reported).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from harness.balancer import Balancer
from harness.chaos import ChaosPlan, inject_latency, run_chaos
from harness.modes import pick, record_figures
from harness.oracle import sync_engine
from harness.pg import create_database, drop_database
from harness.serve import VENV_BIN, ServeProcess
from harness.world import free_port, make_world

from roomkey.service.demo import LoopbackServer

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.timeout(pick(600, 3600))]

REPLICAS = 3


def db_upgrade(proc: ServeProcess) -> None:
    """``roomkey db upgrade`` once; the replicas then start with ``--no-migrate``."""
    done = subprocess.run(
        [str(VENV_BIN / "roomkey"), "db", "upgrade", "--config", str(proc.config), "--json"],
        capture_output=True, timeout=120, check=False, env=proc.env(),
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]


async def test_three_replicas_one_killed_do_nothing_twice_and_lose_nothing(
    tmp_path: Path,
) -> None:
    db_url = create_database("roomkey_scale")
    world = await make_world(rooms=pick(5, 6), seed=7)
    engine = sync_engine(db_url)
    replicas: list[ServeProcess] = []
    for index in range(REPLICAS):
        port = free_port()
        config = world.write_config(
            tmp_path, db_url=db_url, port=port, replica_id=f"replica-{index + 1}"
        )
        replicas.append(
            ServeProcess(
                config, port=port, secret_key=world.secrets.secret_key,
                log_path=tmp_path / f"replica-{index + 1}.log", migrate=False,
            )
        )
    balancer = Balancer(lambda: [p.url for p in replicas if p.alive])
    front = LoopbackServer(balancer)
    plan = ChaosPlan(
        seed=pick(99, 9999),
        traffic_seconds=pick(8.0, 240.0),
        op_interval=pick(0.3, 0.25),
        near_every=pick(1.5, 5.0),
        near_earliest=8.0,
        near_latest=pick(14.0, 40.0),
        kills=1,
        restart=False,
        aimed_share=1.0,
        lockme_latency=0.02,
    )
    try:
        db_upgrade(replicas[0])
        await front.start()
        world.point_webhooks_at(front.url)
        inject_latency(world, plan)
        for proc in replicas:
            await proc.start()
        result = await run_chaos(world, engine, replicas, plan)
    finally:
        for proc in replicas:
            await proc.stop()
        await front.stop()
        await balancer.aclose()
        await world.close()
        engine.dispose()
        drop_database(db_url)
    figures = {
        **result.figures(),
        "replicas": REPLICAS,
        "requests_balanced": balancer.forwarded,
        "failovers": balancer.failovers,
    }
    record_figures("scale_out", "postgres", figures)
    violations = result.verdicts.violations()
    assert not violations, f"guarantees broken: {violations}\nfigures: {figures}"
    assert result.kills == 1, f"no replica was killed: {figures}"
    assert result.settled, f"the surviving replicas did not settle: {figures}"
    assert result.verdicts.executed > 0, figures
    # Enough traffic to mean something; a loaded 2-core machine produces fewer bookings.
    assert result.verdicts.messages >= 10, figures
