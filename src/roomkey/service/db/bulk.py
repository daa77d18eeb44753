"""Bulk statements for the mirror and the door plan: many rows per round trip.

* :func:`chunked` — slices for ``IN (…)`` lists and multi-row writes, far below SQLite's
  32,766 bound variables and PostgreSQL's 65,535 parameters;
* :func:`one_of` / :func:`in_chunks` — a ``column IN (…)`` filter and the slices to use it
  with: one array parameter (``= ANY(…)``) on PostgreSQL, so a large set is one short
  statement instead of hundreds of bound values to render, send and plan;
* :func:`insert_columns` / :func:`insert_rows` — an ``INSERT`` (optionally ``ON CONFLICT
  (…) DO UPDATE``) of many rows. On SQLite one ``executemany`` per chunk. On PostgreSQL a
  large batch is streamed with ``COPY … FROM STDIN (FORMAT BINARY)`` (an upsert goes through
  a temporary staging table: ``COPY`` into it, then one ``INSERT … SELECT … ON CONFLICT``
  that also empties it); a small one uses ``executemany`` (psycopg pipelines it). Each
  value goes through its column's own bind processor (UTC datetimes through an equivalent
  but much cheaper conversion), converted once per distinct value where the processor is
  pure: a resync repeats the same few slot times, dates and statuses many times over;
* :func:`forget_cached` — expire ORM copies of rows written this way.

Every statement, ``COPY`` included, is seen by the engine's ``before_cursor_execute``
listeners (statement counters, tests). All functions run inside the caller's transaction
and never commit.
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Table, any_, bindparam
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm.util import identity_key
from sqlalchemy.sql.expression import Executable

from ._sql import dialect_name
from .types import UTCDateTime

__all__ = [
    "COPY_MIN_ROWS",
    "IN_CHUNK",
    "JSONText",
    "chunked",
    "forget_cached",
    "in_chunks",
    "insert_columns",
    "insert_rows",
    "one_of",
    "read_rows",
]

IN_CHUNK = 900
"""Values per ``IN (…)`` list, rows per ``executemany`` chunk."""
ARRAY_CHUNK = 20_000
"""Values per ``= ANY(array)`` parameter (PostgreSQL): bounded only to keep one statement's
work and memory modest."""
COPY_MIN_ROWS = 200
"""PostgreSQL: from this many rows on, :func:`insert_columns` streams them with ``COPY``
(fewer rows, e.g. one webhook's, stay on ``executemany``: no staging table to set up)."""

_T = TypeVar("_T")
Processor = Callable[[Any], Any]


def chunked(items: Sequence[_T], size: int = IN_CHUNK) -> Iterator[Sequence[_T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def in_chunks(session: AsyncSession, items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    """``items`` in slices sized for :func:`one_of` on the session's database."""
    size = ARRAY_CHUNK if dialect_name(session) == "postgresql" else IN_CHUNK
    return chunked(items, size)


def one_of(session: AsyncSession, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)`` (one parameter)."""
    if dialect_name(session) == "postgresql":
        array = bindparam(None, list(values), type_=postgresql.ARRAY(column.type))
        result: ColumnElement[bool] = column == any_(array)
        return result
    in_list: ColumnElement[bool] = column.in_(values)
    return in_list


async def read_rows(session: AsyncSession, stmt: Executable) -> Sequence[Any]:
    """Run a Core ``SELECT`` of table columns on the session's connection: plain rows,
    without the ORM's result machinery. Pending ORM changes are flushed first, as the
    session's own ``execute`` would (autoflush)."""
    sync = session.sync_session
    if sync.new or sync.dirty or sync.deleted:
        await session.flush()
    connection = await session.connection()
    return (await connection.execute(stmt)).all()


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


class JSONText(str):
    """A JSON column's value already encoded as JSON text (e.g. by pydantic's
    ``model_dump_json``): :func:`insert_columns` stores it as is instead of encoding a
    Python value. Only for the bulk writers here; it is plain text anywhere else."""

    __slots__ = ()


def _as_text(value: str) -> str:
    return str.__str__(value)


def _json_sqlite(processor: Processor) -> Processor:
    """The JSON column's processor on SQLite, short-cut for text already encoded and for a
    list of plain ints (door actions' ``reservation_ids``): the same text ``json.dumps``
    writes, without the encoder."""

    def process(value: Any) -> Any:
        if type(value) is list and all(type(item) is int for item in value):
            return "[" + ", ".join(map(str, value)) + "]"
        if type(value) is JSONText:
            return _as_text(value)
        return processor(value)

    return process


def _json_postgresql(processor: Processor | None) -> Processor:
    """The JSON column's processor on PostgreSQL (``None``: COPY, whose jsonb dumper encodes
    the value), passing text already encoded through unchanged."""
    from psycopg.types.json import Jsonb

    def process(value: Any) -> Any:
        if type(value) is JSONText:
            return Jsonb(value, dumps=_as_text)
        return processor(value) if processor is not None else value

    return process


@dataclass(frozen=True, slots=True)
class _Column:
    processor: Processor | None
    pure: bool
    """The processor maps equal (hashable) values to equal results: convert each distinct
    value once."""


_PURE_TYPES = (sqltypes.Enum, sqltypes.Date, sqltypes.Time, sqltypes.Boolean, UTCDateTime)


def _column(table: Table, key: str, dialect: Dialect, *, copy: bool) -> _Column:
    column_type = table.c[key].type
    if isinstance(column_type, UTCDateTime):
        return _Column(_utc_sqlite if dialect.name == "sqlite" else _utc, True)
    processor: Processor | None = column_type._cached_bind_processor(dialect)
    if (
        isinstance(column_type, sqltypes.JSON)
        and getattr(dialect, "_json_serializer", None) is None
    ):
        if dialect.name == "postgresql":
            # COPY's jsonb dumper encodes a Python value itself (no wrapper needed).
            return _Column(_json_postgresql(None if copy else processor), False)
        if processor is not None and dialect.name == "sqlite":
            return _Column(_json_sqlite(processor), False)
    if processor is None:
        return _Column(None, False)
    return _Column(processor, isinstance(column_type, _PURE_TYPES))


_MEMO_LIMIT = 50_000
"""Converted values remembered per pure processor, across calls (a resync writes the same
slot times, dates and statuses in every batch); forgotten wholesale when full."""
_MEMOS: dict[Processor, dict[Any, Any]] = {}


def _convert(values: Sequence[Any], column: _Column) -> Sequence[Any]:
    processor = column.processor
    if processor is None:
        return values
    if not column.pure:
        return list(map(processor, values))
    done = _MEMOS.setdefault(processor, {})
    if len(done) > _MEMO_LIMIT:
        done.clear()
    out: list[Any] = []
    append = out.append
    get = done.get
    for value in values:
        converted = get(value, _MISSING)
        if converted is _MISSING:
            converted = done[value] = processor(value)
        append(converted)
    return out


_MISSING = object()


def _iconvert(values: Sequence[Any], column: _Column) -> Iterator[Any]:
    """:func:`_convert`, lazily: ``COPY`` converts each row as it streams it, so the
    conversion overlaps with the server storing the rows already sent."""
    processor = column.processor
    if processor is None:
        return iter(values)
    if not column.pure:
        return map(processor, values)
    done = _MEMOS.setdefault(processor, {})
    if len(done) > _MEMO_LIMIT:
        done.clear()

    def convert(value: Any) -> Any:
        converted = done.get(value, _MISSING)
        if converted is _MISSING:
            converted = done[value] = processor(value)
        return converted

    return map(convert, values)


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    keys: tuple[str, ...]
    columns: tuple[_Column, ...]
    named: bool


_COMPILED: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], _Compiled] = {}


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
        columns=tuple(_column(table, k, dialect, copy=False) for k in order),
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
    """Insert ``rows`` (all with the same keys): :func:`insert_columns` of their columns."""
    if not rows:
        return
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    await insert_columns(session, table, columns, update_on_conflict=update_on_conflict)


async def insert_columns(
    session: AsyncSession,
    table: Table,
    columns: Mapping[str, Sequence[Any]],
    *,
    constants: Mapping[str, Any] | None = None,
    update_on_conflict: Sequence[str] = (),
) -> None:
    """Insert rows given column by column (every sequence as long as the others); each
    of ``constants`` holds one value for every row.

    With ``update_on_conflict`` (the conflict target's columns) an existing row is updated
    to the given values instead, except ``created_at``, which keeps its first value; the
    rows must then not repeat a conflict target (apply repeated keys in separate calls).
    """
    constants = dict(constants or {})
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths for {table.name}: {sorted(lengths)}")
    count = lengths.pop() if lengths else 0
    if not count:
        return
    connection = await session.connection()
    dialect = connection.dialect
    conflict = tuple(update_on_conflict)
    if dialect.name == "postgresql" and count >= COPY_MIN_ROWS:
        copy = _copy_plan(dialect, table, (*columns, *constants), conflict)
        if copy is not None and (not conflict or _distinct(columns, constants, conflict, count)):
            await _copy_in(connection, copy, columns, constants, count)
            return
    compiled = _compile(dialect, table, (*columns, *constants), conflict)
    sql, keys, kinds = compiled.sql, compiled.keys, compiled.columns
    if constants and not compiled.named and not conflict:
        sql, keys, kinds = _inline_constants(compiled, constants)
    for start in range(0, count, IN_CHUNK):
        stop = min(start + IN_CHUNK, count)
        params: list[Any] = list(
            zip(
                *(
                    _part(key, column, columns, constants, start, stop)
                    for key, column in zip(keys, kinds, strict=True)
                ),
                strict=True,
            )
        )
        if compiled.named:
            params = [dict(zip(keys, values, strict=True)) for values in params]
        await connection.exec_driver_sql(sql, params)


def _inline_constants(
    compiled: _Compiled, constants: Mapping[str, Any]
) -> tuple[str, tuple[str, ...], tuple[_Column, ...]]:
    """SQLite: the statement with the batch's constant NULLs, integers and UTC datetimes
    written into ``VALUES`` (fewer parameters to bind per row), and the keys still bound."""
    head, sep, tail = compiled.sql.rpartition(" VALUES (")
    marks = tail.removesuffix(")").split(", ")
    if not sep or len(marks) != len(compiled.keys) or any(m != "?" for m in marks):
        return compiled.sql, compiled.keys, compiled.columns
    values: list[str] = []
    keys: list[str] = []
    kinds: list[_Column] = []
    for key, column in zip(compiled.keys, compiled.columns, strict=True):
        literal = None
        if key in constants:
            value = constants[key]
            value = column.processor(value) if column.processor is not None else value
            if value is None:
                literal = "NULL"
            elif type(value) is int:
                literal = str(value)
            elif column.processor is _utc_sqlite and _SQLITE_UTC.fullmatch(value):
                literal = f"'{value}'"
        values.append(literal or "?")
        if literal is None:
            keys.append(key)
            kinds.append(column)
    return f"{head}{sep}{', '.join(values)})", tuple(keys), tuple(kinds)


_SQLITE_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}")


def _part(
    key: str,
    column: _Column,
    columns: Mapping[str, Sequence[Any]],
    constants: Mapping[str, Any],
    start: int,
    stop: int,
) -> Sequence[Any]:
    if key in constants:
        value = constants[key]
        return [column.processor(value) if column.processor else value] * (stop - start)
    return _convert(columns[key][start:stop], column)


def _distinct(
    columns: Mapping[str, Sequence[Any]],
    constants: Mapping[str, Any],
    conflict: tuple[str, ...],
    count: int,
) -> bool:
    if any(key in constants for key in conflict):
        return count <= 1
    targets = zip(*(columns[key] for key in conflict), strict=True)
    return len(set(targets)) == count


# --------------------------------------------------------------------------- COPY


@dataclass(frozen=True, slots=True)
class _CopyPlan:
    keys: tuple[str, ...]
    columns: tuple[_Column, ...]
    types: tuple[str, ...]
    """PostgreSQL type names for ``set_types`` (binary COPY needs them)."""
    copy_sql: str
    stage_sql: str | None
    """Creates the staging table (upsert only)."""
    merge_sql: str | None
    """Moves the staged rows into the table, updating on conflict (upsert only)."""


_COPY_PLANS: dict[tuple[str, tuple[str, ...], tuple[str, ...]], _CopyPlan | None] = {}


def _pg_type(column_type: Any, dialect: Dialect) -> str | None:
    import psycopg

    name = str(column_type.compile(dialect=dialect)).lower().split("(", 1)[0].strip()
    info = psycopg.adapters.types.get(name)
    return info.name if info is not None else None


def _copy_plan(
    dialect: Dialect, table: Table, keys: tuple[str, ...], conflict: tuple[str, ...]
) -> _CopyPlan | None:
    cache_key = (table.name, keys, conflict)
    if cache_key in _COPY_PLANS:
        return _COPY_PLANS[cache_key]
    types = [_pg_type(table.c[key].type, dialect) for key in keys]
    plan: _CopyPlan | None = None
    if all(types):
        quote = dialect.identifier_preparer.quote
        names = ", ".join(quote(table.c[key].name) for key in keys)
        target = quote(table.name)
        stage_sql = merge_sql = None
        into = target
        if conflict:
            digest = zlib.crc32(",".join(keys).encode()) & 0xFFFFFFFF
            stage = quote(f"rk_stage_{table.name}_{digest:08x}")
            into = stage
            # Identifiers only, from the table's metadata, quoted by the dialect.
            stage_sql = (
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} AS"  # noqa: S608
                f" SELECT {names} FROM {target} WITH NO DATA"
            )
            updates = ", ".join(
                f"{quote(table.c[key].name)} = EXCLUDED.{quote(table.c[key].name)}"
                for key in keys
                if key not in conflict and key != "created_at"
            )
            targets = ", ".join(quote(table.c[key].name) for key in conflict)
            merge_sql = (
                f"WITH staged AS (DELETE FROM {stage} RETURNING {names})"  # noqa: S608
                f" INSERT INTO {target} ({names}) SELECT {names} FROM staged"
                f" ON CONFLICT ({targets}) DO UPDATE SET {updates}"
            )
        plan = _CopyPlan(
            keys=keys,
            columns=tuple(_column(table, key, dialect, copy=True) for key in keys),
            types=tuple(t for t in types if t is not None),
            copy_sql=f"COPY {into} ({names}) FROM STDIN (FORMAT BINARY)",
            stage_sql=stage_sql,
            merge_sql=merge_sql,
        )
    _COPY_PLANS[cache_key] = plan
    return plan


def _announce(connection: AsyncConnection, sql: str) -> None:
    """Show a statement run on the driver connection to the engine's cursor listeners."""
    sync = connection.sync_connection
    if sync is None:
        return
    dispatch = sync.dispatch
    if dispatch.before_cursor_execute:
        dispatch.before_cursor_execute(sync, None, sql, (), None, False)
    if dispatch.after_cursor_execute:
        dispatch.after_cursor_execute(sync, None, sql, (), None, False)


async def _copy_in(
    connection: AsyncConnection,
    plan: _CopyPlan,
    columns: Mapping[str, Sequence[Any]],
    constants: Mapping[str, Any],
    count: int,
) -> None:
    if plan.stage_sql is not None:
        await connection.exec_driver_sql(plan.stage_sql)
    values: list[Iterator[Any]] = []
    for key, column in zip(plan.keys, plan.columns, strict=True):
        if key in constants:
            value = constants[key]
            values.append(itertools.repeat(column.processor(value) if column.processor else value))
        else:
            values.append(_iconvert(columns[key], column))
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    _announce(connection, plan.copy_sql)
    async with driver.cursor() as cursor, cursor.copy(plan.copy_sql) as copy:
        copy.set_types(plan.types)
        write_row = copy.write_row
        for row in itertools.islice(zip(*values, strict=False), count):
            await write_row(row)
    if plan.merge_sql is not None:
        await connection.exec_driver_sql(plan.merge_sql)
