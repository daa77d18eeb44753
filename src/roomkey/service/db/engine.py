"""Async engine and session factory for SQLite (embedded) and PostgreSQL (replicas).

SQLite connections get ``journal_mode=WAL``, ``busy_timeout`` and ``foreign_keys=ON``, and every
transaction starts with ``BEGIN IMMEDIATE``: SQLite has one writer at a time, and taking the write
lock up front makes concurrent writers wait (``busy_timeout``) instead of failing when a
read-then-write transaction finds the snapshot it read from already stale. Keep transactions short.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

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
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


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
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return _create_async_engine(parsed, **kwargs)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit (``expire_on_commit=False``)."""
    return async_sessionmaker(engine, expire_on_commit=False)
