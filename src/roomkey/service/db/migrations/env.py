"""Alembic environment for roomkey: works for SQLite and PostgreSQL, online only.

Used two ways: programmatically (``roomkey.service.db.migrate`` passes an open connection in
``config.attributes["connection"]``), or by the ``alembic`` command with ``sqlalchemy.url`` set.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from roomkey.service.db.engine import create_engine
from roomkey.service.db.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def main() -> None:
    if context.is_offline_mode():
        raise RuntimeError("roomkey migrations run online only")
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url (or use roomkey.service.db.migrate.upgrade)")
    asyncio.run(_run_async(url))


main()
