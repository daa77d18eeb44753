"""Bulk statements for the mirror and the door plan: many rows per round trip.

* :func:`chunked` — slices for ``IN (…)`` lists and multi-row writes, far below SQLite's
  32,766 bound variables and PostgreSQL's 65,535 parameters;
* :func:`insert_rows` — one ``INSERT`` (optionally ``ON CONFLICT (…) DO UPDATE``) executed
  for a chunk of rows with the driver's ``executemany`` (psycopg 3 pipelines it; measured
  cheaper here than one 900-row ``VALUES`` list). The statement is compiled once per table
  and dialect; each row's values go through the columns' own bind processors except the
  UTC datetimes, which get an equivalent but much cheaper conversion (this is where a
  100,000-reservation resync spends its time otherwise);
* :func:`forget_cached` — expire ORM copies of rows written this way.

All functions run inside the caller's transaction and never commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.util import identity_key

from .types import UTCDateTime

__all__ = ["IN_CHUNK", "chunked", "forget_cached", "insert_rows"]

IN_CHUNK = 900
"""Values per ``IN (…)`` list, rows per ``executemany`` chunk."""

_T = TypeVar("_T")
Processor = Callable[[Any], Any]


def chunked(items: Sequence[_T], size: int = IN_CHUNK) -> Iterator[Sequence[_T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def forget_cached(session: AsyncSession, model: type[Any], keys: Iterable[Any]) -> None:
    """Expire ORM objects of ``model`` cached in the session for rows written with Core or
    driver-level statements (so a later ``get``/``select`` in the session reads the new
    state)."""
    identity_map = session.sync_session.identity_map
    if not len(identity_map):
        return
    for key in keys:
        obj = identity_map.get(identity_key(model, key))
        if obj is not None:
            session.expire(obj)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime given where an aware UTC datetime is required")
    return value.astimezone(UTC)


def _utc_sqlite(value: datetime | None) -> str | None:
    """What :class:`UTCDateTime` + SQLite's ``DATETIME`` store: naive UTC text with six
    fractional digits (``YYYY-MM-DD HH:MM:SS.ffffff``), so stored values compare as before."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given where an aware UTC datetime is required")
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]  # without the "+00:00"


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    keys: tuple[str, ...]
    processors: tuple[Processor | None, ...]
    named: bool


_COMPILED: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], _Compiled] = {}


def _processor(table: Table, key: str, dialect: Dialect) -> Processor | None:
    column_type = table.c[key].type
    if isinstance(column_type, UTCDateTime):
        return _utc_sqlite if dialect.name == "sqlite" else _utc
    processor: Processor | None = column_type._cached_bind_processor(dialect)
    return processor


def _compile(
    dialect: Dialect, table: Table, keys: tuple[str, ...], conflict: tuple[str, ...]
) -> _Compiled:
    cache_key = (dialect.name, table.name, keys, conflict)
    found = _COMPILED.get(cache_key)
    if found is not None:
        return found
    stmt: Any = (postgresql.insert if dialect.name == "postgresql" else sqlite.insert)(table)
    if conflict:
        stmt = stmt.on_conflict_do_update(
            index_elements=list(conflict),
            set_={k: stmt.excluded[k] for k in keys if k not in conflict and k != "created_at"},
        )
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
    positions = compiled.positiontup
    order = tuple(positions) if positions is not None else keys
    if set(order) != set(keys) or len(order) != len(keys):
        raise ValueError(f"unexpected bind parameters {order} for {table.name}")
    found = _Compiled(
        sql=str(compiled),
        keys=order,
        processors=tuple(_processor(table, k, dialect) for k in order),
        named=positions is None,
    )
    _COMPILED[cache_key] = found
    return found


async def insert_rows(
    session: AsyncSession,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    update_on_conflict: Sequence[str] = (),
) -> None:
    """Insert ``rows`` (all with the same keys) with one ``executemany`` per chunk.

    With ``update_on_conflict`` (the conflict target's columns) an existing row is updated
    to the given values instead, except ``created_at``, which keeps its first value.
    """
    if not rows:
        return
    connection = await session.connection()
    compiled = _compile(connection.dialect, table, tuple(rows[0]), tuple(update_on_conflict))
    keys = compiled.keys
    for part in chunked(rows):
        # Column by column: ``map`` runs each bind processor over a whole column without a
        # Python-level loop per row, then ``zip`` turns the columns back into rows.
        columns = []
        for key, processor in zip(keys, compiled.processors, strict=True):
            values = [row[key] for row in part]
            if processor is not None:
                first = values[0]
                if values.count(first) == len(values):  # e.g. created_at: one ``now``
                    values = [processor(first)] * len(values)
                else:
                    values = list(map(processor, values))
            columns.append(values)
        params: list[Any] = list(zip(*columns, strict=True))
        if compiled.named:
            params = [dict(zip(keys, values, strict=True)) for values in params]
        await connection.exec_driver_sql(compiled.sql, params)
