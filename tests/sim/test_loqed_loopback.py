"""The simulator on a real loopback socket (uvicorn on a free 127.0.0.1 port)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from test_loqed_support import (
    T0,
    Receiver,
    command_url,
    create_webhook,
    list_headers,
    payload,
    serve_app,
)

from roomkey.sim.clock import SimClock
from roomkey.sim.loqed import LoqedServer, LoqedSimulator, SimKey, Verdict


@pytest.fixture
async def served(clock: SimClock) -> AsyncIterator[tuple[LoqedSimulator, LoqedServer]]:
    sim = LoqedSimulator(clock)  # real delivery client: webhooks cross real sockets too
    sim.add_bridge("b1")
    sim.add_lock("b1", lock_id="Yq1gK4oeE9KWe0ByxjX2")
    async with LoqedServer(sim) as server:
        yield sim, server


async def test_bridge_over_loopback_with_real_webhook_delivery(
    served: tuple[LoqedSimulator, LoqedServer], clock: SimClock, receiver: Receiver
) -> None:
    sim, server = served
    key = sim.add_key("Yq1gK4oeE9KWe0ByxjX2", local_id=1)
    bridge_key = sim.bridges["b1"].bridge_key
    async with serve_app(receiver.app) as hook_url, httpx.AsyncClient(
        base_url=server.url, timeout=5
    ) as client:
        assert (await client.get("/health")).json()["status"] == "ok"
        r = await create_webhook(client, bridge_key, f"{hook_url}/loqed", ts=int(T0))
        assert r.status_code == 200
        hooks = (await client.get("/webhooks", headers=list_headers(bridge_key, int(T0)))).json()
        assert hooks[0]["url"] == f"{hook_url}/loqed"
        r = await client.get(command_url(key, 2, ts=T0, encode_slash=True))
        assert r.text == "Message resent to the lock"
        await clock.advance(30)
        assert receiver.event_types() == [
            "GO_TO_STATE_MANUAL_LOCK_REMOTE_LATCH", "STATE_CHANGED_LATCH"]
        assert payload(receiver.calls[0].body)["key_local_id"] == 1
        assert (await client.get("/bridges/b1/status")).json()["bolt_state"] == "day_lock"


async def test_dropped_and_refused_connections_on_a_real_socket(
    served: tuple[LoqedSimulator, LoqedServer], clock: SimClock
) -> None:
    sim, server = served
    key: SimKey = sim.add_key("Yq1gK4oeE9KWe0ByxjX2", local_id=1)
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
        await client.post("/_sim/faults", json={"path": "/to_lock", "kind": "drop_after",
                                                 "count": 1})
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(command_url(key, 3, ts=T0))
        assert sim.received()[-1].verdict is Verdict.ACCEPTED  # processed, answer lost
        await client.post("/_sim/bridges/b1", json={"internet": False})
        await client.post("/_sim/clock", json={"advance": 120})
        with pytest.raises(httpx.TransportError):
            await client.get("/status")
        await client.post("/_sim/bridges/b1", json={"internet": True})
        assert (await client.get("/status")).status_code == 200
