"""Alembic migrations shipped inside the package, run programmatically.

``await upgrade_async(url)`` at service startup; ``upgrade(url)`` from synchronous code such as
``roomkey db upgrade``. Both are idempotent (already at head: nothing happens).
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Connection
from sqlalchemy.pool import NullPool

from .engine import create_engine, normalize_url

__all__ = [
    "alembic_config",
    "current_revision",
    "downgrade_async",
    "head_revision",
    "upgrade",
    "upgrade_async",
]

SCRIPT_LOCATION = "roomkey.service.db:migrations"


def alembic_config(url: str | URL | None = None) -> AlembicConfig:
    """An Alembic config pointing at the packaged migrations (and at ``url`` if given)."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if url is not None:
        rendered = normalize_url(url).render_as_string(hide_password=False)
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest revision shipped with this roomkey."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def _run(url: str | URL, fn: Any, revision: str) -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:

            def go(sync_conn: Connection) -> None:
                cfg = alembic_config()
                cfg.attributes["connection"] = sync_conn
                fn(cfg, revision)

            await conn.run_sync(go)
    finally:
        await engine.dispose()


async def upgrade_async(url: str | URL, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (default: the newest)."""
    await _run(url, command.upgrade, revision)


async def downgrade_async(url: str | URL, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``"base"`` drops everything)."""
    await _run(url, command.downgrade, revision)


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Synchronous :func:`upgrade_async`; call it where no event loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(upgrade_async(url, revision))
        return
    raise RuntimeError("upgrade() called inside a running event loop; await upgrade_async()")


async def current_revision(url: str | URL) -> str | None:
    """The revision the database at ``url`` is at (None: not migrated)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:

            def get(sync_conn: Connection) -> str | None:
                return MigrationContext.configure(sync_conn).get_current_revision()

            return await conn.run_sync(get)
    finally:
        await engine.dispose()
