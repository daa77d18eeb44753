"""Transports: SDK errors → lifecycle outcomes, configured order, and real sends to the
simulator (fresh signature per attempt, cloud key slot, app.loqed.com, open-house setting)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from roomkey.loqed import (
    ApiError,
    AsyncAppApiClient,
    AsyncBridgeClient,
    AsyncCloudClient,
    InvalidRequestError,
    KeyRevokedError,
    LoqedError,
    MaybeDeliveredError,
    NotFoundError,
    NotSentError,
    RateLimitedError,
    ServerError,
    UnauthorizedError,
)
from roomkey.service.commands import DoorCommand, SendResult, Transport
from roomkey.service.config import LockConfig
from roomkey.service.transports import (
    AppTransport,
    BridgeTransport,
    CloudTransport,
    build_transports,
    classify_error,
    send_one,
    transport_order,
)
from roomkey.sim.clock import SimClock
from roomkey.sim.loqed import LoqedSimulator
from roomkey.sim.loqed.model import Verdict

T0 = 1_800_000_000.0
LOQED_ID = "Yq1gK4oeE9KWe0ByxjX2"
KEY = base64.b64encode(b"K" * 32).decode()
BRIDGE_KEY = base64.b64encode(b"B" * 32).decode()
SIM = "http://loqed.sim"


@pytest.mark.parametrize(
    ("error", "result"),
    [
        (NotSentError("x", cause="ConnectError"), SendResult.NOT_SENT),
        (MaybeDeliveredError("x", cause="ReadTimeout"), SendResult.MAYBE_DELIVERED),
        (UnauthorizedError("x", status=401), SendResult.UNAUTHORIZED),
        (KeyRevokedError("x", status=404), SendResult.KEY_REVOKED),
        (RateLimitedError("x", retry_after=12.0), SendResult.RATE_LIMITED),
        (NotFoundError("x", status=404), SendResult.REJECTED),
        (ApiError("x", status=400), SendResult.REJECTED),
        (ServerError("x", status=502), SendResult.MAYBE_DELIVERED),
        (InvalidRequestError("x"), SendResult.REJECTED),
        (LoqedError("x"), SendResult.MAYBE_DELIVERED),
        (RuntimeError("bug"), SendResult.MAYBE_DELIVERED),
    ],
)
def test_sdk_errors_map_to_lifecycle_outcomes(error: Exception, result: SendResult) -> None:
    outcome = classify_error(Transport.CLOUD, error)
    assert outcome.result is result
    assert outcome.transport is Transport.CLOUD
    # Only the error type and status are kept: never a message that could hold a URL.
    assert outcome.detail.startswith(type(error).__name__)
    assert "x" not in outcome.detail.replace(type(error).__name__, "")
    if isinstance(error, RateLimitedError):
        assert outcome.retry_after == 12.0


def test_only_not_sent_outcomes_allow_another_transport() -> None:
    # The transports' classification feeds the lifecycle, which retries only on not_sent.
    maybe = classify_error(Transport.BRIDGE, MaybeDeliveredError("x"))
    assert maybe.result.may_have_reached
    assert not classify_error(Transport.BRIDGE, NotSentError("x")).result.may_have_reached


def _lock(**parts: Any) -> LockConfig:
    return LockConfig.model_validate({"id": "door", "name": "Door", **parts})


BRIDGE = {
    "url": f"{SIM}/bridges/b1",
    "key_secret": KEY,
    "local_key_id": 1,
    "bridge_key": BRIDGE_KEY,
}
CLOUD = {"token": "token-value", "lock_id": LOQED_ID, "base_url": SIM}
APP = {
    "api_token": "app-token",
    "lock_id": LOQED_ID,
    "key_secret": KEY,
    "local_key_id": 3,
    "base_url": f"{SIM}/API",
}


def test_transports_follow_the_configured_order_and_skip_missing_ones() -> None:
    clock = SimClock(start=T0, manual=True)
    lock = _lock(bridge=BRIDGE, cloud=CLOUD, app=APP)
    built = build_transports(lock, order=["cloud", "app", "bridge"], http_client=None, clock=clock)
    assert [t.kind for t in built] == [Transport.CLOUD, Transport.APP, Transport.BRIDGE]
    only_bridge = _lock(bridge=BRIDGE)
    built = build_transports(only_bridge, order=["cloud", "bridge"], http_client=None, clock=clock)
    assert [t.kind for t in built] == [Transport.BRIDGE]
    assert [t.key_local_id for t in built] == [1]


def test_only_the_cloud_carries_open_house_settings() -> None:
    clock = SimClock(start=T0, manual=True)
    built = build_transports(
        _lock(bridge=BRIDGE, cloud=CLOUD, app=APP),
        order=["bridge", "cloud", "app"],
        http_client=None,
        clock=clock,
    )
    assert transport_order(built, DoorCommand.OPEN_HOUSE_ON) == (Transport.CLOUD,)
    assert transport_order(built, DoorCommand.NIGHT_LOCK) == (
        Transport.BRIDGE,
        Transport.CLOUD,
        Transport.APP,
    )


def test_transport_reprs_hold_no_secrets() -> None:
    clock = SimClock(start=T0, manual=True)
    built = build_transports(
        _lock(bridge=BRIDGE, cloud=CLOUD, app=APP),
        order=["bridge", "cloud", "app"],
        http_client=None,
        clock=clock,
    )
    text = " ".join(repr(t) for t in built)
    for secret in (KEY, BRIDGE_KEY, "token-value", "app-token"):
        assert secret not in text


@pytest.fixture
async def sim_env() -> AsyncIterator[tuple[SimClock, LoqedSimulator, httpx.AsyncClient]]:
    clock = SimClock(start=T0, manual=True)
    sim = LoqedSimulator(clock)
    sim.add_bridge("b1", bridge_key=BRIDGE_KEY)
    sim.add_lock("b1", lock_id=LOQED_ID, numeric_id=6148)
    sim.add_key(LOQED_ID, local_id=1, secret=KEY)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url=SIM)
    try:
        yield clock, sim, client
    finally:
        await client.aclose()
        await sim.aclose()


async def test_every_bridge_attempt_is_signed_afresh_with_the_service_clock(
    sim_env: tuple[SimClock, LoqedSimulator, httpx.AsyncClient],
) -> None:
    clock, sim, client = sim_env
    bridge = BridgeTransport(
        AsyncBridgeClient(
            f"{SIM}/bridges/b1",
            key_secret=KEY,
            local_key_id=1,
            http_client=client,
            clock=clock.time,
        ),
        key_local_id=1,
    )
    first = await send_one(bridge, DoorCommand.DAY_LOCK)
    await clock.advance(20)
    second = await send_one(bridge, DoorCommand.DAY_LOCK)
    assert first.result is second.result is SendResult.ACCEPTED_BY_TRANSPORT
    received = sim.received(LOQED_ID)
    assert [r.verdict for r in received] == [Verdict.ACCEPTED, Verdict.ACCEPTED]
    assert [r.command_timestamp for r in received] == [int(T0), int(T0) + 20]


async def test_a_refused_bridge_is_not_sent_and_reaches_nothing(
    sim_env: tuple[SimClock, LoqedSimulator, httpx.AsyncClient],
) -> None:
    clock, sim, client = sim_env
    sim.app.faults.add("/bridges/b1/to_lock", "refuse", count=1)
    bridge = BridgeTransport(
        AsyncBridgeClient(
            f"{SIM}/bridges/b1",
            key_secret=KEY,
            local_key_id=1,
            http_client=client,
            clock=clock.time,
        ),
        key_local_id=1,
    )
    outcome = await send_one(bridge, DoorCommand.OPEN)
    assert outcome.result is SendResult.NOT_SENT
    assert sim.received(LOQED_ID) == []
    sim.app.faults.add("/bridges/b1/to_lock", "drop_after", count=1)
    outcome = await send_one(bridge, DoorCommand.OPEN)
    assert outcome.result is SendResult.MAYBE_DELIVERED
    assert [r.action for r in sim.received(LOQED_ID)] == ["open"]


async def test_cloud_and_app_transports_reach_the_lock(
    sim_env: tuple[SimClock, LoqedSimulator, httpx.AsyncClient],
) -> None:
    clock, sim, client = sim_env
    token = sim.add_api_token([LOQED_ID])
    app_key = sim.add_app_api_key(LOQED_ID)
    cloud = CloudTransport(
        AsyncCloudClient(token.token, base_url=SIM, http_client=client, clock=clock.time),
        lock_id=LOQED_ID,
        key_local_id=token.key_ids[LOQED_ID],
    )
    app = AppTransport(
        AsyncAppApiClient(
            app_key.api_token,
            LOQED_ID,
            key_secret=app_key.secret,
            local_key_id=app_key.local_id,
            base_url=f"{SIM}/API",
            http_client=client,
            clock=clock.time,
        ),
        key_local_id=app_key.local_id,
    )
    assert (await send_one(cloud, DoorCommand.DAY_LOCK)).result is SendResult.ACCEPTED_BY_TRANSPORT
    await clock.advance(15)
    assert (await send_one(app, DoorCommand.NIGHT_LOCK)).result is SendResult.ACCEPTED_BY_TRANSPORT
    await clock.advance(15)
    received = sim.received(LOQED_ID)
    assert [(r.via, r.action, r.key_local_id, r.verdict) for r in received] == [
        ("cloud", "day_lock", token.key_ids[LOQED_ID], Verdict.ACCEPTED),
        ("app_api", "night_lock", app_key.local_id, Verdict.ACCEPTED),
    ]
    assert sim.lock(LOQED_ID).bolt_state.value == "night_lock"
    # Open house is a cloud setting.
    assert (await send_one(cloud, DoorCommand.OPEN_HOUSE_ON)).result is (
        SendResult.ACCEPTED_BY_TRANSPORT
    )
    assert sim.lock(LOQED_ID).settings["open_house_mode"] == 1
    # A bad token is a definite refusal, not a retryable failure.
    bad = CloudTransport(
        AsyncCloudClient("not-a-token", base_url=SIM, http_client=client, clock=clock.time),
        lock_id=LOQED_ID,
    )
    refused = await send_one(bad, DoorCommand.OPEN)
    assert refused.result is SendResult.UNAUTHORIZED
    assert "not-a-token" not in refused.detail


def test_a_locks_transports_share_one_http_client_when_none_is_given() -> None:
    clock = SimClock(start=T0, manual=True)
    built = build_transports(
        _lock(bridge=BRIDGE, cloud=CLOUD, app=APP),
        order=["bridge", "cloud", "app"],
        http_client=None,
        clock=clock,
    )
    # One connection pool and TLS context for the lock, not one per surface.
    clients = {id(t._client._http) for t in built}  # type: ignore[attr-defined]
    assert len(clients) == 1


async def test_a_shared_http_client_keeps_each_locks_url_and_timeout() -> None:
    seen: list[tuple[str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host + request.url.path, request.extensions["timeout"]))
        return httpx.Response(200, json={})

    clock = SimClock(start=T0, manual=True)
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as shared:
        near = build_transports(
            _lock(bridge={**BRIDGE, "url": "http://bridge-a.local/"}),
            order=["bridge"],
            http_client=shared,
            clock=clock,
            timeout=3.0,
        )
        far = build_transports(
            _lock(bridge={**BRIDGE, "url": "http://bridge-b.local/"}),
            order=["bridge"],
            http_client=shared,
            clock=clock,
            timeout=7.0,
        )
        assert (await send_one(near[0], DoorCommand.DAY_LOCK)).result is (
            SendResult.ACCEPTED_BY_TRANSPORT
        )
        assert (await send_one(far[0], DoorCommand.DAY_LOCK)).result is (
            SendResult.ACCEPTED_BY_TRANSPORT
        )
    assert [(where.split("/")[0], t) for where, t in seen] == [
        ("bridge-a.local", {"connect": 3.0, "read": 3.0, "write": 3.0, "pool": 3.0}),
        ("bridge-b.local", {"connect": 7.0, "read": 7.0, "write": 7.0, "pool": 7.0}),
    ]
