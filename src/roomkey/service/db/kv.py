"""A small key → JSON store (cursors, last reconciliation time, …). Not for secrets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ._sql import insert_for
from .models import KVEntry

__all__ = ["kv_get", "kv_set"]


async def kv_get(session: AsyncSession, key: str, default: Any = None) -> Any:
    value = (await session.execute(select(KVEntry.value).where(KVEntry.key == key))).first()
    return default if value is None else value[0]


async def kv_set(session: AsyncSession, key: str, value: Any, *, now: datetime) -> None:
    stmt = insert_for(session, KVEntry).values(key=key, value=value, updated_at=now)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["key"],
            set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
        )
    )
