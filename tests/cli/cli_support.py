"""Helpers for the CLI tests: configs, a small real SQLite database, invoking the app."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from roomkey.cli.app import app
from roomkey.service.config import load_config
from roomkey.service.crypto import SecretBox
from roomkey.service.db.engine import create_engine, create_session_factory
from roomkey.service.db.inventory import sync_inventory
from roomkey.service.db.migrate import upgrade_async
from roomkey.service.db.models import (
    Command,
    CommandAction,
    CommandOrigin,
    CommandState,
    DoorAction,
    DoorActionKind,
    DoorActionStatus,
    EventSource,
    LockEvent,
    Reservation,
)
from roomkey.service.demo import SimLockSpec, config_toml

CLIENT_SECRET = "cli-client-secret-must-not-show"
HOOK_SECRET = "cli-hook-secret-must-not-show"
KEY_SECRET = base64.b64encode(b"K" * 32).decode()
BRIDGE_KEY = base64.b64encode(b"B" * 32).decode()

runner = CliRunner()


def _service_conftest() -> Any:
    """tests/service/conftest.py, loaded by path (its PostgreSQL helpers)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "service" / "conftest.py"
    spec = importlib.util.spec_from_file_location("roomkey_tests_service_conftest_cli", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def create_pg_database(prefix: str) -> str:
    url: str = _service_conftest().create_pg_database(prefix)
    return url


def drop_pg_database(url: str) -> None:
    _service_conftest().drop_pg_database(url)


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def lock_spec(
    roomkey_id: str = "vault-door", *, bridge_url: str = "http://127.0.0.1:9/bridges/b1",
    loqed_id: str = "Yq1gK4oeE9KWe0ByxjX2", key_secret: str = KEY_SECRET,
    bridge_key: str = BRIDGE_KEY,
) -> SimLockSpec:
    return SimLockSpec(
        roomkey_id=roomkey_id, name=f"{roomkey_id} lock", loqed_id=loqed_id, bridge_id="b1",
        bridge_url=bridge_url, local_key_id=1, key_secret=key_secret, bridge_key=bridge_key,
    )


def write_config(
    tmp_path: Path,
    *,
    locks: Sequence[SimLockSpec] | None = None,
    rooms: Sequence[tuple[int, str, Sequence[str]]] | None = None,
    lockme_url: str = "http://127.0.0.1:9",
    database_url: str | None = None,
    loqed: dict[str, Any] | None = None,
    name: str = "roomkey.toml",
) -> Path:
    specs = list(locks) if locks is not None else [lock_spec()]
    text = config_toml(
        lockme_url=lockme_url,
        client_id="roomkey",
        client_secret=CLIENT_SECRET,
        rooms=rooms if rooms is not None else [(101, "The Vault", [specs[0].roomkey_id])],
        locks=specs,
        data_dir="data",
        database_url=database_url,
        webhook_secret=HOOK_SECRET,
        loqed=loqed,
        service={"reconcile_days_ahead": 2},
    )
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


async def seed(config_path: Path, box: SecretBox, *, now: dt.datetime) -> dict[str, Any]:
    """Migrate, sync the inventory and add one booking with its plan, a command and events."""
    config = load_config(config_path)
    url = config.service.db_url()
    await upgrade_async(url)
    engine = create_engine(url)
    try:
        async with create_session_factory(engine)() as session, session.begin():
            await sync_inventory(session, config, box, now=now)
        start = (now + dt.timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
        end = start + dt.timedelta(hours=1)
        unlock_at = start - dt.timedelta(minutes=10)
        lock_at = end + dt.timedelta(minutes=15)
        async with create_session_factory(engine)() as session, session.begin():
            session.add(
                Reservation(
                    id=10001, room_id=101, date=start.date(), hour=start.time(),
                    start_at=start, end_at=end, status=1, source="web", extid=None,
                    data={"name": "Anna", "email": "anna@example.com"}, deleted=False,
                    created_at=now, updated_at=now,
                )
            )
            await session.flush()
            past = now - dt.timedelta(minutes=30)
            session.add_all([
                DoorAction(
                    key="r101:vault-door:past", room_id=101, lock_id="vault-door",
                    kind=DoorActionKind.UNLOCK, planned_at=past, status=DoorActionStatus.DONE,
                    reservation_ids=[10000], command_id="cmd-1", created_at=past,
                    updated_at=past, version=1,
                ),
                DoorAction(
                    key="r101:vault-door:unlock", room_id=101, lock_id="vault-door",
                    kind=DoorActionKind.UNLOCK, planned_at=unlock_at,
                    status=DoorActionStatus.PLANNED, reservation_ids=[10001],
                    created_at=now, updated_at=now, version=1,
                ),
                DoorAction(
                    key="r101:vault-door:lock", room_id=101, lock_id="vault-door",
                    kind=DoorActionKind.LOCK, planned_at=lock_at,
                    status=DoorActionStatus.PLANNED, reservation_ids=[10001],
                    created_at=now, updated_at=now, version=1,
                ),
            ])
            await session.flush()
            session.add(
                Command(
                    id="cmd-1", lock_id="vault-door", action=CommandAction.DAY_LOCK,
                    state=CommandState.CONFIRMED, origin=CommandOrigin.PLAN,
                    door_action_key="r101:vault-door:past", due_at=past,
                    deadline=past + dt.timedelta(seconds=30), created_at=past, sending_at=past,
                    sent_at=past, confirmed_at=past + dt.timedelta(seconds=6), attempts=1,
                    transport="bridge",
                )
            )
            for i, (etype, kind, state) in enumerate([
                ("GO_TO_STATE_MANUAL_LOCK_REMOTE_LATCH", "go_to_state", "day_lock"),
                ("STATE_CHANGED_LATCH", "state_changed", "day_lock"),
            ]):
                session.add(
                    LockEvent(
                        lock_id="vault-door", source=EventSource.BRIDGE, event_type=etype,
                        kind=kind, bolt_state=state, key_local_id=1,
                        occurred_at=past + dt.timedelta(seconds=2 + 4 * i),
                        received_at=past + dt.timedelta(seconds=2 + 4 * i),
                        dedupe_key=f"d{i}", command_id="cmd-1", reservation_id=10000,
                        raw={"event_type": etype},
                    )
                )
    finally:
        await engine.dispose()
    return {"unlock_at": unlock_at, "lock_at": lock_at}


def run(coro: Any) -> Any:
    return asyncio.run(coro)
