"""The refresh lock: async waiters keep the event loop running; timeouts are typed."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
import respx
from filelock import FileLock

from roomkey.lockme import AsyncLockmeClient, FileTokenStore, NotSentError, OAuthConfig, Token
from roomkey.lockme._refresh import RefreshLock

from .conftest import API, BASE, NOW, FakeClock


async def test_async_client_waits_for_the_file_lock_without_blocking_the_loop(
    api: respx.MockRouter, oauth: OAuthConfig, clock: FakeClock, tmp_path: Path
) -> None:
    store = FileTokenStore(tmp_path / "token.json")
    store.save(Token(access_token="old", refresh_token="r1", expires=NOW - 5))
    refresh = api.post(API + "/access_token").respond(
        json={"access_token": "new", "refresh_token": "r2", "expires_in": 3600}
    )
    api.get(BASE + "/test").respond(json="OK")
    # "another process" holds the file lock (a separate flock on the same lock file)
    assert store.lock_path is not None
    holder = FileLock(store.lock_path, thread_local=False, is_singleton=False)
    held, release = threading.Event(), threading.Event()

    def other_process() -> None:
        with holder:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=other_process)
    thread.start()
    assert held.wait(10)
    client = AsyncLockmeClient(oauth, store, clock=clock, lock_timeout=10)
    call = asyncio.create_task(client.test())
    ticks = 0
    while ticks < 20:  # the loop keeps running while the client waits for the lock
        await asyncio.sleep(0)
        ticks += 1
    assert not call.done()
    assert refresh.call_count == 0
    release.set()
    assert await call == "OK"
    thread.join(10)
    assert refresh.call_count == 1
    loaded = store.load()
    assert loaded is not None
    assert loaded.access_token == "new"
    await client.aclose()


def test_lock_timeout_is_not_sent_error(tmp_path: Path) -> None:
    path = tmp_path / "t.lock"
    first = RefreshLock(key="a", lock_path=path, timeout=5)
    second = RefreshLock(key="b", lock_path=path, timeout=0.05)
    # same path -> same thread lock in this process: times out, nothing is sent
    with first.hold(), pytest.raises(NotSentError), second.hold():
        pytest.fail("acquired a held lock")


async def test_async_lock_timeout_is_not_sent_error(tmp_path: Path) -> None:
    path = tmp_path / "t.lock"
    first = RefreshLock(key="a", lock_path=path, timeout=5)
    second = RefreshLock(key="b", lock_path=path, timeout=0.05)
    with first.hold(), pytest.raises(NotSentError):
        async with second.hold_async():
            pytest.fail("acquired a held lock")
    async with second.hold_async():  # free again once released
        assert path.exists()
