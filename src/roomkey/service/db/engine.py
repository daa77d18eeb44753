"""Async engine and session factory for SQLite (embedded) and PostgreSQL (replicas).

SQLite connections get ``journal_mode=WAL``, ``busy_timeout`` and ``foreign_keys=ON``, and every
transaction starts with ``BEGIN IMMEDIATE``: SQLite has one writer at a time, and taking the write
lock up front makes concurrent writers wait (``busy_timeout``) instead of failing when a
read-then-write transaction finds the snapshot it read from already stale. Keep transactions short.

Writers of one engine queue **in-process** for that lock: an :class:`asyncio.Lock` per engine is
taken before ``BEGIN IMMEDIATE`` and released at commit, rollback or connection check-in, so a
waiting transaction is woken the moment the previous one ends instead of sleep-polling in SQLite's
busy handler (``busy_timeout`` still covers other processes on the same file). As before, a task
must not begin a second transaction on the same engine while its first one is open: that waited
for ``busy_timeout`` and failed, and now waits as long for the queue and fails the same way.
PostgreSQL engines are untouched.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.util import await_only

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "UnsupportedDatabaseError",
    "create_engine",
    "create_session_factory",
    "dialect_of",
    "normalize_url",
    "redact_url",
]

SQLITE_BUSY_TIMEOUT_MS = 30_000


class UnsupportedDatabaseError(ValueError):
    """The database URL names a backend roomkey does not run on."""


def normalize_url(url: str | URL) -> URL:
    """``url`` with roomkey's async driver: ``sqlite+aiosqlite`` or ``postgresql+psycopg``."""
    parsed = make_url(url) if isinstance(url, str) else url
    backend = parsed.get_backend_name()
    driver = parsed.get_driver_name()
    if backend == "sqlite":
        if driver not in ("aiosqlite", "pysqlite"):
            raise UnsupportedDatabaseError(
                f"SQLite driver {driver!r} is not supported (use aiosqlite)"
            )
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend == "postgresql":
        if driver not in ("psycopg", "psycopg2", "psycopg_async"):
            raise UnsupportedDatabaseError(
                f"PostgreSQL driver {driver!r} is not supported (use postgresql+psycopg://)"
            )
        return parsed.set(drivername="postgresql+psycopg")
    raise UnsupportedDatabaseError(
        f"database backend {backend!r} is not supported (use sqlite or postgresql)"
    )


def redact_url(url: str | URL) -> str:
    """The URL as text with its password hidden, for logs and messages."""
    parsed = make_url(url) if isinstance(url, str) else url
    return parsed.render_as_string(hide_password=True)


def dialect_of(url: str | URL) -> str:
    """``"sqlite"`` or ``"postgresql"``."""
    return normalize_url(url).get_backend_name()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Driver-level autocommit: SQLAlchemy's "begin" hook below emits BEGIN itself.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA cache_size=-16384")  # 16 MiB, not 2: big resyncs re-read pages
    finally:
        cursor.close()


_HOLDS_WRITE_TURN = "roomkey_sqlite_write_turn"


class _SQLiteWriteQueue:
    """One engine's transactions, queued in-process for SQLite's single write lock."""

    def __init__(self, timeout: float) -> None:
        self._lock = asyncio.Lock()
        self._timeout = timeout

    def on_begin(self, conn: Connection) -> None:
        # Runs inside SQLAlchemy's greenlet: await_only waits without blocking the loop.
        if not conn.info.get(_HOLDS_WRITE_TURN):
            if self._lock.locked():
                try:
                    await_only(asyncio.wait_for(self._lock.acquire(), self._timeout))
                except TimeoutError:
                    raise OperationalError(
                        "BEGIN IMMEDIATE",
                        None,
                        sqlite3.OperationalError("database is locked (in-process write queue)"),
                    ) from None
            else:
                await_only(self._lock.acquire())
            conn.info[_HOLDS_WRITE_TURN] = True
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            self.on_end(conn)
            raise

    def on_end(self, conn: Connection) -> None:
        self._release(conn.info)

    def on_checkin(self, _dbapi_connection: Any, record: Any) -> None:
        # safety net: a connection never leaves the pool's hands still holding the turn
        self._release(record.info)

    def on_invalidate(self, _dbapi_connection: Any, record: Any, _exc: Any) -> None:
        self._release(record.info)

    def _release(self, info: dict[Any, Any]) -> None:
        if info.pop(_HOLDS_WRITE_TURN, False):
            self._lock.release()


def create_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``url`` with roomkey's per-backend connection setup.

    For a SQLite file URL the parent directory is created if missing.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = _create_async_engine(parsed, **kwargs)
        sync_engine = engine.sync_engine
        queue = _SQLiteWriteQueue(SQLITE_BUSY_TIMEOUT_MS / 1000)
        event.listen(sync_engine, "connect", _sqlite_on_connect)
        event.listen(sync_engine, "begin", queue.on_begin)
        event.listen(sync_engine, "commit", queue.on_end)
        event.listen(sync_engine, "rollback", queue.on_end)
        event.listen(sync_engine.pool, "checkin", queue.on_checkin)
        event.listen(sync_engine.pool, "invalidate", queue.on_invalidate)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return _create_async_engine(parsed, **kwargs)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit (``expire_on_commit=False``)."""
    return async_sessionmaker(engine, expire_on_commit=False)
