"""Lockme simulator: injected faults (latency, 5xx, hangs, 429, token expiry, dropped hooks)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from roomkey.sim.clock import SimClock
from roomkey.sim.lockme import FaultRule, LockmeSimulator

START = 1_790_000_000.0
DAY = "2026-09-28"


@dataclass
class Sleeps:
    """Stands in for asyncio.sleep so latency and hangs are observable without waiting."""

    calls: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@dataclass
class Env:
    sim: LockmeSimulator
    clock: SimClock
    api: httpx.AsyncClient
    control: httpx.AsyncClient
    sleeps: Sleeps
    room: int
    delivered: list[str]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = SimClock(manual=True, start=START)
    sleeps = Sleeps()
    delivered: list[str] = []

    def receive(request: httpx.Request) -> httpx.Response:
        delivered.append(request.headers["x-messageid"])
        return httpx.Response(200, text="OK")

    delivery = httpx.AsyncClient(transport=httpx.MockTransport(receive))
    sim = LockmeSimulator(clock, delivery_client=delivery, sleep=sleeps, seed=7, max_hang=45)
    sim.add_oauth_client("c", "secret-c", "http://127.0.0.1/cb")
    dept = sim.add_department("D", "http://127.0.0.1:1/hook")
    room = sim.add_room(dept.id, "R")
    token = sim.issue_token("c")
    transport = httpx.ASGITransport(sim.app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://lockme.test/v2.4",
                          headers={"Authorization": f"Bearer {token['access_token']}"}) as api,
        httpx.AsyncClient(transport=transport, base_url="http://lockme.test/_sim") as control,
    ):
        yield Env(sim, clock, api, control, sleeps, room.id, delivered)
    await sim.aclose()
    await delivery.aclose()


async def test_latency_delays_api_answers(env: Env) -> None:
    env.sim.faults.add(FaultRule("latency", seconds=2.5))
    assert (await env.api.get("/rooms")).status_code == 200
    assert env.sleeps.calls == [2.5]
    assert (await env.control.get("/state")).status_code == 200
    assert env.sleeps.calls == [2.5]


async def test_server_errors_for_the_next_n_requests(env: Env) -> None:
    env.sim.faults.add(FaultRule("error", status=502, count=2))
    statuses = [(await env.api.get("/test")).status_code for _ in range(3)]
    assert statuses == [502, 502, 200]
    resp = await env.api.get("/test")
    assert resp.json() == "OK"


async def test_error_body_is_json_with_message(env: Env) -> None:
    env.sim.faults.add(FaultRule("error", count=1))
    resp = await env.api.get("/rooms")
    assert resp.status_code == 503
    assert resp.json() == {"message": "Internal Server Error", "error": "server_error"}


async def test_timeout_hangs_bounded_then_answers_504(env: Env) -> None:
    env.sim.faults.add(FaultRule("timeout", seconds=600, count=1))
    resp = await env.api.get("/rooms")
    assert resp.status_code == 504
    assert env.sleeps.calls == [45]


async def test_faults_can_target_the_token_endpoint(env: Env) -> None:
    env.sim.faults.add(FaultRule("error", path_prefix="/access_token", count=1))
    token = env.sim.issue_token("c")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(env.sim.app),
                                 base_url="http://lockme.test") as raw:
        form = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"],
                "client_id": "c", "client_secret": "secret-c"}
        first = await raw.post("/access_token", data=form)
        second = await raw.post("/access_token", data=form)
    assert (first.status_code, second.status_code) == (503, 200)
    assert (await env.api.get("/test")).status_code == 200


async def test_probability_is_seeded_and_repeatable(env: Env) -> None:
    env.sim.faults.add(FaultRule("error", probability=0.5))
    first = [(await env.api.get("/test")).status_code for _ in range(20)]
    other = LockmeSimulator(SimClock(manual=True, start=START), seed=7)
    other.add_oauth_client("c", "secret-c", "http://127.0.0.1/cb")
    other.faults.add(FaultRule("error", probability=0.5))
    token = other.issue_token("c")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(other.app),
                                 base_url="http://lockme.test/v2.4",
                                 headers={"Authorization": f"Bearer {token['access_token']}"}
                                 ) as api:
        second = [(await api.get("/test")).status_code for _ in range(20)]
    assert first == second
    assert {200, 503} == set(first)


async def test_forced_rate_limit_answers_429_with_retry_after(env: Env) -> None:
    env.sim.faults.add(FaultRule("rate_limit", count=1, retry_after=7))
    resp = await env.api.get("/test")
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "7"
    assert resp.json()["error"] == "rate_limited"
    assert (await env.api.get("/test")).status_code == 200


async def test_rate_limiter_window_on_the_sim_clock(env: Env) -> None:
    env.sim.faults.set_rate_limit(3, window=60)
    statuses = [(await env.api.get("/test")).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = await env.api.get("/test")
    assert int(limited.headers["retry-after"]) == 60
    await env.clock.advance(60)
    assert (await env.api.get("/test")).status_code == 200
    env.sim.faults.set_rate_limit(None)
    assert all([(await env.api.get("/test")).status_code == 200 for _ in range(5)])


async def test_token_expiry_mid_run(env: Env) -> None:
    assert (await env.api.get("/rooms")).status_code == 200
    assert env.sim.expire_tokens() >= 1
    resp = await env.api.get("/rooms")
    assert resp.status_code == 401
    assert resp.json()["message"] == "Access token has expired"


async def test_expire_refresh_tokens_too(env: Env) -> None:
    token = env.sim.issue_token("c")
    env.sim.expire_tokens(refresh=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(env.sim.app),
                                 base_url="http://lockme.test") as raw:
        resp = await raw.post("/access_token", data={
            "grant_type": "refresh_token", "refresh_token": token["refresh_token"],
            "client_id": "c", "client_secret": "secret-c"})
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"


async def test_dropped_webhook_deliveries_next_n(env: Env) -> None:
    env.sim.faults.add(FaultRule("drop_webhook", count=2))
    env.sim.book(env.room, DAY, "10:00:00")
    message = env.sim.messages()[-1]
    await env.clock.advance(300)
    assert [a.outcome for a in message.attempts] == ["dropped", "dropped", "delivered"]
    assert env.delivered == [str(message.id)]
    assert (await env.api.get("/test")).status_code == 200


async def test_dropped_webhook_deliveries_by_probability(env: Env) -> None:
    env.sim.faults.add(FaultRule("drop_webhook", probability=1.0))
    env.sim.book(env.room, DAY, "10:00:00")
    await env.clock.advance(86400)
    assert {a.outcome for a in env.sim.messages()[-1].attempts} == {"dropped"}
    assert env.delivered == []


async def test_faults_through_the_control_api(env: Env) -> None:
    created = await env.control.post("/faults", json={"kind": "error", "status": 500,
                                                      "count": 1})
    assert created.status_code == 201
    rule_id = created.json()["id"]
    listed = (await env.control.get("/faults")).json()
    assert [r["id"] for r in listed["rules"]] == [rule_id]
    assert (await env.api.get("/test")).status_code == 500
    assert (await env.control.delete(f"/faults/{rule_id}")).json() == {"removed": True}
    limited = await env.control.post("/faults/rate-limit", json={"limit": 1})
    assert limited.json() == {"limit": 1, "window": 60.0}
    await env.api.get("/test")
    assert (await env.api.get("/test")).status_code == 429
    assert (await env.control.delete("/faults")).json() == {"rules": [], "rate_limit": None}
    assert (await env.api.get("/test")).status_code == 200
    expired = await env.control.post("/tokens/expire", json={})
    assert expired.json()["expired"] >= 1
    assert (await env.api.get("/test")).status_code == 401


@pytest.mark.parametrize("body", [
    {"kind": "meteor"}, {"kind": "error", "probability": 2}, {"kind": "error", "status": 200},
    {"kind": "latency", "seconds": -1}, {"kind": "error", "colour": "red"},
])
async def test_bad_fault_specs_are_400(env: Env, body: dict[str, object]) -> None:
    resp = await env.control.post("/faults", json=body)
    assert resp.status_code == 400
    assert resp.json()["message"]
    assert env.sim.faults.rules == []


def test_fault_rule_validation_in_python() -> None:
    sim = LockmeSimulator(SimClock(manual=True, start=START))
    with pytest.raises(ValueError, match="probability"):
        sim.faults.add(FaultRule("error", probability=1.5))
    with pytest.raises(ValueError, match="limit"):
        sim.faults.set_rate_limit(0)
