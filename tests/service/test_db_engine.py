"""Engine setup per backend, URL handling, and UTC datetimes on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from roomkey.service.db import kv
from roomkey.service.db.engine import (
    UnsupportedDatabaseError,
    dialect_of,
    normalize_url,
    redact_url,
)
from roomkey.service.db.models import KVEntry


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_normalize_url(given: str, expected: str) -> None:
    assert normalize_url(given).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgresql+asyncpg://u@h/db", "oracle://x"])
def test_unsupported_backends(url: str) -> None:
    with pytest.raises(UnsupportedDatabaseError):
        normalize_url(url)


def test_redact_and_dialect() -> None:
    redacted = redact_url("postgresql+psycopg://rk:hunter2@db/rk")
    assert "hunter2" not in redacted
    assert "***" in redacted
    assert dialect_of("sqlite:///a") == "sqlite"


async def test_sqlite_pragmas(engine: AsyncEngine, db_backend: str) -> None:
    if db_backend != "sqlite":
        pytest.skip("SQLite connection setup")
    async with engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
        assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 30_000


async def test_datetimes_round_trip_as_aware_utc(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    warsaw = datetime(2026, 3, 29, 10, 30, tzinfo=ZoneInfo("Europe/Warsaw"))
    async with session_factory.begin() as s:
        await kv.kv_set(s, "k", 1, now=warsaw)
    async with session_factory() as s:
        row = await s.get(KVEntry, "k")
        assert row is not None
        assert row.updated_at == warsaw
        assert row.updated_at.tzinfo == UTC
        assert row.updated_at == datetime(2026, 3, 29, 8, 30, tzinfo=UTC)
        later = (
            await s.execute(
                text("SELECT count(*) FROM kv WHERE updated_at > :t").bindparams(
                    t=(warsaw - timedelta(seconds=1)).astimezone(UTC).replace(tzinfo=None)
                )
            )
        ).scalar()
        assert later == 1


async def test_naive_datetime_refused(session_factory: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        async with session_factory.begin() as s:
            await kv.kv_set(s, "k", 1, now=datetime(2026, 1, 1))
