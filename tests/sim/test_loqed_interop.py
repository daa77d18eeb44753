"""Interop proof: the real ``loqedAPI`` package (Home Assistant's LOQED library, from PyPI)
drives the simulator's bridge over loopback, and accepts the simulator's signed webhooks.

loqedAPI signs with the real wall clock and checks webhook timestamps against it (±10 s),
so the simulated clock starts at the real time and short lock timings keep it close.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from loqedAPI import loqed
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from test_loqed_support import serve_app

from roomkey.sim.clock import SimClock
from roomkey.sim.loqed import (
    BoltState,
    LockTimings,
    LoqedServer,
    LoqedSimulator,
    SimConfig,
    Verdict,
)

LOCK_ID = "Yq1gK4oeE9KWe0ByxjX2"


@pytest.fixture
async def world() -> AsyncIterator[tuple[LoqedSimulator, str]]:
    clock = SimClock(start=time.time(), manual=True)
    timings = LockTimings(go_to=(0.5, 0.5), state_changed=(1.5, 1.5), relatch_after=1.0,
                          bridge_lag=(0.1, 0.1))
    sim = LoqedSimulator(clock, config=SimConfig(timings=timings))
    sim.add_bridge("b1")
    sim.add_lock("b1", lock_id=LOCK_ID, numeric_id=6148, name="Room 1")
    sim.add_key(LOCK_ID, local_id=1, name="home assistant")
    async with LoqedServer(sim) as server:
        yield sim, server.url


@pytest.mark.parametrize("prefix", ["", "/bridges/b1"])
async def test_loqedapi_drives_the_bridge_and_accepts_its_webhooks(
    world: tuple[LoqedSimulator, str], prefix: str
) -> None:
    sim, base = world
    bridge, key = sim.bridges["b1"], sim.locks[LOCK_ID].keys[1]
    verdicts: list[Any] = []
    holder: dict[str, loqed.Lock] = {}

    async def hook(request: Request) -> PlainTextResponse:
        body = (await request.body()).decode()
        result = await holder["lock"].receiveWebhook(
            body, request.headers["HASH"], request.headers["TIMESTAMP"]
        )
        verdicts.append(result)
        return PlainTextResponse("ok")

    receiver = Starlette(routes=[Route("/api/webhook/abc", hook, methods=["POST"])])
    async with serve_app(receiver) as hook_base, aiohttp.ClientSession() as session:
        api = loqed.LoqedAPI(loqed.APIClient(session, base + prefix))
        details = await api.async_get_lock_details()
        assert details["bolt_state"] == "night_lock"
        lock = await api.async_get_lock(key.secret, bridge.bridge_key, key.local_id, "Room 1")
        holder["lock"] = lock
        assert lock.id == bridge.mac_wifi
        assert lock.online

        # webhook list / create (+ "exists already") / delete
        url = f"{hook_base}/api/webhook/abc"
        assert await lock.getWebhooks() == []
        assert await lock.registerWebhook(url) == "CREATED"
        assert await lock.registerWebhook(url) == "EXISTS ALREADY"
        await lock.registerWebhook(f"{hook_base}/api/webhook/old", flags=399)
        hooks = await lock.getWebhooks()
        assert [h["url"] for h in hooks] == [url, f"{hook_base}/api/webhook/old"]
        await lock.deleteWebhook(hooks[1]["id"])
        assert [h["url"] for h in await lock.getWebhooks()] == [url]

        # unlock (day lock), lock (night lock), open — each signed by loqedAPI itself
        await lock.unlock()
        await sim.clock.advance(3)
        assert sim.locks[LOCK_ID].bolt_state is BoltState.DAY_LOCK
        assert lock.bolt_state == "latch"
        await lock.lock()
        await sim.clock.advance(3)
        assert lock.bolt_state == "night_lock"
        await lock.open()
        await sim.clock.advance(4)
        assert lock.bolt_state == "latch"  # opened, then re-latched by itself
        assert lock.last_key_id == 255
        await lock.update()
        assert lock.bolt_state == "day_lock"

    assert [r.verdict for r in sim.received(LOCK_ID)] == [Verdict.ACCEPTED] * 3
    assert len(verdicts) == 7
    rejected = [v for v in verdicts if "error" in v]
    assert rejected == []
    assert [v["event_type"] for v in verdicts] == [
        "GO_TO_STATE_MANUAL_LOCK_REMOTE_LATCH", "STATE_CHANGED_LATCH",
        "GO_TO_STATE_MANUAL_LOCK_REMOTE_NIGHT_LOCK", "STATE_CHANGED_NIGHT_LOCK",
        "GO_TO_STATE_INSTANTOPEN_OPEN", "STATE_CHANGED_OPEN", "STATE_CHANGED_LATCH",
    ]


async def test_loqedapi_rejects_a_tampered_delivery(world: tuple[LoqedSimulator, str]) -> None:
    """The positive result above is meaningful: the same check refuses a wrong bridge key."""
    sim, base = world
    key = sim.locks[LOCK_ID].keys[1]
    results: list[Any] = []
    holder: dict[str, loqed.Lock] = {}

    async def hook(request: Request) -> PlainTextResponse:
        results.append(await holder["lock"].receiveWebhook(
            (await request.body()).decode(), request.headers["HASH"],
            request.headers["TIMESTAMP"]))
        return PlainTextResponse("ok")

    receiver = Starlette(routes=[Route("/h", hook, methods=["POST"])])
    async with serve_app(receiver) as hook_base, aiohttp.ClientSession() as session:
        api = loqed.LoqedAPI(loqed.APIClient(session, base))
        wrong_key = "d3JvbmcgYnJpZGdlIGtleQ=="
        holder["lock"] = await api.async_get_lock(key.secret, wrong_key, 1, "Room 1")
        sim.add_bridge_webhook("b1", f"{hook_base}/h")
        await sim.set_online(LOCK_ID, False)
        await sim.clock.advance(1)
    assert len(results) == 1
    assert results[0]["error"] == "Hash incorrect"


async def test_loqedapi_cloud_client_lists_locks(world: tuple[LoqedSimulator, str]) -> None:
    from loqedAPI import cloud_loqed

    sim, base = world
    token = sim.add_api_token([LOCK_ID])
    async with aiohttp.ClientSession() as session:
        cloud = cloud_loqed.LoqedCloudAPI(
            cloud_loqed.CloudAPIClient(session, token.token, cloud_base_url=base)
        )
        data = await cloud.async_get_locks()
    (lock,) = data["data"]
    assert lock["id"] == LOCK_ID
    assert lock["local_id"] == token.key_ids[LOCK_ID]
