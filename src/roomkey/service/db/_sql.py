"""Small dialect helpers shared by the repositories."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["dialect_name", "insert_for", "serialize_scope", "serialize_scopes"]


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


async def serialize_scopes(session: AsyncSession, scopes: Iterable[str]) -> None:
    """:func:`serialize_scope` for many scopes in one statement (taken in hash order)."""
    wanted = sorted(set(scopes))
    if not wanted or dialect_name(session) != "postgresql":
        return
    if len(wanted) == 1:
        await serialize_scope(session, wanted[0])
        return
    await session.execute(
        text(
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtext(s) AS h"
            " FROM unnest(CAST(:scopes AS text[])) AS s) AS t ORDER BY h"
        ),
        {"scopes": wanted},
    )
