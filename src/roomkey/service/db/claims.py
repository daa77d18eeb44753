"""Row claims: several workers and replicas share work without doing any of it twice.

A claim is ``claim_owner`` + ``claim_until`` on the row. A row is free when it has no owner or
its claim expired (``claim_until < now``): a worker that crashed mid-way loses its rows to the
next claimer after the lease, which is how work survives a crash.

* PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED`` picks free rows that no concurrent claimer
  holds, then an UPDATE in the same transaction stamps owner and expiry.
* SQLite: one ``UPDATE … WHERE pk IN (SELECT … LIMIT n) AND <free> RETURNING *``; SQLite
  serialises writers, so two claimers can never get the same row.

Commit right after claiming so other replicas see the claim; do the slow work afterwards.
A worker that keeps rows longer than expected extends its own claims with
:func:`renew_claims` well before they expire.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import ColumnElement, inspect, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from ._sql import dialect_name

__all__ = ["Claimable", "claim_is_free", "claim_rows", "release_claim", "renew_claims"]


class Claimable(Protocol):
    claim_owner: Any
    claim_until: Any


M = TypeVar("M", bound=Claimable)


def claim_is_free(model: type[Claimable], now: datetime) -> ColumnElement[bool]:
    """SQL condition: the row is unclaimed, or its claim has expired."""
    return or_(model.claim_owner.is_(None), model.claim_until.is_(None), model.claim_until < now)


def _pk(model: type[Any]) -> InstrumentedAttribute[Any]:
    columns = inspect(model).primary_key
    assert len(columns) == 1, "claims need a single-column primary key"
    attr: InstrumentedAttribute[Any] = getattr(model, columns[0].key)
    return attr


async def claim_rows(
    session: AsyncSession,
    model: type[M],
    *,
    owner: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    where: Sequence[ColumnElement[bool]],
    order_by: Sequence[InstrumentedAttribute[Any]],
    values: dict[str, Any] | None = None,
) -> list[M]:
    """Claim up to ``limit`` free rows of ``model`` matching ``where`` for ``owner``.

    The claim lasts until ``now + lease``. ``values`` are extra columns to set on claimed rows
    (e.g. an attempts counter). ``order_by`` are plain ascending columns (oldest work first);
    the claimed rows come back in that order.
    """
    if limit <= 0:
        return []
    pk = _pk(model)
    free = claim_is_free(model, now)
    new_values: dict[str, Any] = {"claim_owner": owner, "claim_until": now + lease}
    if values:
        new_values.update(values)
    pick = select(pk).where(*where, free).order_by(*order_by).limit(limit)
    if dialect_name(session) == "postgresql":
        ids = list((await session.execute(pick.with_for_update(skip_locked=True))).scalars())
        if not ids:
            return []
        stmt = update(model).where(pk.in_(ids)).values(new_values).returning(model)
    else:
        stmt = update(model).where(pk.in_(pick), free).values(new_values).returning(model)
    result = await session.execute(
        stmt, execution_options={"synchronize_session": False, "populate_existing": True}
    )
    rows = list(result.scalars())
    keys = [col.key for col in order_by]
    rows.sort(key=lambda row: tuple(_sortable(getattr(row, k)) for k in keys))
    return rows


def _sortable(value: Any) -> tuple[bool, Any]:
    return (value is None, value)


async def release_claim(session: AsyncSession, model: type[Any], key: Any, owner: str) -> bool:
    """Give up ``owner``'s claim on one row (no-op if someone else holds it now)."""
    pk = _pk(model)
    result = await session.execute(
        update(model)
        .where(pk == key, model.claim_owner == owner)
        .values(claim_owner=None, claim_until=None)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def renew_claims(
    session: AsyncSession,
    model: type[Any],
    keys: Sequence[Any],
    *,
    owner: str,
    until: datetime,
) -> set[Any]:
    """Extend ``owner``'s claims on the rows ``keys`` to ``until``; returns the keys still held.

    One ``UPDATE … WHERE pk IN (…) AND claim_owner = owner``: a row another worker took over
    (the claim had expired) is left alone and missing from the result.
    """
    if not keys:
        return set()
    pk = _pk(model)
    result = await session.execute(
        update(model)
        .where(pk.in_(list(keys)), model.claim_owner == owner)
        .values(claim_until=until)
        .returning(pk),
        execution_options={"synchronize_session": False},
    )
    return set(result.scalars())
