"""SQLite transactions of one engine queue in-process for the write lock; PostgreSQL's don't."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from roomkey.service.db.engine import create_engine, create_session_factory


async def _overlap(engine: AsyncEngine, writers: int) -> tuple[int, int]:
    """Run ``writers`` read-then-write transactions at once; (most open together, final sum)."""
    factory = create_session_factory(engine)
    open_now = 0
    peak = 0

    async def writer() -> None:
        nonlocal open_now, peak
        async with factory() as session, session.begin():
            value = (await session.execute(text("SELECT n FROM counter"))).scalar_one()
            open_now += 1
            peak = max(peak, open_now)
            for _ in range(5):
                await asyncio.sleep(0)  # let the other writers try to begin
            await session.execute(text("UPDATE counter SET n = :n"), {"n": value + 1})
            open_now -= 1

    await asyncio.gather(*(writer() for _ in range(writers)))
    async with factory() as session:
        total = (await session.execute(text("SELECT n FROM counter"))).scalar_one()
    return peak, int(total)


async def _fresh_counter(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS counter (n INTEGER NOT NULL)"))
        await conn.execute(text("DELETE FROM counter"))
        await conn.execute(text("INSERT INTO counter (n) VALUES (0)"))


async def test_sqlite_writers_queue_one_at_a_time_without_busy_waits(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'q.sqlite3'}")
    try:
        await _fresh_counter(engine)
        started = time.monotonic()
        peak, total = await _overlap(engine, 30)
        elapsed = time.monotonic() - started
        assert peak == 1  # one open transaction at a time, queued in-process
        assert total == 30  # no lost update
        # 30 tiny transactions; sleep-polling in SQLite's busy handler would take far longer
        assert elapsed < 10
    finally:
        await engine.dispose()


async def test_sqlite_rollback_and_errors_release_the_turn(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'r.sqlite3'}")
    factory = create_session_factory(engine)
    try:
        await _fresh_counter(engine)

        async def failing() -> None:
            async with factory() as session, session.begin():
                await session.execute(text("UPDATE counter SET n = 5"))
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            await failing()
        async with factory() as session:  # a transaction left open by close(), not commit
            await session.execute(text("SELECT n FROM counter"))

        async def bad_sql() -> None:
            async with factory() as session, session.begin():
                await session.execute(text("SELECT nope FROM counter"))

        with pytest.raises(Exception, match="nope"):
            await bad_sql()
        async with asyncio.timeout(5):  # would hang if any of those kept the turn
            peak, total = await _overlap(engine, 3)
        assert (peak, total) == (1, 3)
    finally:
        await engine.dispose()


async def test_postgresql_transactions_are_not_queued(engine: AsyncEngine, db_backend: str) -> None:
    if db_backend != "postgresql":
        pytest.skip("PostgreSQL runs transactions side by side")
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE IF EXISTS counter"))
    await _fresh_counter(engine)
    try:
        peak, _total = await _overlap(engine, 3)
        assert peak > 1
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE counter"))
