"""Property tests: no input makes the simulator answer 500 or crash; secrets stay out of
reprs and log lines."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_loqed_support import command_url

from roomkey.sim.clock import SimClock
from roomkey.sim.loqed import LoqedSimulator, Verdict

T0 = 1_700_000_000.0
PROPS = settings(max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=6,
)


def fresh() -> LoqedSimulator:
    sim = LoqedSimulator(SimClock(start=T0, manual=True),
                         delivery_client=httpx.AsyncClient(
                             transport=httpx.MockTransport(lambda r: httpx.Response(200))))
    sim.add_bridge("b1")
    lock = sim.add_lock("b1", lock_id="L" * 20)
    sim.add_key(lock.lock_id, local_id=1)
    sim.add_api_token([lock.lock_id])
    return sim


def client_for(sim: LoqedSimulator) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(sim.app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://sim")


@PROPS
@given(param=st.text(max_size=120))
async def test_to_lock_always_answers_like_the_real_bridge(param: str) -> None:
    sim = fresh()
    async with client_for(sim) as client:
        r = await client.get("/to_lock", params={"command_signed_base64": param})
    assert (r.status_code, r.text) == (200, "Message resent to the lock")
    assert sim.received()[-1].verdict is not Verdict.ACCEPTED


@PROPS
@given(raw=st.binary(max_size=80))
async def test_webhook_creation_never_500s(raw: bytes) -> None:
    sim = fresh()
    async with client_for(sim) as client:
        r = await client.post("/webhooks", content=raw,
                              headers={"TIMESTAMP": "1700000000", "HASH": "ab"})
    assert r.status_code in (400, 401)


CONTROL_POSTS = [
    "/_sim/bridges", "/_sim/locks", "/_sim/locks/LLLLLLLLLLLLLLLLLLLL/keys",
    "/_sim/locks/LLLLLLLLLLLLLLLLLLLL/manual", "/_sim/locks/LLLLLLLLLLLLLLLLLLLL/stall",
    "/_sim/locks/LLLLLLLLLLLLLLLLLLLL/battery", "/_sim/locks/LLLLLLLLLLLLLLLLLLLL/online",
    "/_sim/locks/LLLLLLLLLLLLLLLLLLLL/event", "/_sim/locks/LLLLLLLLLLLLLLLLLLLL/cloud-webhooks",
    "/_sim/tokens", "/_sim/app-keys", "/_sim/faults", "/_sim/clock", "/_sim/config",
    "/_sim/bridges/b1",
]


@PROPS
@given(path=st.sampled_from(CONTROL_POSTS),
       body=st.dictionaries(
           st.sampled_from(["bridge_id", "lock_id", "local_id", "kind", "target", "count",
                            "percentage", "online", "payload", "url", "lock_ids", "path",
                            "seconds", "status", "method", "advance", "warp", "go_to",
                            "status_limits", "secret", "mac_wifi", "gateway", "bit",
                            "clock_skew", "internet", "key_local_id", "bolt_state"]),
           json_values, max_size=4))
async def test_control_api_never_500s(path: str, body: dict[str, Any]) -> None:
    sim = fresh()
    async with client_for(sim) as client:
        r = await client.post(path, json=body)
        assert r.status_code in (200, 400, 404), r.text
        # whatever was seeded, the simulator still serves its surfaces
        assert (await client.get("/bridges/b1/status")).status_code in (200, 503)
        assert (await client.get("/health")).status_code in (200, 503)
    await sim.aclose()


@PROPS
@given(path=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_/.", max_size=30),
       auth=st.text(max_size=30))
async def test_cloud_never_500s(path: str, auth: str) -> None:
    sim = fresh()
    headers = {"Authorization": auth} if auth.isascii() and auth.isprintable() else {}
    async with client_for(sim) as client:
        r = await client.get(f"/api/locks/{path}", headers=headers)
        r2 = await client.get(f"/API/lock_command.php?api_token={path}&lock_id={path}")
    assert r.status_code < 500
    assert r2.status_code < 500


async def test_secrets_stay_out_of_reprs_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    clock = SimClock(start=T0, manual=True)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("nope", request=request)

    sim = LoqedSimulator(clock, delivery_client=httpx.AsyncClient(
        transport=httpx.MockTransport(refuse)))
    bridge = sim.add_bridge("b1")
    lock = sim.add_lock("b1")
    key = sim.add_key(lock.lock_id, local_id=1)
    token = sim.add_api_token([lock.lock_id])
    app_key = sim.add_app_api_key(lock.lock_id)
    sim.add_bridge_webhook("b1", "http://user:hunter2@hooks/h?s=1")
    secrets = [bridge.bridge_key, key.secret, token.token, app_key.api_token, app_key.secret,
               "hunter2"]
    caplog.set_level(logging.DEBUG)
    async with client_for(sim) as client:
        url = command_url(key, 2, ts=T0)
        await client.get(url)
        await clock.advance(30)
    # the simulator's own log lines (the test's httpx client logs its URLs itself)
    ours = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("roomkey"))
    assert "failed: ConnectError" in ours
    text = " ".join([repr(bridge), repr(lock), repr(key), repr(token), repr(app_key),
                     repr(sim.received()), repr(sim.deliveries()), ours,
                     str([d.url for d in sim.deliveries()])])
    assert sim.deliveries()
    assert all(d.error == "ConnectError" for d in sim.deliveries())
    for secret in secrets:
        assert secret not in text
    assert url.split("=", 1)[1] not in text
