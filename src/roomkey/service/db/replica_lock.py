"""A named exclusive lock that every roomkey process on one database shares.

* PostgreSQL (replicas on several hosts): a session-level ``pg_advisory_lock`` taken with
  ``pg_try_advisory_lock`` polling on a dedicated pooled connection in autocommit mode, so no
  transaction stays open while the lock is held. On release the connection drops every
  advisory lock it holds (``pg_advisory_unlock_all``) before going back to the pool; if that
  fails the connection is discarded, and PostgreSQL frees the lock with the session.
* SQLite (one host): a file lock (``filelock``) next to the database file. ``BEGIN IMMEDIATE``
  would do too, but would stop every other writer for as long as the lock is held.

Both give up after ``timeout`` seconds with :class:`TimeoutError`. The async variant runs each
short attempt in a worker thread and sleeps with asyncio in between, so the event loop never
blocks; a cancelled wait still lets the attempt in flight finish and then releases.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

from filelock import FileLock, Timeout
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

__all__ = ["ReplicaLock", "advisory_key"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def advisory_key(name: str) -> int:
    """A stable signed 64-bit PostgreSQL advisory-lock key for ``name``."""
    digest = hashlib.sha256(f"roomkey:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class _Backend(Protocol):
    """One way to hold the lock: open a handle, try (non-blocking), close (releasing)."""

    def open(self) -> object: ...

    def try_acquire(self, handle: object) -> bool: ...

    def close(self, handle: object) -> None: ...


class _AdvisoryLock:
    def __init__(self, engine: Engine, key: int) -> None:
        self._engine = engine
        self._key = key

    def open(self) -> object:
        return self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def try_acquire(self, handle: object) -> bool:
        assert isinstance(handle, Connection)
        got = handle.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key})
        return bool(got.scalar_one())

    def close(self, handle: object) -> None:
        assert isinstance(handle, Connection)
        try:
            handle.execute(text("SELECT pg_advisory_unlock_all()"))
        except Exception as exc:  # e.g. the connection broke while the lock was held
            log.warning("could not release an advisory lock (%s); dropping the connection, "
                        "which releases it", type(exc).__name__)
            handle.invalidate()  # ends the session: PostgreSQL frees its locks
        finally:
            handle.close()


class _FileLock:
    def __init__(self, path: Path) -> None:
        self._path = path

    def open(self) -> object:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(self._path, mode=0o600, thread_local=False, is_singleton=False)

    def try_acquire(self, handle: object) -> bool:
        assert isinstance(handle, FileLock)
        try:
            handle.acquire(timeout=0)
        except Timeout:
            return False
        return True

    def close(self, handle: object) -> None:
        assert isinstance(handle, FileLock)
        if handle.is_locked:
            handle.release(force=True)


class ReplicaLock:
    """``with lock.hold(timeout): ...`` / ``async with lock.hold_async(timeout): ...``."""

    def __init__(self, engine: Engine, name: str, *, poll_interval: float = 0.05) -> None:
        self.name = name
        self._poll = poll_interval
        self._backend: _Backend
        if engine.dialect.name == "postgresql":
            self._backend = _AdvisoryLock(engine, advisory_key(name))
            self.kind = "postgresql advisory lock"
        else:
            database = engine.url.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                path = Path(database).expanduser()
                self._backend = _FileLock(path.with_name(f"{path.name}.{name}.lock"))
                self.kind = "file lock next to the SQLite database"
            else:
                raise ValueError("an in-memory SQLite database cannot be shared by processes")

    def __repr__(self) -> str:
        return f"ReplicaLock({self.name!r}, {self.kind})"

    def _busy(self, timeout: float) -> TimeoutError:
        return TimeoutError(f"{self.name}: still held by another process after {timeout:g}s")

    @contextlib.contextmanager
    def hold(self, timeout: float) -> Iterator[None]:
        """Blocking acquire, polling every ``poll_interval`` seconds until ``timeout``."""
        deadline = time.monotonic() + timeout
        handle = self._backend.open()
        try:
            while not self._backend.try_acquire(handle):
                if time.monotonic() >= deadline:
                    raise self._busy(timeout)
                time.sleep(self._poll)
            yield
        finally:
            self._backend.close(handle)

    @contextlib.asynccontextmanager
    async def hold_async(self, timeout: float) -> AsyncIterator[None]:  # noqa: ASYNC109
        """Acquire without blocking the event loop (attempts run in a worker thread)."""
        deadline = time.monotonic() + timeout
        handle = await _in_thread(self._backend.open, cleanup=self._backend.close)
        try:
            while not await _in_thread(self._backend.try_acquire, handle):
                if time.monotonic() >= deadline:
                    raise self._busy(timeout)
                await asyncio.sleep(self._poll)
            yield
        finally:
            await _in_thread(self._backend.close, handle)


async def _in_thread(
    fn: Callable[..., T], *args: object, cleanup: Callable[[T], None] | None = None
) -> T:
    """Run ``fn`` in a thread. If we are cancelled meanwhile, let it finish first (a handle is
    never used by two threads at once), hand its result to ``cleanup``, then re-raise."""
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            result = await future
            if cleanup is not None:
                await asyncio.to_thread(cleanup, result)
        raise
