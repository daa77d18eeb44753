"""Lock events (bridge and cloud webhooks), their receipts, and the live lock state they drive.

Webhooks are first stored as *receipts* (``lock_event_receipts``, one multi-row INSERT per
group-committed batch: :func:`insert_receipts`); the applier (:mod:`roomkey.service.loqed_apply`)
turns them into ``lock_events`` rows in batches (:func:`pending_receipts`, :func:`insert_events`,
:func:`mark_receipts`). :func:`record_event_if_new` is the one-event path of the same rules.

All functions run inside the caller's transaction and never commit.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    Table,
    bindparam,
    case,
    delete,
    func,
    insert,
    null,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ._sql import serialize_scope
from .models import EventSource, Lock, LockEvent, LockEventReceipt, RoomLock

__all__ = [
    "APPLY_COLUMNS",
    "PII_FIELDS",
    "RECEIPT_COLUMNS",
    "UNSET",
    "Executor",
    "cloud_payloads_since",
    "count_pending",
    "drop_pii",
    "event_dedupe_key",
    "insert_events",
    "insert_events_from_receipts",
    "insert_receipts",
    "latest_event_key",
    "link_event",
    "list_events",
    "mark_receipts",
    "pending_receipts",
    "prune_receipts",
    "receipt_failed",
    "receipt_payloads",
    "record_event_if_new",
    "update_lock_state",
]

PII_FIELDS = frozenset(
    {
        "key_name_user",
        "key_name_admin",
        "key_account_email",
        "key_account_name",
        "user_name",
        "user_email",
        "email",
        "name",
    }
)
"""Payload keys that identify people; dropped from stored events unless configured."""


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""Marker for "leave this column as it is" in :func:`update_lock_state`."""


def drop_pii(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` without :data:`PII_FIELDS` (top level and one level of nesting)."""
    cleaned: dict[str, Any] = {}
    for key, value in raw.items():
        if key in PII_FIELDS:
            continue
        if isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if k not in PII_FIELDS}
        cleaned[key] = value
    return cleaned


def event_dedupe_key(
    lock_id: str | None,
    event_type: str,
    bolt_state: str | None,
    key_local_id: int | None,
) -> str:
    """The identity of an event for duplicate detection (same lock, type, state and key)."""
    return "|".join(
        ("" if part is None else str(part))
        for part in (lock_id, event_type, bolt_state, key_local_id)
    )[:256]


async def record_event_if_new(
    session: AsyncSession,
    *,
    lock_id: str | None,
    source: EventSource,
    event_type: str,
    kind: str,
    received_at: datetime,
    window: timedelta,
    raw: Mapping[str, Any],
    bolt_state: str | None = None,
    key_local_id: int | None = None,
    occurred_at: datetime | None = None,
    command_id: str | None = None,
    reservation_id: int | None = None,
    dedupe_key: str | None = None,
) -> LockEvent | None:
    """Store an event unless it duplicates the lock's latest event within ``window``.

    The go-loqed rule: an event equal (``dedupe_key``) to the **latest** stored event of the
    same lock, received less than ``window`` earlier, is a duplicate delivery (bridge and
    cloud both report, or a webhook is retried) and is dropped: returns None. Equal events
    with a different one in between are real (e.g. day_lock → open → day_lock).
    Concurrent receivers of the same lock are serialised, so exactly one copy is stored.
    ``raw`` is stored as given: pass it through :func:`drop_pii` first unless configured.
    """
    key = dedupe_key or event_dedupe_key(lock_id, event_type, bolt_state, key_local_id)
    await serialize_scope(session, f"events:{lock_id or ''}")
    latest_stmt = select(LockEvent.dedupe_key, LockEvent.received_at)
    latest_stmt = latest_stmt.where(
        LockEvent.lock_id.is_(None) if lock_id is None else LockEvent.lock_id == lock_id
    )
    latest = (
        await session.execute(
            latest_stmt.order_by(LockEvent.received_at.desc(), LockEvent.id.desc()).limit(1)
        )
    ).first()
    if latest is not None:
        latest_key, latest_at = latest
        if latest_key == key and received_at - latest_at < window:
            return None
    event = LockEvent(
        lock_id=lock_id,
        source=source,
        event_type=event_type,
        kind=kind,
        bolt_state=bolt_state,
        key_local_id=key_local_id,
        occurred_at=occurred_at,
        received_at=received_at,
        dedupe_key=key,
        command_id=command_id,
        reservation_id=reservation_id,
        raw=dict(raw),
    )
    session.add(event)
    await session.flush()
    return event


async def link_event(
    session: AsyncSession,
    event_id: int,
    *,
    command_id: str | None = None,
    reservation_id: int | None = None,
) -> None:
    """Attach an event to the command it confirms and/or the reservation active at the door."""
    values: dict[str, Any] = {}
    if command_id is not None:
        values["command_id"] = command_id
    if reservation_id is not None:
        values["reservation_id"] = reservation_id
    if values:
        await session.execute(
            update(LockEvent)
            .where(LockEvent.id == event_id)
            .values(values)
            .execution_options(synchronize_session=False)
        )


async def update_lock_state(
    session: AsyncSession,
    lock_id: str,
    *,
    now: datetime,
    bolt_state: str | None = UNSET,
    battery_percentage: int | None = UNSET,
    battery_type: str | None = UNSET,
    online: bool | None = UNSET,
    ble_strength: int | None = UNSET,
    wifi_strength: int | None = UNSET,
    event_at: datetime | None = None,
) -> bool:
    """Update the lock's live state; only the fields given change. ``event_at`` sets
    ``last_event_at`` (pass it for webhook-driven updates, not for status polls).

    A status poll older than the last event must not override it: pass ``event_at=None``
    and check ``Lock.last_event_at`` first (polls are hints, events are truth).
    """
    fields = {
        "bolt_state": bolt_state,
        "battery_percentage": battery_percentage,
        "battery_type": battery_type,
        "online": online,
        "ble_strength": ble_strength,
        "wifi_strength": wifi_strength,
    }
    values: dict[str, Any] = {k: v for k, v in fields.items() if v is not UNSET}
    values["state_updated_at"] = now
    if event_at is not None:
        values["last_event_at"] = event_at
    result = await session.execute(
        update(Lock)
        .where(Lock.id == lock_id)
        .values(values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def list_events(
    session: AsyncSession,
    *,
    lock_id: str | None = None,
    room_id: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    command_id: str | None = None,
    limit: int = 100,
) -> list[LockEvent]:
    """Newest first; ``room_id`` means events of the locks serving that room."""
    stmt = select(LockEvent).order_by(LockEvent.received_at.desc(), LockEvent.id.desc())
    if lock_id is not None:
        stmt = stmt.where(LockEvent.lock_id == lock_id)
    if room_id is not None:
        stmt = stmt.where(
            LockEvent.lock_id.in_(select(RoomLock.lock_id).where(RoomLock.room_id == room_id))
        )
    if start is not None:
        stmt = stmt.where(LockEvent.received_at >= start)
    if end is not None:
        stmt = stmt.where(LockEvent.received_at < end)
    if command_id is not None:
        stmt = stmt.where(LockEvent.command_id == command_id)
    return list((await session.execute(stmt.limit(limit))).scalars())


# --------------------------------------------------------------------------- receipts

Executor = AsyncSession | AsyncConnection
"""Where the Core statements of the receipt path run: a session, or (cheaper: no ORM
execution layer) its connection."""

_RECEIPTS = cast(Table, LockEventReceipt.__table__)
_EVENTS = cast(Table, LockEvent.__table__)
_R = _RECEIPTS.c
RECEIPT_COLUMNS = (
    _R.id,
    _R.lock_id,
    _R.source,
    _R.event_type,
    _R.kind,
    _R.bolt_state,
    _R.key_local_id,
    _R.occurred_at,
    _R.received_at,
    _R.dedupe_key,
    _R.raw,
    _R.facts,
    _R.attempts,
    _R.retry_at,
)
"""What a pending receipt holds (rows, not ORM objects: cheaper)."""
APPLY_COLUMNS = tuple(
    column for column in RECEIPT_COLUMNS if column is not _R.raw and column is not _R.occurred_at
)
"""What the applier reads of a pending receipt: no ``raw`` payload or ``occurred_at`` (the
events are copied from the receipts in SQL, :func:`insert_events_from_receipts`; cloud dedupe
reads the payloads it needs with :func:`receipt_payloads`)."""

# The hot statements, built once (building a statement costs about as much as running it).
_INSERT_RECEIPTS = insert(_RECEIPTS)
_INSERT_EVENTS = insert(_EVENTS)
_PENDING = (
    select(*APPLY_COLUMNS)
    .where(_R.applied_at.is_(None))
    .order_by(_R.id)
    .limit(bindparam("limit", type_=Integer))
)
_IDS_IN = _R.id.in_(bindparam("ids", expanding=True))
_IDS_BETWEEN = _R.id.between(bindparam("lo", type_=Integer), bindparam("hi", type_=Integer))


def _id_params(ids: Sequence[int]) -> tuple[bool, dict[str, Any]]:
    """Parameters selecting the receipts ``ids`` (sorted, distinct): a range when they are
    consecutive (the usual case: receipts are numbered in arrival order), which spares
    SQLAlchemy rendering an ``IN`` of every id at each execution."""
    if ids[-1] - ids[0] == len(ids) - 1:
        return True, {"lo": ids[0], "hi": ids[-1]}
    return False, {"ids": list(ids)}


def _mark(where: Any) -> Any:
    return (
        update(_RECEIPTS)
        .where(where)
        .values(
            applied_at=bindparam("applied_at"),
            outcome=bindparam("outcome"),
            last_error=None,
            retry_at=None,
        )
    )


_MARK = _mark(_IDS_IN)
_MARK_RANGE = _mark(_IDS_BETWEEN)


async def insert_receipts(session: Executor, rows: Sequence[Mapping[str, Any]]) -> None:
    """Store received events (one multi-row INSERT: no RETURNING, which SQLite would turn
    into one INSERT per row).

    Each row has the :class:`~roomkey.service.db.models.LockEventReceipt` columns ``lock_id``,
    ``source``, ``event_type``, ``kind``, ``bolt_state``, ``key_local_id``, ``occurred_at``,
    ``received_at``, ``dedupe_key``, ``raw`` and ``facts``.
    """
    if rows:
        await session.execute(_INSERT_RECEIPTS, [{**row, "attempts": 0} for row in rows])


async def pending_receipts(
    session: Executor,
    *,
    lock_ids: Collection[str | None] | None = None,
    limit: int = 512,
) -> list[Any]:
    """Receipts not applied yet, oldest first (:data:`APPLY_COLUMNS`); ``lock_ids``
    narrows to those locks (None in it: events of no configured lock)."""
    if lock_ids is None:
        return list((await session.execute(_PENDING, {"limit": limit})).all())
    stmt = select(*APPLY_COLUMNS).where(_R.applied_at.is_(None))
    if lock_ids is not None:
        named = [lock for lock in lock_ids if lock is not None]
        if None in lock_ids:
            stmt = stmt.where(or_(_R.lock_id.in_(named), _R.lock_id.is_(None)))
        else:
            stmt = stmt.where(_R.lock_id.in_(named))
    return list((await session.execute(stmt.order_by(_R.id).limit(limit))).all())


async def mark_receipts(
    session: Executor, ids: Collection[int], *, outcome: str, now: datetime
) -> None:
    """Record that the receipts ``ids`` were applied with ``outcome`` (``stored``/``duplicate``)."""
    if ids:
        ranged, params = _id_params(sorted(set(ids)))
        params.update(applied_at=now, outcome=outcome)
        await session.execute(_MARK_RANGE if ranged else _MARK, params)


async def receipt_failed(
    session: AsyncSession, ids: Collection[int], *, error: str, retry_at: datetime
) -> None:
    """Count a failed attempt to apply the receipts ``ids``; retry them at ``retry_at``."""
    if ids:
        await session.execute(
            update(LockEventReceipt)
            .where(_R.id.in_(list(ids)), _R.applied_at.is_(None))
            .values(attempts=_R.attempts + 1, last_error=error[:2000], retry_at=retry_at)
            .execution_options(synchronize_session=False)
        )


async def prune_receipts(session: AsyncSession, *, applied_before: datetime) -> int:
    """Delete receipts applied before ``applied_before``; how many went."""
    result = await session.execute(
        delete(LockEventReceipt)
        .where(_R.applied_at.is_not(None), _R.applied_at < applied_before)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))


async def insert_events(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Store applied events in ``lock_events`` (one multi-row INSERT)."""
    if rows:
        await session.execute(_INSERT_EVENTS, list(rows))


_COPIED = ("lock_id", "source", "event_type", "kind", "bolt_state", "key_local_id")
_COPIED_AFTER = ("occurred_at", "received_at", "dedupe_key", "raw")
_EVENT_TARGET = [*_COPIED, *_COPIED_AFTER, "command_id", "reservation_id"]


def _events_from(command: Any, reservation: Any, *, ranged: bool = False) -> Any:
    selected = select(
        *(_R[name] for name in _COPIED),
        *(_R[name] for name in _COPIED_AFTER),
        command,
        reservation,
    )
    selected = selected.where(_IDS_BETWEEN if ranged else _IDS_IN).order_by(_R.id)
    return insert(_EVENTS).from_select(_EVENT_TARGET, selected)


_NO_COMMAND = type_coerce(null(), String()).label("command_id")
_NO_RESERVATION = type_coerce(null(), BigInteger()).label("reservation_id")
_COPY_UNLINKED = _events_from(_NO_COMMAND, _NO_RESERVATION)
_COPY_UNLINKED_RANGE = _events_from(_NO_COMMAND, _NO_RESERVATION, ranged=True)


async def insert_events_from_receipts(
    session: Executor,
    ids: Sequence[int],
    *,
    commands: Mapping[int, str] | None = None,
    reservations: Mapping[int, int] | None = None,
) -> None:
    """Copy the receipts ``ids`` into ``lock_events`` in id order, in ONE ``INSERT … SELECT``
    (the payload never leaves the database: no JSON decoded and encoded again);
    ``commands``/``reservations`` map a receipt id to the event's links (absent: none)."""
    if not ids:
        return
    ranged, params = _id_params(sorted(set(ids)))
    if not commands and not reservations:
        await session.execute(_COPY_UNLINKED_RANGE if ranged else _COPY_UNLINKED, params)
        return
    command: Any = type_coerce(null(), String())
    reservation: Any = type_coerce(null(), BigInteger())
    if commands:
        command = case(
            {receipt: bindparam(None, value, String()) for receipt, value in commands.items()},
            value=_R.id,
            else_=command,
        )
    if reservations:
        reservation = case(
            {
                receipt: bindparam(None, value, BigInteger())
                for receipt, value in reservations.items()
            },
            value=_R.id,
            else_=reservation,
        )
    stmt = _events_from(
        command.label("command_id"), reservation.label("reservation_id"), ranged=ranged
    )
    await session.execute(stmt, params)


async def receipt_payloads(session: AsyncSession, ids: Collection[int]) -> dict[int, Any]:
    """The stored ``raw`` payloads of the receipts ``ids``."""
    if not ids:
        return {}
    rows = await session.execute(select(_R.id, _R.raw).where(_R.id.in_(list(ids))))
    return {row[0]: row[1] for row in rows}


async def latest_event_key(
    session: AsyncSession, lock_id: str | None
) -> tuple[str, datetime] | None:
    """``(dedupe_key, received_at)`` of the latest stored event of ``lock_id`` (None: events
    of no configured lock)."""
    stmt = select(LockEvent.dedupe_key, LockEvent.received_at).where(
        LockEvent.lock_id.is_(None) if lock_id is None else LockEvent.lock_id == lock_id
    )
    row = (
        await session.execute(
            stmt.order_by(LockEvent.received_at.desc(), LockEvent.id.desc()).limit(1)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def cloud_payloads_since(
    session: AsyncSession, lock_id: str | None, keys: Collection[str], *, since: datetime
) -> list[tuple[str, datetime, dict[str, Any]]]:
    """Stored cloud events of ``lock_id`` with one of ``keys``, received after ``since``:
    ``(dedupe_key, received_at, raw)`` (cloud redelivery detection)."""
    if not keys:
        return []
    stmt = select(LockEvent.dedupe_key, LockEvent.received_at, LockEvent.raw).where(
        LockEvent.lock_id.is_(None) if lock_id is None else LockEvent.lock_id == lock_id,
        LockEvent.source == EventSource.CLOUD,
        LockEvent.dedupe_key.in_(list(keys)),
        LockEvent.received_at > since,
    )
    rows = (await session.execute(stmt.limit(200))).all()
    return [(row[0], row[1], row[2]) for row in rows]


def count_pending(*, lock_id: str | None = None) -> Any:
    """A ``SELECT count(*)`` of unapplied receipts (optionally of one lock)."""
    stmt = select(func.count()).select_from(LockEventReceipt).where(_R.applied_at.is_(None))
    if lock_id is not None:
        stmt = stmt.where(_R.lock_id == lock_id)
    return stmt
