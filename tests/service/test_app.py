"""The HTTP app: probes, metrics, typed errors, lifespan-managed workers."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from test_runtime_harness import HOOK_SECRET, Stack, make_stack, receiver_client

from roomkey.service.app import create_app
from roomkey.service.crypto import SecretBox
from roomkey.service.db.migrate import head_revision


@pytest.fixture
async def stack(engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path) -> AsyncIterator[Stack]:
    s = await make_stack(engine, secret_box, tmp_path)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with receiver_client(stack.app) as c:
        yield c


async def test_health_is_always_ok(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_ready_needs_running_workers_and_a_migrated_database(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    r = await client.get("/ready")
    assert r.status_code == 503
    body = r.json()
    assert body["database"] is True
    assert body["migrations"] is True
    assert body["workers"] is False
    assert body["status"] == "not_ready"

    await stack.service.start()
    try:
        r = await client.get("/ready")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "ready"
    finally:
        await stack.service.stop()


async def test_ready_reports_a_database_behind_the_code(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    await stack.service.start()
    try:
        async with stack.service.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = 'older'"))
        try:
            r = await client.get("/ready")
        finally:
            async with stack.service.engine.begin() as conn:
                await conn.execute(
                    text("UPDATE alembic_version SET version_num = :v"), {"v": head_revision()}
                )
        assert r.status_code == 503
        assert r.json()["migrations"] is False
        assert "older" in r.json()["detail"]["migrations"]
    finally:
        await stack.service.stop()


async def test_metrics_expose_counters_and_the_backlog(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    await client.post(f"/hooks/lockme/{HOOK_SECRET}", headers={"X-MessageId": "70001"})
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert 'roomkey_lockme_webhooks_total{outcome="stored"} 1.0' in r.text
    assert 'roomkey_lockme_message_backlog{state="received"} 1.0' in r.text
    assert HOOK_SECRET not in r.text


async def test_unknown_paths_get_typed_json_errors(client: httpx.AsyncClient) -> None:
    r = await client.get("/no/such/thing")
    assert r.status_code == 404
    assert r.json() == {"error": {"type": "not_found", "message": "Not Found"}}
    assert (await client.get("/openapi.json")).status_code == 404  # no schema served


async def test_lifespan_starts_and_stops_the_workers(stack: Stack) -> None:
    app = create_app(stack.service)
    async with app.router.lifespan_context(app):
        assert stack.service.supervisor.running
        names = {s.name for s in stack.service.supervisor.status()}
        assert {"lockme-messages", "reconcile"} <= names
        await asyncio.sleep(0)
    assert not stack.service.supervisor.running
    assert all(not s.running for s in stack.service.supervisor.status())


async def test_running_service_processes_a_webhook_on_its_own(stack: Stack) -> None:
    """Workers woken by the receiver: no manual processing in this test."""
    await stack.service.start()
    try:
        stack.sim.book(stack.room_a, "2027-02-01", "18:00:00", source="panel", status=1)
        await stack.deliver()
        (message,) = stack.sim.messages()
        for _ in range(1000):
            if stack.sim_message(message.id).read:
                break
            await asyncio.sleep(0.01)
        assert stack.sim_message(message.id).read
        assert len(await stack.actions()) == 2
    finally:
        await stack.service.stop()


@pytest.mark.skipif(
    importlib.util.find_spec("roomkey.service.hooks_loqed") is None,
    reason="the LOQED receiver is not built yet",
)
async def test_loqed_routes_are_mounted(client: httpx.AsyncClient) -> None:
    # the routes exist (POST only): GET is "method not allowed", not "not found"
    for path in ("/hooks/loqed/bridge/door-a", "/hooks/loqed/cloud/whatever"):
        r = await client.get(path)
        assert r.status_code == 405, path
        assert r.json()["error"]["type"] == "method_not_allowed"


@pytest.mark.skipif(
    importlib.util.find_spec("roomkey.service.executor") is None,
    reason="the executor is not built yet",
)
async def test_service_picks_up_the_executor_worker(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    from test_runtime_harness import config_text

    from roomkey.service.config import parse_config
    from roomkey.service.runtime import Service

    config = parse_config(config_text(101, 102), base_dir=tmp_path)
    service = Service(config, engine=engine, secret_box=secret_box)
    try:
        names = [s.name for s in service.supervisor.status()]
        assert names == ["lockme-messages", "reconcile", "executor", "loqed-events"]
    finally:
        await service.aclose()


async def test_lifespan_can_migrate_a_fresh_database(tmp_path: Path, secret_box: SecretBox) -> None:
    from test_runtime_harness import config_text

    from roomkey.service.config import parse_config
    from roomkey.service.db.engine import create_engine
    from roomkey.service.runtime import Service

    config = parse_config(config_text(101, 102), base_dir=tmp_path)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'fresh.sqlite3'}")
    service = Service(config, engine=engine, secret_box=secret_box, load_optional_workers=False)
    app = create_app(service, migrate=True)
    try:
        async with app.router.lifespan_context(app), receiver_client(app) as client:
            r = await client.get("/ready")
            assert r.status_code == 200, r.text
    finally:
        await service.aclose()
        await engine.dispose()
