"""The lock behind single-flight token refresh: a thread lock plus a file lock.

The thread lock (one per lock file, shared by every client in the process) serialises threads
and coroutines of this process; the file lock (``filelock``, next to the token file) serialises
processes. The async variant polls both with ``asyncio.sleep`` so the event loop never blocks.
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
    """Exclusive right to refresh the token of one store, across threads and processes."""

    def __init__(
        self,
        *,
        key: str,
        lock_path: Path | None,
        timeout: float = 60.0,
        poll_interval: float = 0.02,
    ) -> None:
        self._thread_lock = _thread_lock(str(lock_path) if lock_path is not None else key)
        self._lock_path = lock_path
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

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Blocking acquire (threads of sync clients)."""
        if not self._thread_lock.acquire(timeout=self._timeout):
            raise self._timed_out()
        try:
            file_lock = self._file_lock()
            if file_lock is None:
                yield
                return
            try:
                file_lock.acquire(timeout=self._timeout, poll_interval=self._poll)
            except Timeout:
                raise self._timed_out() from None
            try:
                yield
            finally:
                file_lock.release()
        finally:
            self._thread_lock.release()

    @contextlib.asynccontextmanager
    async def hold_async(self) -> AsyncIterator[None]:
        """Non-blocking acquire for event loops: poll, sleeping with asyncio in between."""
        deadline = time.monotonic() + self._timeout
        while not self._thread_lock.acquire(blocking=False):
            if time.monotonic() >= deadline:
                raise self._timed_out()
            await asyncio.sleep(self._poll)
        try:
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
        finally:
            self._thread_lock.release()
