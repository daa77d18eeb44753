"""Receiving LOQED events: the durable receipt the webhook answers after.

A verified, parsed event becomes one row of ``lock_event_receipts``
(:func:`receipt_row`: PII dropped unless ``[loqed] keep_event_pii``, strings and numbers made
storable, the dedupe key computed). :func:`receive` hands it to the service's
:class:`~roomkey.service.group_commit.GroupCommit`: every batch of concurrent webhooks is ONE
transaction with ONE multi-row INSERT (no RETURNING: SQLite would split it into one INSERT
per row), committed before any of them is answered. The transaction is begun before the batch
is taken (``GroupCommit(hold=...)``): on SQLite it waits for the write turn while the applier
holds it, and the webhooks arriving meanwhile join the batch. Right after each commit the applier
(:mod:`roomkey.service.loqed_apply`) is woken; the receivers count the webhooks they are
handling (:meth:`Receiver.enter`/:meth:`Receiver.leave`) so that, while more are on their
way, the applier waits for them and applies one larger batch (see ``eager_batch`` there).

:func:`ingest_event` is "receive, then apply now" in one call (waits for the applier) for
callers outside the webhook path.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roomkey.loqed import EventKind, LockEvent
from roomkey.service.db.events import PII_FIELDS, event_dedupe_key, insert_receipts
from roomkey.service.db.models import EventSource, LockEventReceipt
from roomkey.service.executor import LoqedContext
from roomkey.service.group_commit import GroupCommit
from roomkey.service.loqed_apply import applier_for

__all__ = [
    "EXTRA_PII_FIELDS",
    "MAX_RECEIPT_BATCH",
    "IngestResult",
    "Receiver",
    "ingest_event",
    "receipt_for",
    "receipt_row",
    "receive",
    "receiver_for",
]

EXTRA_PII_FIELDS = frozenset({"value2", "value3", "key_account_e-mail"})
"""Cloud (IFTTT-style) fields that carry key names and e-mail addresses."""
MAX_RECEIPT_BATCH = 256
"""Receipts per transaction at most."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What happened to one delivered event (``applied``: its effects are in the database;
    ``duplicate``: the applier dropped it by the dedupe rules)."""

    duplicate: bool
    lock_id: str | None = None
    applied: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"status": "duplicate" if self.duplicate else "stored", "lock": self.lock_id}


# --------------------------------------------------------------------------- storage hygiene


def _clean(value: Any, depth: int = 0) -> Any:
    """JSON any backend stores: no NUL or lone surrogates in strings, no NaN/∞, bounded depth."""
    if depth > 32:
        return None
    if isinstance(value, str):
        if value.isascii() and "\x00" not in value:  # the usual case: nothing to do
            return value
        if "\x00" in value:
            value = value.replace("\x00", "")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8")
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(_clean(str(k))): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v, depth + 1) for v in value]
    return _clean(str(value), depth)


_DROPPED = PII_FIELDS | EXTRA_PII_FIELDS
_PLAIN = (int, bool, type(None))
"""Value types stored as they are (``float`` is not: NaN and ∞ are not JSON)."""


def _stored_payload(event: LockEvent, keep_pii: bool) -> dict[str, Any]:
    """The payload as stored: PII dropped (top level and one level down) unless ``keep_pii``,
    cleaned by :func:`_clean` (one pass; plain ASCII strings and integers are taken as
    they are)."""
    stored: dict[str, Any] = {}
    for key, value in event.raw.items():
        if not keep_pii:
            if key in _DROPPED:
                continue
            if isinstance(value, dict):
                value = {ik: iv for ik, iv in value.items() if ik not in _DROPPED}
            elif key == "value1" and isinstance(value, str):
                value = value[:200]
        if type(value) in _PLAIN or (
            type(value) is str and value.isascii() and "\x00" not in value
        ):
            clean_value = value
        else:
            clean_value = _clean(value, 1)
        clean_key = key if key.isascii() and "\x00" not in key else str(_clean(key))
        stored[clean_key] = clean_value
    return stored


def _dedupe_key(lock_id: str | None, event: LockEvent, event_type: str) -> str:
    base = event_dedupe_key(
        lock_id,
        event_type,
        event.bolt_state.value if event.bolt_state is not None else None,
        event.key_local_id,
    )
    if event.kind is EventKind.BATTERY:
        return f"{base}|b{event.battery_percentage}"[:256]
    if event.kind is EventKind.ONLINE:
        return f"{base}|o{event.online}"[:256]
    return base


def _int(value: int | None) -> int | None:
    """An integer any backend's INTEGER column holds (absurd values dropped)."""
    return value if value is None or -(2**31) <= value < 2**31 else None


def receipt_row(
    lock_id: str | None,
    event: LockEvent,
    *,
    source: EventSource,
    received_at: datetime,
    occurred_at: datetime | None = None,
    keep_pii: bool = False,
) -> dict[str, Any]:
    """The ``lock_event_receipts`` row of a verified, parsed event."""
    event_type = str(_clean(event.event_type))[:64]
    return {
        "lock_id": lock_id,
        "source": source,
        "event_type": event_type,
        "kind": event.kind.value,
        "bolt_state": event.bolt_state.value if event.bolt_state is not None else None,
        "key_local_id": _int(event.key_local_id),
        "occurred_at": occurred_at,
        "received_at": received_at,
        "dedupe_key": _dedupe_key(lock_id, event, event_type),
        "raw": _stored_payload(event, keep_pii),
        "facts": {  # bounded ints, a bool and one cleaned string: storable as they are
            "battery_percentage": _int(event.battery_percentage),
            "battery_type": _clean(event.battery_type[:32]) if event.battery_type else None,
            "ble_strength": _int(event.ble_strength),
            "wifi_strength": _int(event.wifi_strength),
            "online": event.online,
        },
    }


def receipt_for(
    ctx: LoqedContext,
    lock_id: str | None,
    event: LockEvent,
    *,
    source: EventSource,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """:func:`receipt_row` received now, with the service's PII setting."""
    return receipt_row(
        lock_id,
        event,
        source=source,
        received_at=ctx.now(),
        occurred_at=occurred_at,
        keep_pii=ctx.config.loqed.keep_event_pii,
    )


# --------------------------------------------------------------------------- group commit


class Receiver:
    """One service's receipt writer: the group commit, and how many webhooks are being
    received right now (so the applier knows whether another receipt batch will follow)."""

    def __init__(self, ctx: LoqedContext) -> None:
        self.ctx = ctx
        self.applier = applier_for(ctx)
        self.active = 0
        """Webhooks between arrival and answer (:meth:`enter`/:meth:`leave`)."""
        self.learned: dict[str, str] = {}
        """LOQED numeric lock id → roomkey lock id, as stored by this process (cloud)."""
        self._session: AsyncSession | None = None
        self._written: Sequence[dict[str, Any]] = ()
        self.commit: GroupCommit[dict[str, Any], None] = GroupCommit(
            self._write, max_batch=MAX_RECEIPT_BATCH, name="loqed-receipts", hold=self._turn
        )

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """The receipt transaction, begun before the batch is taken: on SQLite ``BEGIN
        IMMEDIATE`` waits for the write turn (the applier may hold it), and the webhooks that
        arrive meanwhile join this batch. Kicks the applier once committed."""
        self._written = ()
        try:
            async with self.ctx.sessions() as session, session.begin():
                await session.connection()  # BEGIN now (SQLite: wait for the write turn)
                self._session = session
                try:
                    yield
                finally:
                    self._session = None
        except BaseException:
            self.applier.release()  # what an earlier batch deferred must not wait for this one
            raise
        rows: Sequence[dict[str, Any]] = self._written
        self._written = ()
        self.applier.kick(
            [row["lock_id"] for row in rows],
            count=len(rows),
            more_coming=self.active > len(rows),
        )

    async def _write(self, rows: Sequence[dict[str, Any]]) -> list[None]:
        if self._session is None:  # pragma: no cover - GroupCommit always enters _turn first
            raise RuntimeError("receipt batch written outside its transaction")
        await insert_receipts(await self._session.connection(), rows)
        self._written = rows
        return [None] * len(rows)

    def enter(self) -> None:
        """A webhook arrived (it may add a receipt soon)."""
        self.active += 1

    def leave(self) -> None:
        """A webhook was answered; the last one releases a pass the applier deferred."""
        self.active -= 1
        if self.active <= 0:
            self.active = 0
            self.applier.release()


_RECEIVERS: dict[int, tuple[weakref.ref[LoqedContext], Receiver]] = {}


def receiver_for(ctx: LoqedContext) -> Receiver:
    """The receipt writer of ``ctx`` (one per LOQED context, so per service)."""
    found = _RECEIVERS.get(id(ctx))
    if found is not None and found[0]() is ctx:
        return found[1]
    receiver = Receiver(ctx)
    key = id(ctx)
    _RECEIVERS[key] = (weakref.ref(ctx, lambda _ref: _RECEIVERS.pop(key, None)), receiver)
    return receiver


async def receive(ctx: LoqedContext, row: dict[str, Any]) -> None:
    """Store one receipt durably (group-committed). Raises what storing raised."""
    await receiver_for(ctx).commit.submit(row)


async def ingest_event(
    ctx: LoqedContext,
    lock_id: str | None,
    event: LockEvent,
    *,
    source: EventSource,
    occurred_at: datetime | None = None,
) -> IngestResult:
    """Receive one event and wait until the applier has applied it. ``lock_id`` None stores
    an event no configured lock claims (kept for the record, no effects)."""
    row = receipt_for(ctx, lock_id, event, source=source, occurred_at=occurred_at)
    await receive(ctx, row)
    await applier_for(ctx).settle()
    r = LockEventReceipt
    stmt = select(r.outcome).where(
        r.lock_id.is_(None) if lock_id is None else r.lock_id == lock_id,
        r.received_at == row["received_at"],
        r.dedupe_key == row["dedupe_key"],
    )
    async with ctx.sessions() as session:
        outcome = (await session.execute(stmt.order_by(r.id.desc()).limit(1))).scalar()
    return IngestResult(
        duplicate=outcome == "duplicate", lock_id=lock_id, applied=outcome is not None
    )
