"""The /_sim control API, /health, and injected HTTP faults (in-process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from test_loqed_support import T0, Receiver, command_url

from roomkey.sim.clock import SimClock
from roomkey.sim.loqed import BoltState, LoqedSimulator, SimKey, Verdict


@pytest.fixture
def sim(clock: SimClock, delivery_client: httpx.AsyncClient) -> LoqedSimulator:
    return LoqedSimulator(clock, delivery_client=delivery_client)


@pytest.fixture
async def client(sim: LoqedSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(sim.app), base_url="http://sim"
    ) as c:
        yield c
    await sim.aclose()


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
    r = await client.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def test_health(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.json()["status"] == "ok"
    assert r.json()["time"] == T0


async def test_seed_and_drive_everything_over_http(
    sim: LoqedSimulator, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    bridge = await post(client, "/_sim/bridges", {"bridge_id": "front", "gateway": "legacy"})
    lock = await post(client, "/_sim/locks", {"bridge_id": "front", "lock_id": "L" * 20,
                                               "numeric_id": 7, "bolt_state": "day_lock"})
    key = await post(client, f"/_sim/locks/{lock['lock_id']}/keys", {"local_id": 3})
    token = await post(client, "/_sim/tokens", {"lock_ids": [lock["lock_id"]]})
    app_key = await post(client, "/_sim/app-keys", {"lock_id": lock["lock_id"]})
    assert app_key["urls"]["status"].startswith("http://sim/API/lock_status.php?")
    assert token["key_ids"][lock["lock_id"]] not in (3, app_key["local_id"])
    sim.add_bridge_webhook("front", "http://hooks/h")
    await post(client, f"/_sim/locks/{lock['lock_id']}/cloud-webhooks",
               {"url": "http://hooks/c", "shape": "documented"})
    # a signed command through the root bridge path (first bridge)
    k = SimKey(lock["lock_id"], key["local_id"], key["secret"])
    await client.get(command_url(k, 3, ts=T0))
    clock_state = await post(client, "/_sim/clock", {"advance": 30})
    assert clock_state["time"] == T0 + 30
    received = (await client.get("/_sim/received", params={"lock_id": lock["lock_id"]})).json()
    assert received["received"][0]["verdict"] == "accepted"
    assert received["received"][0]["action"] == "night_lock"
    deliveries = (await client.get("/_sim/deliveries?channel=bridge")).json()["deliveries"]
    assert [d["event_type"] for d in deliveries] == [
        "GO_TO_STATE_MANUAL_LOCK_REMOTE_NIGHT_LOCK", "STATE_CHANGED_NIGHT_LOCK"]
    assert all(d["status"] == 200 for d in deliveries)
    # manual events, stall, battery, online, raw event
    lid = lock["lock_id"]
    await post(client, f"/_sim/locks/{lid}/manual", {"kind": "ble", "target": "open"})
    await post(client, f"/_sim/locks/{lid}/stall", {"count": 1})
    await post(client, "/_sim/clock", {"advance": 30})
    state = (await client.get(f"/_sim/locks/{lid}")).json()
    assert state["bolt_state"] == "unknown"
    await post(client, f"/_sim/locks/{lid}/battery", {"percentage": 12})
    await post(client, f"/_sim/locks/{lid}/online", {"online": False})
    await post(client, f"/_sim/locks/{lid}/event",
               {"payload": {"event_type": "SOMETHING_NEW", "mac_wifi": "x"}})
    await post(client, "/_sim/clock", {"advance": 5})
    types = receiver.event_types()
    assert "GO_TO_STATE_MANUAL_UNLOCK_BLE_OPEN" in types
    assert "MOTOR_STALL" in types
    assert types[-1] == "SOMETHING_NEW"
    assert (await client.get(f"/_sim/locks/{lid}")).json()["ble_strength"] == -1
    full = (await client.get("/_sim/state")).json()
    assert full["bridges"][0]["bridge_key"] == bridge["bridge_key"]
    assert (await client.delete(f"/_sim/locks/{lid}/keys/3")).status_code == 200
    revoked = await post(client, f"/_sim/tokens/{token['id']}/revoke", {})
    assert revoked == {"revoked": token["id"]}


async def test_control_api_rejects_bad_input_without_500(client: httpx.AsyncClient) -> None:
    cases = [
        ("/_sim/locks", {"bridge_id": "none"}, 404),
        ("/_sim/bridges", {"gateway": "weird"}, 400),
        ("/_sim/tokens", {"lock_ids": "x"}, 400),
        ("/_sim/faults", {"kind": "explode"}, 400),
        ("/_sim/clock", {"advance": "soon"}, 400),
        ("/_sim/locks/nope/manual", {"kind": "knob", "target": "open"}, 404),
    ]
    for path, body, status in cases:
        r = await client.post(path, json=body)
        assert r.status_code == status, (path, r.text)
        assert "error" in r.json()
    r = await client.post("/_sim/bridges", content=b"{broken")
    assert r.status_code == 400


async def test_seed_demo_endpoint(client: httpx.AsyncClient) -> None:
    world = (await client.post("/_sim/seed-demo", json={})).json()
    assert world["lock_id"] == "Yq1gK4oeE9KWe0ByxjX2"
    assert world["key"]["local_id"] == 1
    assert (await client.get("/status")).status_code == 200


@pytest.fixture
def seeded(sim: LoqedSimulator) -> SimKey:
    sim.add_bridge("b1")
    lock = sim.add_lock("b1", lock_id="L1" * 10)
    return sim.add_key(lock.lock_id, local_id=1)


async def test_status_fault(
    sim: LoqedSimulator, client: httpx.AsyncClient, seeded: SimKey
) -> None:
    await post(client, "/_sim/faults", {"path": "/bridges/b1/status", "kind": "status",
                                        "status": 503, "count": 1})
    assert (await client.get("/status")).status_code == 503
    assert (await client.get("/status")).status_code == 200


async def test_drop_after_processes_the_command_but_loses_the_answer(
    sim: LoqedSimulator, client: httpx.AsyncClient, seeded: SimKey, clock: SimClock
) -> None:
    await post(client, "/_sim/faults", {"path": "/bridges/b1/to_lock", "kind": "drop_after"})
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get(command_url(seeded, 2, ts=clock.time()))
    assert sim.received()[-1].verdict is Verdict.ACCEPTED
    await clock.advance(30)
    assert sim.locks[seeded.lock_id].bolt_state is BoltState.DAY_LOCK
    assert (await client.delete("/_sim/faults")).status_code == 200


async def test_drop_before_loses_the_command(
    sim: LoqedSimulator, client: httpx.AsyncClient, seeded: SimKey, clock: SimClock
) -> None:
    await post(client, "/_sim/faults", {"path": "/to_lock", "kind": "drop_before", "count": 1})
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get(command_url(seeded, 2, ts=clock.time()))
    assert sim.received() == []


async def test_latency_fault_delays_the_answer(
    client: httpx.AsyncClient, seeded: SimKey
) -> None:
    import time

    await post(client, "/_sim/faults", {"path": "/status", "kind": "latency", "seconds": 0.05,
                                        "method": "GET"})
    started = time.monotonic()
    assert (await client.get("/status")).status_code == 200
    assert time.monotonic() - started >= 0.05


async def test_internet_down_first_breaks_the_cloud_then_refuses_connections(
    sim: LoqedSimulator, client: httpx.AsyncClient, seeded: SimKey, clock: SimClock
) -> None:
    token = sim.add_api_token([seeded.lock_id])
    await post(client, "/_sim/bridges/b1", {"internet": False})
    r = await client.get(f"/api/locks/{seeded.lock_id}/bolt_state/open",
                         headers={"Authorization": f"Bearer {token.token}"})
    assert r.status_code == 204
    assert sim.received()[-1].verdict is Verdict.BRIDGE_UNREACHABLE
    assert (await client.get("/status")).status_code == 200  # still answers locally
    await clock.advance(90)
    with pytest.raises(httpx.ConnectError):
        await client.get("/status")
    with pytest.raises(httpx.ConnectError):
        await client.get(command_url(seeded, 2, ts=clock.time()))
    await post(client, "/_sim/bridges/b1", {"internet": True})
    assert (await client.get("/status")).status_code == 200


async def test_failed_deliveries_are_logged_and_do_not_stop_others(
    sim: LoqedSimulator, client: httpx.AsyncClient, seeded: SimKey, clock: SimClock,
    receiver: Receiver,
) -> None:
    receiver.status = 500
    sim.add_bridge_webhook("b1", "http://[bad")
    sim.add_bridge_webhook("b1", "http://hooks/ok")
    await client.get(command_url(seeded, 2, ts=clock.time()))
    await clock.advance(30)
    records = sim.deliveries("bridge")
    assert [r.error is not None for r in records] == [True, False, True, False]
    assert {r.status for r in records if r.error is None} == {500}


async def test_config_endpoint(sim: LoqedSimulator, client: httpx.AsyncClient) -> None:
    out = await post(client, "/_sim/config", {"max_command_age": 30, "go_to": [1, 1],
                                              "status_limits": {"api_locks": None},
                                              "webhook_shape": "documented"})
    assert out["config"]["max_command_age"] == 30
    assert sim.config.timings.go_to == (1.0, 1.0)
    assert sim.config.cloud.status_limits["api_locks"] is None


async def test_python_fault_api_and_503_on_the_cloud(
    sim: LoqedSimulator, client: httpx.AsyncClient, seeded: SimKey
) -> None:
    token = sim.add_api_token([seeded.lock_id])
    rule = sim.add_fault("/api/locks", "status", status=502, count=2, method="GET")
    headers = {"Authorization": f"Bearer {token.token}"}
    codes = [(await client.get("/api/locks/", headers=headers)).status_code for _ in range(3)]
    assert codes == [502, 502, 200]
    assert rule not in sim.faults.rules
    sim.add_fault("/bridges/b1/status", "refuse")
    with pytest.raises(httpx.ConnectError):
        await client.get("/status")
    sim.faults.clear()
    assert (await client.get("/status")).status_code == 200
