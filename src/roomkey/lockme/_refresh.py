"""The lock behind single-flight token refresh: a thread lock plus a cross-process lock.

The thread lock (one per lock file or store, shared by every client in the process) serialises
threads and coroutines of this process. The cross-process lock is the store's own when it is a
:class:`~roomkey.lockme.token.LockingTokenStore` (e.g. a database advisory lock that several
hosts share), else a file lock (``filelock``, next to the token file) when the store names a
``lock_path``, else none (memory stores). The async variant polls with ``asyncio.sleep`` so the
event loop never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import NotSentError
from .token import LockingTokenStore

__all__ = ["RefreshLock"]

_registry_guard = threading.Lock()
_thread_locks: dict[str, threading.Lock] = {}


def _thread_lock(key: str) -> threading.Lock:
    with _registry_guard:
        lock = _thread_locks.get(key)
        if lock is None:
            lock = _thread_locks[key] = threading.Lock()
        return lock


class RefreshLock:
    """Exclusive right to refresh the token of one store, across threads and processes.

    ``store_lock``: a store providing its own cross-process lock; it replaces the file lock
    (``lock_path`` is then ignored).
    """

    def __init__(
        self,
        *,
        key: str,
        lock_path: Path | None,
        timeout: float = 60.0,
        poll_interval: float = 0.02,
        store_lock: LockingTokenStore | None = None,
    ) -> None:
        self._store_lock = store_lock
        self._lock_path = None if store_lock is not None else lock_path
        thread_key = str(self._lock_path) if self._lock_path is not None else key
        self._thread_lock = _thread_lock(thread_key)
        self._timeout = timeout
        self._poll = poll_interval

    def _file_lock(self) -> FileLock | None:
        if self._lock_path is None:
            return None
        self._lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return FileLock(self._lock_path, mode=0o600, thread_local=False, is_singleton=False)

    def _timed_out(self) -> NotSentError:
        return NotSentError(
            f"timed out after {self._timeout:g}s waiting for the token refresh lock"
        )

    def _left(self, deadline: float) -> float:
        return max(0.0, deadline - time.monotonic())

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Blocking acquire (threads of sync clients)."""
        deadline = time.monotonic() + self._timeout
        if not self._thread_lock.acquire(timeout=self._timeout):
            raise self._timed_out()
        try:
            with self._cross_process(deadline):
                yield
        finally:
            self._thread_lock.release()

    @contextlib.contextmanager
    def _cross_process(self, deadline: float) -> Iterator[None]:
        if self._store_lock is not None:
            with contextlib.ExitStack() as stack:
                try:
                    stack.enter_context(self._store_lock.refresh_lock(self._left(deadline)))
                except TimeoutError:
                    raise self._timed_out() from None
                yield
            return
        file_lock = self._file_lock()
        if file_lock is None:
            yield
            return
        try:
            file_lock.acquire(timeout=self._left(deadline), poll_interval=self._poll)
        except Timeout:
            raise self._timed_out() from None
        try:
            yield
        finally:
            file_lock.release()

    @contextlib.asynccontextmanager
    async def hold_async(self) -> AsyncIterator[None]:
        """Non-blocking acquire for event loops: poll, sleeping with asyncio in between."""
        deadline = time.monotonic() + self._timeout
        while not self._thread_lock.acquire(blocking=False):
            if time.monotonic() >= deadline:
                raise self._timed_out()
            await asyncio.sleep(self._poll)
        try:
            async with self._cross_process_async(deadline):
                yield
        finally:
            self._thread_lock.release()

    @contextlib.asynccontextmanager
    async def _cross_process_async(self, deadline: float) -> AsyncIterator[None]:
        if self._store_lock is not None:
            async with contextlib.AsyncExitStack() as stack:
                lock = self._store_lock.async_refresh_lock(self._left(deadline))
                try:
                    await stack.enter_async_context(lock)
                except TimeoutError:
                    raise self._timed_out() from None
                yield
            return
        file_lock = self._file_lock()
        if file_lock is None:
            yield
            return
        while True:
            try:
                file_lock.acquire(timeout=0)
                break
            except Timeout:
                if time.monotonic() >= deadline:
                    raise self._timed_out() from None
                await asyncio.sleep(self._poll)
        try:
            yield
        finally:
            file_lock.release()
