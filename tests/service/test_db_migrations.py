"""Migrations and models agree, on both backends; upgrade is idempotent and reversible."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from roomkey.service.db.engine import create_engine
from roomkey.service.db.migrate import (
    current_revision,
    downgrade_async,
    head_revision,
    upgrade_async,
)
from roomkey.service.db.models import Base


def _diff(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(ctx, Base.metadata))


async def test_models_match_migrations(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert await conn.run_sync(_diff) == []


async def test_database_is_at_head_and_upgrade_is_idempotent(db_url: str) -> None:
    assert await current_revision(db_url) == head_revision()
    await upgrade_async(db_url)
    assert await current_revision(db_url) == head_revision()


async def test_downgrade_then_upgrade_on_a_fresh_database(fresh_db_url: str) -> None:
    url = fresh_db_url
    assert await current_revision(url) is None
    await upgrade_async(url)
    assert await current_revision(url) == head_revision()
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert set(Base.metadata.tables) <= tables
        await downgrade_async(url, "base")
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert not set(Base.metadata.tables) & tables
        await upgrade_async(url)
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()
