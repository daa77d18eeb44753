"""Small dialect helpers shared by the repositories."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["dialect_name", "insert_for", "serialize_scope"]


def dialect_name(session: AsyncSession) -> str:
    """``"sqlite"`` or ``"postgresql"`` for the session's bind."""
    return session.get_bind().dialect.name


def insert_for(session: AsyncSession, table: Any) -> Any:
    """A dialect-specific INSERT (with ``on_conflict_do_*``) for ``table`` (model or Table)."""
    if dialect_name(session) == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def serialize_scope(session: AsyncSession, scope: str) -> None:
    """Serialise transactions that touch ``scope`` until the current transaction ends.

    PostgreSQL: a transaction-level advisory lock on ``hashtext(scope)``. SQLite: nothing to do,
    every roomkey transaction already holds the single write lock (``BEGIN IMMEDIATE``).
    """
    if dialect_name(session) == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(scope))))
