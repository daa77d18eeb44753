"""The service's Lockme client: a bound on requests in flight for every caller, connection
pools split into small shards, and a short-lived cache over the database token store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send
from test_runtime_harness import CLIENT_SECRET, config_text

from roomkey.lockme import MaybeDeliveredError, MemoryTokenStore, NotSentError, Token
from roomkey.service.config import parse_config
from roomkey.service.demo import LoopbackServer
from roomkey.service.lockme_gateway import (
    LOCKME_TIMEOUT,
    BoundedLockmeClient,
    CachedTokenStore,
    ShardedTransport,
    build_lockme_client,
)
from roomkey.sim.clock import SimClock
from roomkey.sim.lockme import LockmeSimulator

SAFETY = 30.0
"""Real seconds to wait for something that must happen (a hang guard, not a timing)."""


class Overlap:
    """ASGI wrapper: counts requests in flight; holds each until ``want`` are in flight (or
    briefly, if that never happens), so requests that can overlap do."""

    def __init__(self, app: ASGIApp, want: int) -> None:
        self.app = app
        self.want = want
        self.now = 0
        self.peak = 0
        self.full = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.now += 1
        self.peak = max(self.peak, self.now)
        if self.now >= self.want:
            self.full.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.full.wait(), timeout=0.5)
            await self.app(scope, receive, send)
        finally:
            self.now -= 1


async def test_every_request_of_the_client_counts_against_max_concurrency(
    tmp_path: Path,
) -> None:
    text = config_text(101, 102).replace("[lockme]\n", "[lockme]\nmax_concurrency = 2\n", 1)
    config = parse_config(text, base_dir=tmp_path)
    sim = LockmeSimulator(SimClock(manual=True))
    sim.add_oauth_client("roomkey", CLIENT_SECRET, "http://127.0.0.1:8080/lockme/callback")
    counter = Overlap(sim.app, want=3)  # would reach 3 if the client let it
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=counter), base_url=config.lockme.api_domain
    )
    store = MemoryTokenStore(Token.model_validate(sim.issue_token("roomkey")))
    client = build_lockme_client(config, clock=lambda: 0.0, store=store, http_client=http)
    try:
        assert isinstance(client, BoundedLockmeClient)
        assert client.max_concurrency == 2
        users = await asyncio.gather(*(client.me() for _ in range(6)))
        assert len(users) == 6
        assert counter.peak == 2
    finally:
        await client.aclose()
        await http.aclose()
        await sim.aclose()


async def test_the_built_client_owns_a_sharded_transport(tmp_path: Path) -> None:
    config = parse_config(config_text(101, 102), base_dir=tmp_path)  # max_concurrency 8
    client = build_lockme_client(config, clock=lambda: 0.0, store=MemoryTokenStore())
    http = client._http
    transport = http._transport
    assert isinstance(transport, ShardedTransport)
    assert len(transport.pools) == 8  # 8 connections in pools of one
    await client.aclose()
    assert http.is_closed


def test_shards_are_sized_to_the_connection_bound() -> None:
    assert len(ShardedTransport(32).pools) == 32
    assert len(ShardedTransport(32, shard_size=4).pools) == 8
    assert len(ShardedTransport(3).pools) == 3
    assert len(ShardedTransport(3, shard_size=4).pools) == 1
    assert len(ShardedTransport(9, shard_size=4).pools) == 3
    assert len(ShardedTransport(1, shard_size=0).pools) == 1


def test_every_shard_shares_one_tls_context() -> None:
    pools = ShardedTransport(16).pools
    contexts = {id(pool._pool._ssl_context) for pool in pools}
    assert len(contexts) == 1


@contextlib.asynccontextmanager
async def _loopback(app: ASGIApp) -> AsyncIterator[str]:
    server = LoopbackServer(app)
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def test_sharded_requests_overlap_and_release_their_pool() -> None:
    counter = Overlap(_ok, want=8)
    transport = ShardedTransport(8, shard_size=4)
    async with _loopback(counter) as url, httpx.AsyncClient(transport=transport) as http:

        async def get() -> int:
            return (await http.get(f"{url}/x")).status_code

        codes = await asyncio.wait_for(asyncio.gather(*(get() for _ in range(8))), SAFETY)
        assert codes == [200] * 8
        assert counter.peak == 8  # both pools carried requests at once
        assert transport.busy == [0, 0]  # every response closed gives its slot back
        # and a second round reuses the pools the same way
        codes = await asyncio.wait_for(asyncio.gather(*(get() for _ in range(8))), SAFETY)
        assert codes == [200] * 8
        assert transport.busy == [0, 0]


def _built_client(tmp_path: Path, url: str, store: MemoryTokenStore) -> BoundedLockmeClient:
    text = config_text(101, 102).replace(
        'api_domain = "http://lockme.test"', f'api_domain = "{url}"'
    )
    config = parse_config(text, base_dir=tmp_path)
    client = build_lockme_client(config, clock=lambda: 0.0, store=store)
    assert isinstance(client, BoundedLockmeClient)
    return client


def _sim_and_store() -> tuple[LockmeSimulator, MemoryTokenStore]:
    sim = LockmeSimulator(SimClock(manual=True))
    sim.add_oauth_client("roomkey", CLIENT_SECRET, "http://127.0.0.1:8080/lockme/callback")
    return sim, MemoryTokenStore(Token.model_validate(sim.issue_token("roomkey")))


async def test_the_built_client_sends_straight_to_its_sharded_transport(tmp_path: Path) -> None:
    sim, store = _sim_and_store()
    seen: list[str] = []

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            seen.append(scope["path"])
        await sim.app(scope, receive, send)

    async with _loopback(recording) as url:
        client = _built_client(tmp_path, url, store)
        direct = client._direct
        assert direct is not None
        sent: list[httpx.Request] = []
        fetch = direct.fetch

        async def spy(request: httpx.Request) -> httpx.Response:
            sent.append(request)
            return await fetch(request)

        direct.fetch = spy  # type: ignore[method-assign]
        try:
            users = await asyncio.wait_for(
                asyncio.gather(*(client.me() for _ in range(12))), SAFETY
            )
        finally:
            await client.aclose()
    await sim.aclose()
    assert len({user.model_dump_json() for user in users}) == 1
    assert len(users) == 12
    assert len(sent) == 12  # every request took the direct path …
    assert len(seen) == 12  # … and reached the server once
    # the client's timeouts still apply, and every pool slot was given back
    for request in sent:
        assert request.extensions["timeout"] == LOCKME_TIMEOUT.as_dict()
    assert direct.busy == [0] * len(direct.pools)


async def test_the_direct_path_maps_a_refused_connection_to_not_sent(tmp_path: Path) -> None:
    sim, store = _sim_and_store()
    async with _loopback(sim.app) as url:
        pass  # nothing listens on that port any more
    await sim.aclose()
    client = _built_client(tmp_path, url, store)
    try:
        with pytest.raises(NotSentError, match="was not sent") as caught:
            await asyncio.wait_for(client.me(), SAFETY)
        assert url not in str(caught.value)
        assert client._direct is not None
        assert client._direct.busy == [0] * len(client._direct.pools)
    finally:
        await client.aclose()


async def test_the_direct_path_maps_a_cut_answer_to_maybe_delivered(tmp_path: Path) -> None:
    _sim, store = _sim_and_store()
    await _sim.aclose()

    async def cut_short(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-length", b"100")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{", "more_body": False})

    async with _loopback(cut_short) as url:
        client = _built_client(tmp_path, url, store)
        try:
            with pytest.raises(MaybeDeliveredError, match="may have been delivered"):
                await asyncio.wait_for(client.me(), SAFETY)
            assert client._direct is not None
            assert client._direct.busy == [0] * len(client._direct.pools)
        finally:
            await client.aclose()


# --------------------------------------------------------------------------- token cache


class CountingStore:
    """The part of DatabaseTokenStore the cache uses, counting reads."""

    def __init__(self, token: Token | None) -> None:
        self.token = token
        self.reads = 0
        self.locked = 0
        self.closed = False
        self.location = "the database (secret 'lockme.oauth_token')"

    def load(self) -> Token | None:
        self.reads += 1
        return self.token

    async def aload(self) -> Token | None:
        return self.load()

    def save(self, token: Token) -> None:
        self.token = token

    async def asave(self, token: Token) -> None:
        self.save(token)

    @contextlib.contextmanager
    def refresh_lock(self, timeout: float) -> Iterator[None]:
        self.locked += 1
        yield

    @contextlib.asynccontextmanager
    async def async_refresh_lock(self, timeout: float) -> AsyncIterator[None]:  # noqa: ASYNC109
        self.locked += 1
        yield

    def close(self) -> None:
        self.closed = True


OLD = Token(access_token="at-old-secret", refresh_token="rt-old-secret", expires=2e9)
NEW = Token(access_token="at-new-secret", refresh_token="rt-new-secret", expires=2e9)


async def test_the_token_is_read_once_per_ttl_and_fresh_under_the_refresh_lock() -> None:
    now = [0.0]
    inner = CountingStore(OLD)
    store = CachedTokenStore(cast(Any, inner), ttl=5.0, clock=lambda: now[0])
    assert await store.aload() == OLD
    assert store.load() == OLD
    assert await store.aload() == OLD
    assert inner.reads == 1  # one read serves every request within the ttl
    inner.token = NEW  # another replica rotated it
    now[0] = 4.9
    assert await store.aload() == OLD
    now[0] = 5.0
    assert await store.aload() == NEW  # the ttl ran out
    assert inner.reads == 2
    inner.token = OLD
    async with store.async_refresh_lock(1.0):  # a refresh always sees the stored token
        assert await store.aload() == OLD
    with store.refresh_lock(1.0):
        assert store.load() == OLD
    assert inner.reads == 4
    assert inner.locked == 2
    await store.asave(NEW)  # our own refresh: cached at once, no read
    assert await store.aload() == NEW
    assert inner.token == NEW
    assert inner.reads == 4
    assert "secret" not in repr(store).replace("'lockme.oauth_token'", "")
    store.close()
    assert inner.closed


async def test_a_missing_token_is_not_cached() -> None:
    inner = CountingStore(None)
    store = CachedTokenStore(cast(Any, inner), ttl=5.0, clock=lambda: 0.0)
    assert await store.aload() is None
    inner.token = OLD  # logged in meanwhile
    assert await store.aload() == OLD
    assert inner.reads == 2
