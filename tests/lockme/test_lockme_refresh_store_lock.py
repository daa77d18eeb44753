"""A store may bring its own cross-process refresh lock (``LockingTokenStore``) and awaitable
load/save (``AsyncTokenStore``); the clients use them instead of the file lock / sync calls.

The "backend" below plays shared storage on another host: each client gets its own store
object (so the in-process thread lock does not serialise them), only the store's lock does.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import respx

from roomkey.lockme import (
    AsyncLockmeClient,
    AsyncTokenStore,
    FileTokenStore,
    LockingTokenStore,
    LockmeClient,
    MemoryTokenStore,
    NotSentError,
    OAuthConfig,
    Token,
)

from .conftest import API, BASE, NOW, FakeClock


@dataclass
class Backend:
    """Shared token storage with a lock, like a database row plus an advisory lock."""

    token: Token
    lock: threading.Lock = field(default_factory=threading.Lock)
    acquisitions: int = 0
    async_loads: int = 0
    async_saves: int = 0


class LockingStore:
    """A :class:`LockingTokenStore` (and :class:`AsyncTokenStore`) over a :class:`Backend`."""

    def __init__(self, backend: Backend, *, lock_path: Path | None = None) -> None:
        self.backend = backend
        self.lock_path = lock_path  # present but must not be used: the store's lock wins

    def load(self) -> Token | None:
        return self.backend.token

    def save(self, token: Token) -> None:
        self.backend.token = token

    async def aload(self) -> Token | None:
        self.backend.async_loads += 1
        return self.backend.token

    async def asave(self, token: Token) -> None:
        self.backend.async_saves += 1
        self.backend.token = token

    @contextlib.contextmanager
    def refresh_lock(self, timeout: float) -> Iterator[None]:
        if not self.backend.lock.acquire(timeout=timeout):
            raise TimeoutError("store lock busy")
        self.backend.acquisitions += 1
        try:
            yield
        finally:
            self.backend.lock.release()

    @contextlib.asynccontextmanager
    async def async_refresh_lock(self, timeout: float) -> AsyncIterator[None]:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while not self.backend.lock.acquire(blocking=False):
            if time.monotonic() >= deadline:
                raise TimeoutError("store lock busy")
            await asyncio.sleep(0.001)
        self.backend.acquisitions += 1
        try:
            yield
        finally:
            self.backend.lock.release()


class RotatingTokenEndpoint:
    """``/access_token`` that rotates refresh tokens; a reused one gets ``invalid_grant``."""

    def __init__(self) -> None:
        self.refresh = "r0"
        self.generation = 0
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        form = dict(httpx.QueryParams(request.content.decode()))
        if form.get("refresh_token") != self.refresh:
            return httpx.Response(400, json={"error": "invalid_grant"})
        self.generation += 1
        self.refresh = f"r{self.generation}"
        return httpx.Response(
            200,
            json={
                "access_token": f"a{self.generation}",
                "refresh_token": self.refresh,
                "expires_in": 3600,
            },
        )


def expired() -> Token:
    return Token(access_token="a0", refresh_token="r0", expires=NOW - 5)


def test_the_protocols_recognise_a_locking_store_and_not_the_file_or_memory_stores(
    tmp_path: Path,
) -> None:
    store = LockingStore(Backend(expired()))
    assert isinstance(store, LockingTokenStore)
    assert isinstance(store, AsyncTokenStore)
    for plain in (FileTokenStore(tmp_path / "t.json"), MemoryTokenStore()):
        assert not isinstance(plain, LockingTokenStore)
        assert not isinstance(plain, AsyncTokenStore)


def test_sync_clients_on_separate_stores_refresh_once_under_the_store_lock(
    api: respx.MockRouter, oauth: OAuthConfig, clock: FakeClock, tmp_path: Path
) -> None:
    backend = Backend(expired())
    endpoint = RotatingTokenEndpoint()
    api.post(API + "/access_token").mock(side_effect=endpoint)
    api.get(BASE + "/test").respond(json="OK")
    lock_file = tmp_path / "never.lock"
    results: list[str] = []
    start = threading.Barrier(4)

    def caller() -> None:
        store = LockingStore(backend, lock_path=lock_file)
        with LockmeClient(oauth, store, clock=clock, lock_timeout=10) as client:
            start.wait(10)
            results.append(client.test())

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert results == ["OK"] * 4
    assert endpoint.requests == 1  # single flight: the others reused the rotated token
    assert backend.token.access_token == "a1"
    assert backend.acquisitions >= 1
    assert not lock_file.exists()  # the file lock was not used


async def test_async_clients_on_separate_stores_refresh_once_and_use_aload_asave(
    api: respx.MockRouter, oauth: OAuthConfig, clock: FakeClock
) -> None:
    backend = Backend(expired())
    endpoint = RotatingTokenEndpoint()
    api.post(API + "/access_token").mock(side_effect=endpoint)
    seen: list[str] = []

    def echo(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json="OK")

    api.get(BASE + "/test").mock(side_effect=echo)
    clients = [
        AsyncLockmeClient(oauth, LockingStore(backend), clock=clock, lock_timeout=10)
        for _ in range(5)
    ]
    try:
        assert await asyncio.gather(*(c.test() for c in clients)) == ["OK"] * 5
    finally:
        for client in clients:
            await client.aclose()
    assert endpoint.requests == 1
    assert set(seen) == {"Bearer a1"}
    assert backend.async_saves == 1
    assert backend.async_loads >= 5


def test_a_busy_store_lock_times_out_as_not_sent_without_a_refresh(
    api: respx.MockRouter, oauth: OAuthConfig, clock: FakeClock
) -> None:
    backend = Backend(expired())
    endpoint = RotatingTokenEndpoint()
    api.post(API + "/access_token").mock(side_effect=endpoint)
    with backend.lock, LockmeClient(  # "another replica" holds the lock
        oauth, LockingStore(backend), clock=clock, lock_timeout=0.05
    ) as client, pytest.raises(NotSentError, match="refresh lock"):
        client.refresh_token()
    assert endpoint.requests == 0


async def test_a_busy_store_lock_times_out_async_and_the_loop_keeps_running(
    api: respx.MockRouter, oauth: OAuthConfig, clock: FakeClock
) -> None:
    backend = Backend(expired())
    endpoint = RotatingTokenEndpoint()
    api.post(API + "/access_token").mock(side_effect=endpoint)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    running = asyncio.create_task(ticker())
    try:
        with backend.lock:
            async with AsyncLockmeClient(
                oauth, LockingStore(backend), clock=clock, lock_timeout=0.1
            ) as client:
                with pytest.raises(NotSentError, match="refresh lock"):
                    await client.refresh_token()
    finally:
        running.cancel()
    assert endpoint.requests == 0
    assert ticks > 10


def test_a_timeout_error_raised_inside_the_refresh_is_not_mistaken_for_a_busy_lock(
    api: respx.MockRouter, oauth: OAuthConfig, clock: FakeClock
) -> None:
    backend = Backend(expired())
    api.post(API + "/access_token").mock(side_effect=TimeoutError("body"))
    with LockmeClient(oauth, LockingStore(backend), clock=clock) as client, pytest.raises(
        TimeoutError, match="body"
    ):
        client.refresh_token()
    assert not backend.lock.locked()  # released on the way out
