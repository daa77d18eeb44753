"""CLI commands that talk to the world: manual door commands and ``sync``, through both
simulators and a running roomkey service on loopback (real uvicorn servers, real time at
warp 1 with fast lock timings). The CLI runs in a worker thread, as it would in another
process, against the same SQLite file as the service.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cli_support import CLIENT_SECRET, HOOK_SECRET, as_json, invoke, lock_spec, write_config
from typer.testing import Result

from roomkey.cli.output import ExitCode
from roomkey.lockme import Token
from roomkey.service.app import create_app
from roomkey.service.config import load_config
from roomkey.service.crypto import SecretBox, generate_key
from roomkey.service.db.migrate import upgrade_async
from roomkey.service.demo import LoopbackServer, SimLockSpec, add_sim_lock
from roomkey.service.lockme_gateway import token_store
from roomkey.service.runtime import Service
from roomkey.sim.clock import SimClock
from roomkey.sim.lockme import LockmeSimulator
from roomkey.sim.loqed import BoltState, LockTimings, LoqedSimulator, SimConfig

pytestmark = pytest.mark.timeout(90)

WARSAW = ZoneInfo("Europe/Warsaw")

FAST = LockTimings(go_to=(0.05, 0.1), state_changed=(0.15, 0.3), relatch_after=0.4,
                   manual_state=(0.05, 0.1), bridge_lag=(0.01, 0.02))


@dataclass
class World:
    config: Path
    lockme: LockmeSimulator
    loqed: LoqedSimulator
    vault: SimLockSpec
    silent: SimLockSpec
    service: Service

    async def cli(self, *args: str) -> Result:
        return await asyncio.to_thread(invoke, *args, "--config", str(self.config))


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    key = generate_key()
    monkeypatch.setenv("ROOMKEY_SECRET_KEY", key)
    box = SecretBox([key])
    clock = SimClock(warp=1.0)  # real time: the CLI and the service use the system clock
    lockme = LockmeSimulator(clock)
    lockme.add_oauth_client("roomkey", CLIENT_SECRET, "http://127.0.0.1:8080/lockme/callback")
    dept = lockme.add_department("Escape Warsaw")
    hours = [f"{h:02d}:00:00" for h in range(9, 23)]
    for name in ("The Vault", "The Lab", "The Annex"):
        lockme.add_room(dept.id, name, hours)
    loqed = LoqedSimulator(clock, config=SimConfig(seed=3, timings=FAST))
    loqed.socket_mode = True
    servers: list[LoopbackServer] = []
    service: Service | None = None
    try:
        for app in (lockme.app, loqed.app):
            server = LoopbackServer(app)
            await server.start()
            servers.append(server)
        await clock.start()
        lockme_url, loqed_url = servers[0].url, servers[1].url
        vault = add_sim_lock(loqed, roomkey_id="vault-door", name="Vault", bridge_id="b1",
                             loqed_url=loqed_url)
        silent = add_sim_lock(loqed, roomkey_id="lab-door", name="Lab", bridge_id="b2",
                              loqed_url=loqed_url)
        annex = loqed.add_bridge("b3")
        annex_lock = loqed.add_lock(annex.bridge_id, name="Annex")
        config = write_config(
            tmp_path,
            locks=[vault, silent],
            rooms=[(101, "The Vault", ["vault-door"]), (102, "The Lab", ["lab-door"]),
                   (103, "The Annex", ["annex-door"])],
            lockme_url=lockme_url,
            loqed={"transport_order": ["bridge", "cloud"], "command_deadline_seconds": 30},
        )
        # A lock reachable only through the Integrations API, with a token LOQED refuses.
        config.write_text(
            config.read_text(encoding="utf-8")
            + f'\n[[locks]]\nid = "annex-door"\nname = "Annex"\n[locks.cloud]\n'
            f'token = "revoked-token"\nlock_id = "{annex_lock.lock_id}"\n'
            f'base_url = "{loqed_url}"\n',
            encoding="utf-8",
        )
        cfg = load_config(config)
        token_store(cfg, box).save(Token.model_validate(lockme.issue_token("roomkey")))
        await upgrade_async(cfg.service.db_url())
        service = Service(cfg, secret_box=box, instance_id="service")
        roomkey = LoopbackServer(create_app(service), lifespan="on")
        await roomkey.start()
        servers.append(roomkey)
        lockme.configure_department(dept.id,
                                    webhook_url=f"{roomkey.url}/hooks/lockme/{HOOK_SECRET}")
        loqed.add_bridge_webhook("b1", f"{roomkey.url}/hooks/loqed/bridge/vault-door")
        # b2 (the Lab) has no webhook: its lock moves, but roomkey never hears about it.
        yield World(config, lockme, loqed, vault, silent, service)
    finally:
        for server in reversed(servers):
            await server.stop()
        if service is not None:
            await service.aclose()
        await loqed.aclose()
        await lockme.aclose()
        await clock.stop()


async def test_unlock_waits_for_the_lock_to_confirm(world: World) -> None:
    result = await world.cli("unlock", "101", "--actor", "alice", "--timeout", "20")
    assert result.exit_code == ExitCode.OK, result.stderr
    data = as_json(result)
    assert data["actor"] == "alice"
    assert data["waited"] is True
    (command,) = data["commands"]
    assert command["lock"] == "vault-door"
    assert command["command"] == "day_lock"
    assert command["state"] == "confirmed"
    assert world.loqed.lock(world.vault.loqed_id).bolt_state is BoltState.DAY_LOCK
    assert [r.action for r in world.loqed.received(world.vault.loqed_id)] == ["day_lock"]

    found = as_json(await world.cli("events", "--lock", "vault-door"))
    linked = [e for e in found if e["command_id"] == command["command_id"]]
    assert {e["kind"] for e in linked} == {"go_to_state", "state_changed"}


async def test_open_by_room_name_then_lock_without_waiting(world: World) -> None:
    opened = await world.cli("open", "the vault", "--timeout", "20")
    assert opened.exit_code == ExitCode.OK, opened.stderr
    assert as_json(opened)["commands"][0]["state"] == "confirmed"

    locked = await world.cli("lock", "101", "--no-wait")
    assert locked.exit_code == ExitCode.OK, locked.stderr
    (command,) = as_json(locked)["commands"]
    assert command["command"] == "night_lock"
    assert command["state"] in ("sent", "accepted", "confirmed")

    async def bolted() -> bool:
        return world.loqed.lock(world.vault.loqed_id).bolt_state is BoltState.NIGHT_LOCK

    for _ in range(200):
        if await bolted():
            break
        await asyncio.sleep(0.05)
    assert await bolted()
    assert [r.action for r in world.loqed.received(world.vault.loqed_id)] == [
        "open", "night_lock"
    ]


async def test_a_move_nobody_confirms_exits_7(world: World) -> None:
    result = await world.cli("unlock", "The Lab", "--timeout", "1")
    assert result.exit_code == ExitCode.NOT_CONFIRMED
    assert "not confirmed by the lock in time" in result.stderr
    assert as_json(result)["commands"][0]["state"] in ("sent", "accepted")
    # The lock did receive it: only the confirmation is missing.
    assert [r.action for r in world.loqed.received(world.silent.loqed_id)] == ["day_lock"]


async def test_a_refused_command_exits_5(world: World) -> None:
    result = await world.cli("unlock", "103", "--timeout", "10")
    assert result.exit_code == ExitCode.DOOR_FAILED, result.stderr
    (command,) = as_json(result)["commands"]
    assert command["state"] == "failed"
    assert command["reason"] == "unauthorized"
    assert "door command failed" in result.stderr
    assert "revoked-token" not in result.stderr + result.stdout


async def test_sync_reads_lockme_and_plans(world: World) -> None:
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).astimezone(WARSAW).date()
    # Let the service's own start-up reconciliation finish first, and keep webhooks away:
    # this booking must reach roomkey through `roomkey sync` only.
    for _ in range(400):
        if all(s.passes > 0 for s in world.service.supervisor.status() if s.name == "reconcile"):
            break
        await asyncio.sleep(0.025)
    world.lockme.configure_department(min(world.lockme.departments), webhook_active=False)
    booked = world.lockme.book(101, tomorrow.isoformat(), "15:00:00", source="panel")
    result = await world.cli("sync", "--days", "2", "--force")
    assert result.exit_code == ExitCode.OK, result.stderr
    report: dict[str, Any] = as_json(result)
    assert report["ran"] is True
    assert booked in report["added"] + report["changed"], report
    assert report["failures"] == []
    plan = as_json(await world.cli("plan", "--room", "101", "--days", "3"))
    assert [r["kind"] for r in plan if booked in r["reservations"]] == ["unlock", "lock"]
    again = as_json(await world.cli("sync", "--days", "2", "--force"))
    assert booked not in again["added"]


async def test_sync_with_lockme_down_exits_6(world: World, tmp_path: Path) -> None:
    (tmp_path / "down").mkdir()
    other = write_config(tmp_path / "down", locks=[lock_spec()], lockme_url="http://127.0.0.1:9")
    upgraded = await asyncio.to_thread(invoke, "db", "upgrade", "--config", str(other))
    assert upgraded.exit_code == 0
    result = await asyncio.to_thread(invoke, "sync", "--config", str(other), "--force")
    assert result.exit_code in (ExitCode.UNREACHABLE, ExitCode.FAILURE)
    assert "Traceback" not in result.stderr
    assert CLIENT_SECRET not in result.stderr + result.stdout
