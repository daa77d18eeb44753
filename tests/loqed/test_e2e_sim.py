"""The SDK end to end against the LOQED simulator, sync and async, including every fault.

Async clients talk to the simulator in-process (``httpx.ASGITransport``). Sync clients talk to
it over a real loopback socket: the simulator runs under uvicorn on a free port in a
background thread with its own event loop (``httpx.ASGITransport`` is async-only). Simulated
time is manual and only moves when a test advances it; webhook deliveries go to an in-process
receiver that records the raw bytes and headers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest

from roomkey.loqed import (
    AppApiClient,
    AsyncAppApiClient,
    AsyncBridgeClient,
    AsyncCloudClient,
    BoltState,
    BridgeClient,
    CloudClient,
    CloudWebhook,
    EventKind,
    EventSource,
    KeyRevokedError,
    LockEvent,
    MaybeDeliveredError,
    MissingTimestampError,
    NotSentError,
    RateLimitedError,
    ServerError,
    StaleTimestampError,
    StatusBudget,
    TransportError,
    UnauthorizedError,
    WebhookTriggers,
    parse_event,
    verify_bridge_webhook,
)
from roomkey.sim.clock import SimClock
from roomkey.sim.loqed import (
    LoqedServer,
    LoqedSimulator,
    SimApiToken,
    SimAppApiKey,
    SimBridge,
    SimKey,
    SimLock,
    StatusLimit,
    Verdict,
)

from .support import LOCK_ID, call

T = TypeVar("T")
START = 1_700_000_000.0
RECEIVER = "http://receiver.test/hooks"


# --------------------------------------------------------------------------- receiver


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """ASGI app that records every webhook delivery exactly as received."""

    clock: SimClock
    hits: list[Hit] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.hits.append(Hit(str(scope["path"]), headers, body, self.clock.time()))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def events(self, source: str = "bridge") -> list[LockEvent]:
        return [parse_event(h.body, source=source) for h in self.hits]  # type: ignore[arg-type]


# --------------------------------------------------------------------------- world


@dataclass
class World:
    sim: LoqedSimulator
    clock: SimClock
    bridge: SimBridge
    lock: SimLock
    key: SimKey
    token: SimApiToken
    app_key: SimAppApiKey
    receiver: Receiver


def build_world() -> World:
    clock = SimClock(start=START, manual=True)
    receiver = Receiver(clock)
    delivery = httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver))
    sim = LoqedSimulator(clock=clock, delivery_client=delivery)
    bridge = sim.add_bridge("b1")
    lock = sim.add_lock("b1", lock_id=LOCK_ID, numeric_id=6148, name="Room 1")
    key = sim.add_key(LOCK_ID, local_id=1, name="roomkey")
    token = sim.add_api_token(lock_ids=[LOCK_ID])
    app_key = sim.add_app_api_key(LOCK_ID)
    return World(sim, clock, bridge, lock, key, token, app_key, receiver)


class Loopback:
    """The simulator on a real loopback socket, served from a background thread."""

    def __init__(self, sim: LoqedSimulator) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = LoqedServer(sim)
        self.run(self.server.start())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    @property
    def url(self) -> str:
        return self.server.url

    def close(self) -> None:
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class Env:
    """One flavour: async in-process, or sync over loopback. Builds clients, moves time."""

    def __init__(self, flavour: str, world: World, loopback: Loopback | None) -> None:
        self.flavour = flavour
        self.world = world
        self.loopback = loopback
        self.base = loopback.url if loopback is not None else "http://sim.test"

    def http(self) -> httpx.Client | httpx.AsyncClient:
        if self.loopback is not None:
            return httpx.Client() if self.flavour == "sync" else httpx.AsyncClient()
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.world.sim.app))

    async def advance(self, seconds: float) -> None:
        if self.loopback is not None:
            self.loopback.run(self.world.clock.advance(seconds))
        else:
            await self.world.clock.advance(seconds)

    def bridge(self, bridge_id: str = "b1", **kwargs: Any) -> Any:
        w = self.world
        kwargs.setdefault("key_secret", w.key.secret)
        kwargs.setdefault("local_key_id", w.key.local_id)
        kwargs.setdefault("bridge_key", w.sim.bridge(bridge_id).bridge_key)
        kwargs.setdefault("clock", w.clock)
        cls = BridgeClient if self.flavour == "sync" else AsyncBridgeClient
        return cls(f"{self.base}/bridges/{bridge_id}", http_client=self.http(), **kwargs)

    def cloud(self, **kwargs: Any) -> Any:
        token = kwargs.pop("token", self.world.token.token)
        kwargs.setdefault("clock", self.world.clock)
        cls = CloudClient if self.flavour == "sync" else AsyncCloudClient
        return cls(token, base_url=self.base, http_client=self.http(), **kwargs)

    def app(self, **kwargs: Any) -> Any:
        k = self.world.app_key
        kwargs.setdefault("key_secret", k.secret)
        kwargs.setdefault("local_key_id", k.local_id)
        kwargs.setdefault("clock", self.world.clock)
        api_token = kwargs.pop("api_token", k.api_token)
        cls = AppApiClient if self.flavour == "sync" else AsyncAppApiClient
        return cls(
            api_token, k.lock_id, base_url=f"{self.base}/API", http_client=self.http(), **kwargs
        )

    def app_from_urls(self, **kwargs: Any) -> Any:
        urls = self.world.app_key.urls(f"{self.base}/API")
        cls = AppApiClient if self.flavour == "sync" else AsyncAppApiClient
        return cls.from_urls(
            urls["open"],
            urls["latch"],
            urls["night_lock"],
            urls["status"],
            http_client=self.http(),
            clock=self.world.clock,
            **kwargs,
        )


@pytest.fixture
def world() -> World:
    return build_world()


@pytest.fixture
async def env(flavour: str, world: World) -> AsyncIterator[Env]:
    loopback = Loopback(world.sim) if flavour == "sync" else None
    try:
        yield Env(flavour, world, loopback)
    finally:
        if loopback is not None:
            loopback.close()
        else:
            await world.sim.aclose()


@pytest.fixture
async def socket_env(flavour: str, world: World) -> AsyncIterator[Env]:
    """Both flavours over a real socket (for real timeouts)."""
    loopback = Loopback(world.sim)
    try:
        yield Env(flavour, world, loopback)
    finally:
        loopback.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _last(world: World, via: str | None = None) -> Any:
    received = [r for r in world.sim.received(LOCK_ID) if via is None or r.via == via]
    assert received, "the lock received nothing"
    return received[-1]


# --------------------------------------------------------------------------- bridge


async def test_bridge_status_matches_the_lock(env: Env) -> None:
    status = await call(env.bridge(), "status")
    assert status.bolt_state is BoltState.NIGHT_LOCK
    assert status.battery_percentage == env.world.lock.battery_percentage
    assert status.lock_online is True
    assert status.online is True
    assert status.bridge_mac_wifi == env.world.bridge.mac_wifi
    assert status.raw["webhooks_number"] == 0


async def test_bridge_status_on_the_new_gateway(env: Env) -> None:
    sim = env.world.sim
    sim.add_bridge("b2", gateway="new")
    sim.add_lock("b2", lock_id="NewGatewayLock000001", bolt_state="open")
    status = await call(env.bridge("b2"), "status")
    assert status.bolt_state is BoltState.OPEN


@pytest.mark.parametrize("encode_slash", [False, True])
async def test_bridge_commands_move_the_lock(env: Env, encode_slash: bool) -> None:
    w = env.world
    client = env.bridge(encode_slash=encode_slash)
    await call(client, "day_lock")
    assert _last(w, "bridge").verdict is Verdict.ACCEPTED
    await env.advance(20)
    assert w.lock.bolt_state == BoltState.DAY_LOCK
    await call(client, "night_lock")
    await env.advance(20)
    assert w.lock.bolt_state == BoltState.NIGHT_LOCK
    await call(client, "open")
    last = _last(w, "bridge")
    assert (last.verdict, last.action, last.key_local_id, last.length) == (
        Verdict.ACCEPTED,
        "open",
        1,
        53,
    )
    await env.advance(30)  # opens, then re-latches by itself
    assert w.lock.bolt_state == BoltState.DAY_LOCK
    status = await call(client, "status")
    assert status.bolt_state is BoltState.DAY_LOCK
    assert [r.verdict for r in w.sim.received(LOCK_ID)] == [Verdict.ACCEPTED] * 3


async def test_wrong_key_gets_200_but_the_lock_ignores_it(env: Env) -> None:
    w = env.world
    await call(env.bridge(key_secret="d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXkh"), "open")
    assert _last(w).verdict is Verdict.BAD_SIGNATURE
    await call(env.bridge(local_key_id=77), "open")
    assert _last(w).verdict is Verdict.UNKNOWN_KEY
    await env.advance(20)
    assert w.lock.bolt_state == BoltState.NIGHT_LOCK


async def test_command_signed_with_a_late_clock_is_stale(env: Env) -> None:
    w = env.world
    client = env.bridge(clock=lambda: w.clock.time() - 120)
    await call(client, "day_lock")
    assert _last(w).verdict is Verdict.STALE


async def test_bridge_webhook_management(env: Env) -> None:
    w = env.world
    client = env.bridge()
    assert await call(client, "list_webhooks") == []
    await call(client, "create_webhook", RECEIVER, ["state_changed_open", "battery", "online"])
    await call(client, "create_webhook", RECEIVER + "/all")
    hooks = await call(client, "list_webhooks")
    assert [(h.url, int(h.triggers)) for h in hooks] == [
        (RECEIVER, 1 | 128 | 256),
        (RECEIVER + "/all", 511),
    ]
    assert [(h.id, h.flags) for h in w.bridge.webhooks] == [(hooks[0].id, 385), (hooks[1].id, 511)]
    same = await call(client, "ensure_webhook", RECEIVER + "/all", WebhookTriggers.ALL)
    assert same.id == hooks[1].id
    assert len(w.bridge.webhooks) == 2
    await call(client, "delete_webhook", hooks[0].id)
    assert [h.id for h in await call(client, "list_webhooks")] == [hooks[1].id]


async def test_webhook_management_with_a_wrong_bridge_key_is_refused(env: Env) -> None:
    client = env.bridge(bridge_key="d3JvbmcgYnJpZGdlIGtleQ==")
    with pytest.raises(UnauthorizedError):
        await call(client, "list_webhooks")
    with pytest.raises(UnauthorizedError):
        await call(client, "create_webhook", RECEIVER)
    assert env.world.bridge.webhooks == []


async def test_bridge_deliveries_verify_and_parse(env: Env) -> None:
    w = env.world
    client = env.bridge()
    await call(client, "create_webhook", RECEIVER)
    await call(client, "day_lock")
    await env.advance(20)
    assert len(w.receiver.hits) == 2
    for hit in w.receiver.hits:
        verify_bridge_webhook(hit.body, hit.headers, bridge_key=w.bridge.bridge_key, now=hit.at)
        client.verify_webhook(hit.body, hit.headers, max_skew=30)  # 20 s later, by our clock
    go_to, reached = w.receiver.events()
    assert (go_to.kind, go_to.bolt_state, go_to.key_local_id) == (
        EventKind.GO_TO_STATE,
        BoltState.DAY_LOCK,
        1,
    )
    assert (reached.kind, reached.bolt_state, reached.key_local_id) == (
        EventKind.STATE_CHANGED,
        BoltState.DAY_LOCK,
        1,
    )
    assert reached.mac_wifi == w.bridge.mac_wifi


async def test_command_for_current_state_gives_only_go_to(env: Env) -> None:
    w = env.world
    client = env.bridge()
    await call(client, "create_webhook", RECEIVER)
    await call(client, "night_lock")  # already night-locked
    await env.advance(20)
    assert [e.kind for e in w.receiver.events()] == [EventKind.GO_TO_STATE]


async def test_open_relatches_with_no_key(env: Env) -> None:
    w = env.world
    client = env.bridge()
    await call(client, "create_webhook", RECEIVER)
    await call(client, "open")
    await env.advance(30)
    events = w.receiver.events()
    assert [(e.kind, e.bolt_state) for e in events][-1] == (
        EventKind.STATE_CHANGED,
        BoltState.DAY_LOCK,
    )
    assert events[-1].key_local_id is None  # automatic re-latch: key 255
    assert any(e.kind is EventKind.STATE_CHANGED and e.bolt_state is BoltState.OPEN for e in events)


async def test_new_gateway_deliveries_need_the_opt_in(env: Env) -> None:
    w = env.world
    w.sim.add_bridge("b2", gateway="new")
    w.sim.add_lock("b2", lock_id="NewGatewayLock000001", bolt_state="night_lock")
    key = w.sim.add_key("NewGatewayLock000001", local_id=1)
    client = env.bridge("b2", key_secret=key.secret)
    await call(client, "create_webhook", RECEIVER)
    await call(client, "open")
    await env.advance(20)
    assert w.receiver.hits
    for hit in w.receiver.hits:
        assert not any(k.lower() == "timestamp" for k in hit.headers)
        with pytest.raises(MissingTimestampError):
            client.verify_webhook(hit.body, hit.headers)
        client.verify_webhook(hit.body, hit.headers, accept_missing_timestamp=True)
    assert w.receiver.events()[0].bolt_state is BoltState.OPEN


async def test_bridge_clock_skew_is_caught(env: Env) -> None:
    w = env.world
    w.bridge.clock_skew = 30.0
    client = env.bridge()
    await call(client, "create_webhook", RECEIVER)
    await call(client, "day_lock")
    await env.advance(20)
    hit = w.receiver.hits[0]
    key = w.bridge.bridge_key
    with pytest.raises(StaleTimestampError):
        verify_bridge_webhook(hit.body, hit.headers, bridge_key=key, now=hit.at)
    verify_bridge_webhook(hit.body, hit.headers, bridge_key=key, now=hit.at, max_skew=45)


async def test_stall_battery_online_and_manual_events(env: Env) -> None:
    w = env.world
    client = env.bridge()
    await call(client, "create_webhook", RECEIVER)
    w.sim.inject_stall(LOCK_ID)
    await call(client, "day_lock")
    await env.advance(30)
    kinds = [e.kind for e in w.receiver.events()]
    assert EventKind.MOTOR_STALL in kinds
    assert w.receiver.events()[-1].bolt_state is BoltState.UNKNOWN
    w.receiver.hits.clear()

    if env.loopback is not None:
        env.loopback.run(w.sim.battery_report(LOCK_ID, percentage=42))
        env.loopback.run(w.sim.set_online(LOCK_ID, False))
    else:
        await w.sim.battery_report(LOCK_ID, percentage=42)
        await w.sim.set_online(LOCK_ID, False)
    await env.advance(5)
    battery, offline = w.receiver.events()
    assert (battery.kind, battery.battery_percentage) == (EventKind.BATTERY, 42)
    assert (offline.kind, offline.online, offline.ble_strength) == (EventKind.ONLINE, False, -1)
    status = await call(client, "status")
    assert status.online is False
    await call(client, "open")
    assert _last(w).verdict is Verdict.OFFLINE

    if env.loopback is not None:
        env.loopback.run(w.sim.set_online(LOCK_ID, True))
    else:
        await w.sim.set_online(LOCK_ID, True)
    await env.advance(5)
    w.receiver.hits.clear()
    w.sim.manual(LOCK_ID, "keypad")
    await env.advance(20)
    keypad = w.receiver.events()[0]
    assert (keypad.kind, keypad.bolt_state, keypad.key_local_id) == (
        EventKind.GO_TO_STATE,
        BoltState.OPEN,
        None,
    )


# --------------------------------------------------------------------------- cloud


async def test_cloud_calls(env: Env) -> None:
    w = env.world
    client = env.cloud()
    (lock,) = await call(client, "list_locks")
    token_key = w.lock.keys[w.token.key_ids[LOCK_ID]]
    assert lock.id == LOCK_ID
    assert lock.name == "Room 1"
    assert lock.local_id == token_key.local_id
    assert lock.key_secret is not None
    assert lock.key_secret.get_secret_value() == token_key.secret
    assert lock.bridge_key is not None
    assert lock.bridge_key.get_secret_value() == w.bridge.bridge_key
    assert lock.bolt_state is BoltState.NIGHT_LOCK
    assert lock.online is True
    assert token_key.secret not in repr(lock)

    await call(client, "set_bolt_state", LOCK_ID, "DAY_LOCK")
    last = _last(w, "cloud")
    assert (last.verdict, last.action, last.key_local_id) == (
        Verdict.ACCEPTED,
        "day_lock",
        token_key.local_id,
    )
    await env.advance(20)
    assert w.lock.bolt_state == BoltState.DAY_LOCK
    upper = env.cloud(bolt_state_case="upper")
    await call(upper, "set_bolt_state", LOCK_ID, BoltState.NIGHT_LOCK)
    assert _last(w, "cloud").action == "night_lock"

    await call(client, "change_setting", LOCK_ID, "twist_assist", 1)
    await call(client, "change_setting", LOCK_ID, "hold_to_lock", -5)
    assert w.lock.settings["twist_assist"] == 1
    assert w.lock.settings["hold_to_lock"] == -5

    names = {k.name for k in await call(client, "list_keys", LOCK_ID)}
    assert "roomkey" in names
    assert len(names) == len(w.lock.keys)


async def test_cloud_webhooks_and_their_deliveries(env: Env) -> None:
    w = env.world
    client = env.cloud()
    many = await call(client, "create_webhook", LOCK_ID, RECEIVER + "/cloud")
    plain = await call(client, "create_webhook", LOCK_ID, RECEIVER + "/plain", many=False)
    assert isinstance(many, CloudWebhook)
    assert isinstance(plain, CloudWebhook)
    listed = await call(client, "list_webhooks", LOCK_ID)
    assert {h.id for h in listed} == {many.id, plain.id}
    await call(client, "delete_webhook", LOCK_ID, plain.id)
    assert [h.id for h in await call(client, "list_webhooks", LOCK_ID)] == [many.id]

    await call(env.bridge(), "day_lock")
    await env.advance(20)
    events = w.receiver.events("cloud")
    assert events
    assert all(e.source is EventSource.CLOUD for e in events)
    assert events[-1].kind is EventKind.STATE_CHANGED
    assert events[-1].bolt_state is BoltState.DAY_LOCK
    assert events[-1].lock_id == "6148"  # observed shape: numeric lock id
    assert events[-1].key_local_id == 1


async def test_cloud_documented_shape_and_duplicates(env: Env) -> None:
    w = env.world
    w.sim.config.cloud.duplicate_probability = 1.0
    w.sim.add_cloud_webhook(LOCK_ID, RECEIVER + "/doc", shape="documented")
    await call(env.bridge(), "day_lock")
    await env.advance(30)
    events = w.receiver.events("cloud")
    assert events[0].lock_id == LOCK_ID  # documented shape: alphanumeric id
    reached = [e for e in events if e.kind is EventKind.STATE_CHANGED]
    assert len(reached) == 2
    assert reached[0].raw == reached[1].raw


async def test_cloud_bad_token_is_redirected_to_login(env: Env) -> None:
    client = env.cloud(token="not-a-real-token")
    with pytest.raises(UnauthorizedError) as info:
        await call(client, "list_locks")
    assert info.value.status == 302


async def test_cloud_bad_token_json_401_mode(env: Env) -> None:
    env.world.sim.config.cloud.unauthenticated = "json401"
    with pytest.raises(UnauthorizedError) as info:
        await call(env.cloud(token="nope"), "set_bolt_state", LOCK_ID, "open")
    assert info.value.status == 401


async def test_cloud_deleted_key_is_key_revoked(env: Env) -> None:
    w = env.world
    w.sim.delete_key(LOCK_ID, w.token.key_ids[LOCK_ID])
    client = env.cloud()
    with pytest.raises(KeyRevokedError):
        await call(client, "set_bolt_state", LOCK_ID, "open")
    assert len(await call(client, "list_locks")) == 1  # reads keep working


async def test_cloud_per_minute_throttle(env: Env) -> None:
    env.world.sim.config.cloud.per_minute_limit = 2
    client = env.cloud()
    await call(client, "list_keys", LOCK_ID)
    await call(client, "list_keys", LOCK_ID)
    with pytest.raises(RateLimitedError) as info:
        await call(client, "list_keys", LOCK_ID)
    assert info.value.retry_after is not None
    assert 0 < info.value.retry_after <= 60
    await env.advance(61)
    await call(client, "list_keys", LOCK_ID)


async def test_cloud_status_block(env: Env) -> None:
    w = env.world
    w.sim.config.cloud.status_limits["api_locks"] = StatusLimit(limit=2)
    client = env.cloud()
    await call(client, "list_locks")
    await call(client, "list_locks")
    with pytest.raises(RateLimitedError) as info:
        await call(client, "list_locks")
    assert info.value.retry_after == pytest.approx(12 * 3600, abs=1)


async def test_cloud_block_is_remembered_by_the_budget(env: Env, tmp_path: Path) -> None:
    w = env.world
    w.sim.config.cloud.status_limits["api_locks"] = StatusLimit(limit=1)
    budget = StatusBudget(tmp_path / "cloud.json", clock=w.clock)
    client = env.cloud(status_budget=budget)
    live = await call(client, "list_locks")
    cached = await call(client, "list_locks")  # server blocks: cache served, block remembered
    assert [lock.id for lock in cached] == [lock.id for lock in live]
    assert budget.blocked_until() == pytest.approx(w.clock.time() + 12 * 3600, abs=1)


async def test_budget_keeps_under_the_servers_limit(env: Env, tmp_path: Path) -> None:
    w = env.world
    budget = StatusBudget(tmp_path / "app.json", clock=w.clock)  # 10 per 12 h
    client = env.app(status_budget=budget)
    results = []
    for _ in range(15):
        results.append(await call(client, "status"))
        await env.advance(60)
    assert [s.cached for s in results] == [False] * 10 + [True] * 5
    # The server (12 per 12 h) never blocked us: a budget-less client still gets answers.
    assert (await call(env.app(), "status")).cached is False
    await env.advance(12 * 3600)
    assert (await call(client, "status")).cached is False


async def test_app_status_block_without_budget(env: Env) -> None:
    w = env.world
    w.sim.config.cloud.status_limits["app_status"] = StatusLimit(limit=2)
    client = env.app()
    await call(client, "status")
    await call(client, "status")
    with pytest.raises(RateLimitedError):
        await call(client, "status")


# --------------------------------------------------------------------------- app.loqed.com


@pytest.mark.parametrize(("short", "length"), [(True, 45), (False, 53)])
async def test_app_self_signed_commands(env: Env, short: bool, length: int) -> None:
    w = env.world
    client = env.app(short_command=short)
    await call(client, "day_lock")
    last = _last(w, "app_api")
    assert (last.verdict, last.length, last.key_local_id) == (
        Verdict.ACCEPTED,
        length,
        w.app_key.local_id,
    )
    await env.advance(20)
    await call(client, "night_lock")
    await env.advance(20)
    await call(client, "open")
    assert [r.action for r in w.sim.received(LOCK_ID)] == ["day_lock", "night_lock", "open"]
    status = await call(client, "status")
    assert status.lock_id == LOCK_ID
    assert status.bridge_online is True


async def test_app_pasted_urls(env: Env) -> None:
    w = env.world
    client = env.app_from_urls()
    await call(client, "day_lock")
    await env.advance(20)
    assert w.lock.bolt_state == BoltState.DAY_LOCK
    await call(client, "night_lock")
    await call(client, "open")
    assert [(r.via, r.verdict, r.action) for r in w.sim.received(LOCK_ID)] == [
        ("app_api", Verdict.ACCEPTED, "day_lock"),
        ("app_api", Verdict.ACCEPTED, "night_lock"),
        ("app_api", Verdict.ACCEPTED, "open"),
    ]
    status = await call(client, "status")
    assert status.lock_id == LOCK_ID
    assert w.app_key.api_token not in repr(client)


async def test_app_bad_token(env: Env) -> None:
    client = env.app(api_token="0" * 40)
    with pytest.raises(UnauthorizedError):
        await call(client, "status")
    with pytest.raises(UnauthorizedError):
        await call(client, "open")


# --------------------------------------------------------------------------- faults


async def test_fault_status_code(env: Env) -> None:
    faults = env.world.sim.app.faults
    faults.add("/bridges/b1/status", "status", status=503, count=1)
    with pytest.raises(ServerError) as info:
        await call(env.bridge(), "status")
    assert info.value.status == 503
    faults.add("/api/locks", "status", status=500, count=1)
    with pytest.raises(ServerError):
        await call(env.cloud(), "list_locks")
    assert (await call(env.bridge(), "status")).bolt_state is BoltState.NIGHT_LOCK


async def test_fault_refuse(env: Env) -> None:
    w = env.world
    w.sim.app.faults.add("/bridges/b1/to_lock", "refuse", count=1)
    if env.loopback is None:
        with pytest.raises(NotSentError):
            await call(env.bridge(), "open")
    else:  # a socket server cannot refuse a TCP connection: it drops it instead
        with pytest.raises(MaybeDeliveredError):
            await call(env.bridge(), "open")
    assert w.sim.received(LOCK_ID) == []


async def test_fault_refuse_is_retried_when_opted_in_and_re_signed(env: Env) -> None:
    w = env.world
    if env.loopback is None:
        w.sim.app.faults.add("/bridges/b1/to_lock", "refuse", count=2)
        client = env.bridge(retries=2)
    else:  # a real refused connection: nothing listens on this port the first time
        port = _free_port()
        client = env.bridge(retries=0)
        bad = (BridgeClient if env.flavour == "sync" else AsyncBridgeClient)(
            f"http://127.0.0.1:{port}",
            key_secret=w.key.secret,
            local_key_id=1,
            clock=w.clock,
            retries=2,
            timeout=2,
        )
        with pytest.raises(NotSentError):
            await call(bad, "open")
    await call(client, "day_lock")
    received = w.sim.received(LOCK_ID)
    assert [(r.verdict, r.action) for r in received] == [(Verdict.ACCEPTED, "day_lock")]


async def test_fault_drop_before_is_maybe_delivered_and_not_retried(env: Env) -> None:
    w = env.world
    w.sim.app.faults.add("/bridges/b1/to_lock", "drop_before", count=1)
    with pytest.raises(MaybeDeliveredError):
        await call(env.bridge(retries=3), "open")  # a retry would have succeeded
    assert w.sim.received(LOCK_ID) == []


async def test_fault_drop_after_shows_why_maybe_delivered_matters(env: Env) -> None:
    w = env.world
    w.sim.app.faults.add("/bridges/b1/to_lock", "drop_after", count=1)
    with pytest.raises(MaybeDeliveredError):
        await call(env.bridge(retries=3), "open")
    received = w.sim.received(LOCK_ID)
    assert [(r.verdict, r.action) for r in received] == [(Verdict.ACCEPTED, "open")]


async def test_fault_latency_becomes_a_timeout(socket_env: Env) -> None:
    env = socket_env
    w = env.world
    w.sim.app.faults.add("/bridges/b1/to_lock", "latency", seconds=0.6, count=1)
    with pytest.raises(MaybeDeliveredError) as info:
        await call(env.bridge(timeout=0.15, retries=3), "day_lock")
    assert info.value.cause == "ReadTimeout"
    for _ in range(100):  # real network latency: wait (bounded) for the server to finish
        if w.sim.received(LOCK_ID):
            break
        await asyncio.sleep(0.05)
    assert [r.verdict for r in w.sim.received(LOCK_ID)] == [Verdict.ACCEPTED]


async def test_fault_internet_down_bridge_stops_answering(env: Env) -> None:
    w = env.world
    w.sim.set_internet("b1", False)
    await env.advance(w.sim.config.internet_down_refuse_after + 1)
    with pytest.raises(TransportError) as info:
        await call(env.bridge(), "status")
    expected = NotSentError if env.loopback is None else MaybeDeliveredError
    assert isinstance(info.value, expected)
    w.sim.set_internet("b1", True)
    assert (await call(env.bridge(), "status")).bolt_state is BoltState.NIGHT_LOCK


async def test_fault_drop_on_cloud_command(env: Env) -> None:
    w = env.world
    w.sim.app.faults.add("/api/locks", "drop_after", count=1, method="GET")
    with pytest.raises(MaybeDeliveredError):
        await call(env.cloud(retries=2), "set_bolt_state", LOCK_ID, "day_lock")
    assert [(r.via, r.verdict) for r in w.sim.received(LOCK_ID)] == [("cloud", Verdict.ACCEPTED)]


def test_loopback_helper_starts_and_stops(world: World) -> None:
    loopback = Loopback(world.sim)
    try:
        with httpx.Client() as http:
            assert http.get(f"{loopback.url}/health").json()["status"] == "ok"
    finally:
        loopback.close()


async def test_no_secret_in_any_log_line_over_a_real_socket(
    socket_env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env = socket_env
    w = env.world
    caplog.set_level(logging.DEBUG)
    await call(env.bridge(), "night_lock")
    await call(env.bridge(), "list_webhooks")
    await call(env.app(), "open")
    await call(env.app_from_urls(), "day_lock")
    await call(env.cloud(), "set_bolt_state", LOCK_ID, "open")
    w.sim.app.faults.add("/bridges/b1/to_lock", "drop_before", count=1)
    with pytest.raises(MaybeDeliveredError):
        await call(env.bridge(), "open")
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "to_lock" in text  # the request lines were logged, redacted
    assert "command_signed_base64" not in text
    for secret in (
        w.key.secret,
        w.bridge.bridge_key,
        w.token.token,
        w.app_key.api_token,
        w.app_key.secret,
    ):
        assert secret not in text
        assert quote(secret, safe="") not in text
