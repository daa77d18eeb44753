"""Named leases for singleton jobs across replicas (e.g. one reconciliation at a time).

A lease is held by one owner until it expires; the holder renews it by acquiring again.
Both functions are single statements; run them in a short transaction and commit.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ._sql import insert_for
from .models import Lease

__all__ = ["get_lease", "release_lease", "try_acquire_lease"]


async def try_acquire_lease(
    session: AsyncSession, name: str, *, owner: str, now: datetime, ttl: timedelta
) -> bool:
    """Take (or renew) lease ``name`` for ``owner`` until ``now + ttl``.

    True if ``owner`` holds it now; False if someone else holds an unexpired lease.
    """
    stmt = insert_for(session, Lease).values(name=name, owner=owner, until=now + ttl)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={"owner": stmt.excluded.owner, "until": stmt.excluded.until},
        where=or_(Lease.owner == stmt.excluded.owner, Lease.until < now),
    ).returning(Lease.name)
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def release_lease(session: AsyncSession, name: str, *, owner: str) -> bool:
    """Give the lease up if ``owner`` holds it."""
    result = await session.execute(delete(Lease).where(Lease.name == name, Lease.owner == owner))
    return bool(getattr(result, "rowcount", 0))


async def get_lease(session: AsyncSession, name: str) -> tuple[str, datetime] | None:
    """``(owner, until)`` of the lease, expired or not; None if never taken or released."""
    stmt = select(Lease.owner, Lease.until).where(Lease.name == name)
    row = (await session.execute(stmt)).first()
    return None if row is None else (row[0], row[1])
