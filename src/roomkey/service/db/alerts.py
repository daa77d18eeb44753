"""Operator alerts, raised at most once while open.

All functions run inside the caller's transaction and never commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from ._sql import insert_for
from .models import Alert

__all__ = ["acknowledge_alert", "get_alert", "list_alerts", "open_alert_if_new", "resolve_alerts"]


async def open_alert_if_new(
    session: AsyncSession,
    *,
    kind: str,
    dedupe_key: str,
    message: str,
    now: datetime,
    lock_id: str | None = None,
    room_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> Alert | None:
    """Open an alert unless one with ``dedupe_key`` is already open.

    Returns the new alert, or None when it was already open (then its ``count`` and
    ``last_seen_at`` are bumped). Atomic across replicas (partial unique index).
    """
    stmt = (
        insert_for(session, Alert)
        .values(
            kind=kind,
            dedupe_key=dedupe_key,
            message=message,
            lock_id=lock_id,
            room_id=room_id,
            details=details,
            count=1,
            created_at=now,
            last_seen_at=now,
        )
        .on_conflict_do_nothing(
            index_elements=["dedupe_key"], index_where=text("acknowledged_at IS NULL")
        )
        .returning(Alert.id)
    )
    new_id = (await session.execute(stmt)).scalar_one_or_none()
    if new_id is None:
        await session.execute(
            update(Alert)
            .where(Alert.dedupe_key == dedupe_key, Alert.acknowledged_at.is_(None))
            .values(count=Alert.count + 1, last_seen_at=now)
            .execution_options(synchronize_session=False)
        )
        return None
    return await session.get(Alert, new_id)


async def acknowledge_alert(
    session: AsyncSession, alert_id: int, *, by: str, now: datetime
) -> bool:
    """Close one open alert; False if unknown or already closed."""
    result = await session.execute(
        update(Alert)
        .where(Alert.id == alert_id, Alert.acknowledged_at.is_(None))
        .values(acknowledged_at=now, acknowledged_by=by)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def resolve_alerts(session: AsyncSession, dedupe_key: str, *, by: str, now: datetime) -> int:
    """Close the open alert with ``dedupe_key`` (e.g. the lock came back online)."""
    result = await session.execute(
        update(Alert)
        .where(Alert.dedupe_key == dedupe_key, Alert.acknowledged_at.is_(None))
        .values(acknowledged_at=now, acknowledged_by=by)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))


async def get_alert(session: AsyncSession, alert_id: int) -> Alert | None:
    return await session.get(Alert, alert_id, populate_existing=True)


async def list_alerts(
    session: AsyncSession, *, open_only: bool = False, lock_id: str | None = None, limit: int = 100
) -> list[Alert]:
    """Newest first."""
    stmt = select(Alert).order_by(Alert.created_at.desc(), Alert.id.desc())
    if open_only:
        stmt = stmt.where(Alert.acknowledged_at.is_(None))
    if lock_id is not None:
        stmt = stmt.where(Alert.lock_id == lock_id)
    return list((await session.execute(stmt.limit(limit))).scalars())
