"""The append-only audit log. Runs inside the caller's transaction; never commits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import AuditEntry

__all__ = ["list_audit", "write_audit"]


async def write_audit(
    session: AsyncSession,
    *,
    at: datetime,
    actor: str,
    action: str,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry. ``details`` must not contain secrets."""
    entry = AuditEntry(at=at, actor=actor, action=action, target=target, details=details)
    session.add(entry)
    await session.flush()
    return entry


async def list_audit(
    session: AsyncSession,
    *,
    target: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Newest first."""
    stmt = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
    if target is not None:
        stmt = stmt.where(AuditEntry.target == target)
    if actor is not None:
        stmt = stmt.where(AuditEntry.actor == actor)
    if since is not None:
        stmt = stmt.where(AuditEntry.at >= since)
    return list((await session.execute(stmt.limit(limit))).scalars())
