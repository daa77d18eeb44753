"""Applying received LOQED events: stored receipts → events, lock state, alerts, commands.

The webhook receivers (:mod:`roomkey.service.hooks_loqed`) only verify, store a *receipt*
(group-committed: one transaction and one multi-row INSERT per batch, durable before the 200)
and answer. :class:`EventApplier` applies the receipts right after, off the request path:

* **Woken, not polled.** Every committed receipt batch calls :meth:`EventApplier.kick`,
  which starts a drain task when none runs; while a pass runs, new receipts gather and the
  next pass takes them all (bounded by ``batch_size``). When another receipt batch is
  already on its way the pass waits for its commit (its kick), up to ``eager_batch``
  waiting receipts: an idle system applies each event at once, a busy one in larger,
  cheaper passes. The supervisor worker
  (:func:`create_worker`) runs a pass at start (receipts left by a crash between receipt and
  apply are picked up), retries failed receipts when their backoff ends, and prunes applied
  receipts after :data:`RETENTION`.
* **One transaction per batch, in arrival order per lock.** Receipts are read oldest first
  and grouped by lock. Each lock is loaded once, its events are folded in memory
  (:func:`~roomkey.service.lock_state.apply_event`) and saved once; alerts are read once per
  lock (:func:`~roomkey.service.alerts.apply_alert_batch`); in-flight commands (with their
  attempts) are loaded once per batch, only for locks with a go-to/state/stall event; the
  reservation links come from one query of the door windows covering the batch's time
  range; the events are copied from their receipts into ``lock_events`` with one
  ``INSERT … SELECT`` (the payload is never decoded and encoded again), their links already
  set. A command that reaches a terminal state wakes the executor (``ctx.poke()``) right
  after the commit.
* **Duplicates** follow the rules the receivers used to apply inline: an event equal
  (``dedupe_key``) to the lock's latest stored event within ``[loqed]
  dedupe_window_seconds`` (kept on the lock row as ``last_event_key``/``last_event_at``), and
  a cloud delivery of the very payload already stored from the cloud within the window.
  The receipt records ``outcome = "duplicate"``; only ``stored`` receipts become events.
* **Replicas.** On PostgreSQL each lock of a batch is serialised with the advisory lock
  ``lock-state:<lock>`` (taken in sorted order) and its pending receipts are read again
  after that, so two replicas never apply the same receipt; receipts are marked applied in
  the same transaction. (Receipts of one lock committed by two replicas at the same moment
  are applied in id order, which may differ from commit order by a few milliseconds.)
* **Failures never drop an event.** When a batch fails, each lock is retried in its own
  transaction; a lock that still fails keeps its receipts, counts the attempt
  (``attempts``, ``last_error``), is retried after an exponential backoff (its later events
  wait behind it: order matters more than progress) and, from :data:`ALERT_AFTER` failed
  attempts on, shows an ``event_apply_failed`` alert, resolved once they applied.
* **Logging** is one INFO line per :data:`LOG_EVERY` seconds summing the passes since the
  last one (a line per pass cost as much as applying a small batch), plus one per command an
  event moved and one per failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam, exists, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from roomkey.loqed import BoltState, EventKind
from roomkey.service import commands as lc
from roomkey.service.alerts import (
    AlertChange,
    AlertKind,
    apply_alert_batch,
    lock_alert_changes,
    raise_alert,
    resolve_alert,
)
from roomkey.service.db._sql import dialect_name, serialize_scope
from roomkey.service.db.events import (
    Executor,
    cloud_payloads_since,
    insert_events_from_receipts,
    latest_event_key,
    mark_receipts,
    pending_receipts,
    prune_receipts,
    receipt_failed,
    receipt_payloads,
)
from roomkey.service.db.models import (
    Alert,
    Command,
    CommandAttempt,
    CommandState,
    DoorWindow,
    EventSource,
    Lock,
    RoomLock,
)
from roomkey.service.executor import (
    LoqedContext,
    command_ended,
    context_for,
    persist_transition,
    to_domain,
)
from roomkey.service.lock_state import LockSnapshot, apply_event, snapshot_of

if TYPE_CHECKING:
    from roomkey.service.runtime import Service, Worker

__all__ = [
    "ALERT_AFTER",
    "RETENTION",
    "ApplyReport",
    "EventApplier",
    "applier_for",
    "create_worker",
]

log = logging.getLogger(__name__)

RETENTION = timedelta(days=1)
"""Applied receipts (with their outcome) are kept this long, then pruned."""
ALERT_AFTER = 3
"""Failed attempts on a lock's receipts before an ``event_apply_failed`` alert opens."""
LOG_EVERY = 10.0
"""Seconds between two INFO summaries of applied events."""
PRUNE_EVERY = 600.0
"""Seconds between prunes of applied receipts (done by the worker's passes)."""

_LIFECYCLE_KINDS = {
    EventKind.GO_TO_STATE: lc.EventKind.GO_TO_STATE,
    EventKind.STATE_CHANGED: lc.EventKind.STATE_CHANGED,
    EventKind.MOTOR_STALL: lc.EventKind.MOTOR_STALL,
}
_LIFECYCLE_VALUES = frozenset(kind.value for kind in _LIFECYCLE_KINDS)
_IN_FLIGHT = (CommandState.SENDING, CommandState.SENT, CommandState.ACCEPTED)
_LOCK_ALERTS = (
    AlertKind.MOTOR_STALL,
    AlertKind.LOCK_OFFLINE,
    AlertKind.LOW_BATTERY,
    AlertKind.EVENT_APPLY_FAILED,
)
"""The alerts a lock's events open or resolve (command alerts are read where they change)."""
_LOCKS = cast(Table, Lock.__table__)
_L = _LOCKS.c


@dataclass
class ApplyReport:
    """What one pass did (for logs and tests)."""

    receipts: int = 0
    stored: int = 0
    duplicates: int = 0
    locks: int = 0
    failed_locks: list[str | None] = field(default_factory=list)
    blocked_locks: list[str | None] = field(default_factory=list)
    commands: list[tuple[str, str]] = field(default_factory=list)
    """(command id, new state) of the commands the events moved."""


@dataclass
class _LockBatch:
    """The pending receipts of one lock, and what applying them decided."""

    lock_id: str | None
    rows: list[Any]
    stored_ids: list[int] = field(default_factory=list)
    duplicate_ids: list[int] = field(default_factory=list)
    command_links: dict[int, str] = field(default_factory=dict)
    """Receipt id → the command its event moved."""
    reservation_links: dict[int, int] = field(default_factory=dict)
    """Receipt id → the reservation whose door window holds its event."""
    alert_changes: list[tuple[AlertChange, datetime]] = field(default_factory=list)
    lock_update: dict[str, Any] | None = None
    commands: list[tuple[str, str]] = field(default_factory=list)
    ended: bool = False


@dataclass(frozen=True, slots=True)
class _Facts:
    """The event a receipt stands for, as the state, alert and command rules read it
    (a plain record: rebuilding a pydantic model per event cost more than applying it)."""

    event_type: str
    kind: EventKind
    bolt_state: BoltState | None
    key_local_id: int | None
    battery_percentage: int | None
    battery_type: str | None
    ble_strength: int | None
    wifi_strength: int | None
    online: bool | None


def _event_of(row: Any) -> _Facts:
    """The parsed event a receipt row stands for (what the effects need)."""
    facts: dict[str, Any] = row.facts or {}
    return _Facts(
        event_type=row.event_type,
        kind=EventKind(row.kind),
        bolt_state=BoltState(row.bolt_state) if row.bolt_state is not None else None,
        key_local_id=row.key_local_id,
        battery_percentage=facts.get("battery_percentage"),
        battery_type=facts.get("battery_type"),
        ble_strength=facts.get("ble_strength"),
        wifi_strength=facts.get("wifi_strength"),
        online=facts.get("online"),
    )


def _scope(lock_id: str | None) -> str:
    return f"lock-state:{lock_id or ''}"


class EventApplier:
    """Applies stored receipts of one service (see the module doc)."""

    def __init__(
        self,
        ctx: LoqedContext,
        *,
        batch_size: int = 512,
        eager_batch: int = 64,
        max_hold: float = 0.02,
        backoff_initial: float = 1.0,
        backoff_max: float = 300.0,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.batch_size = batch_size
        self.eager_batch = eager_batch
        self.max_hold = max_hold
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._on_failure = on_failure
        self._lock = asyncio.Lock()
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._next_retry: datetime | None = None
        self._last_prune: float | None = None
        self._prefetch: set[str] = set()
        self._backlog = 0
        self._deferred = False
        self._held: asyncio.TimerHandle | None = None
        self._last_pass_end: float | None = None
        self._unlogged = ApplyReport()
        self._logged_at: float | None = None
        self.passes = 0
        """Passes run so far (tests, metrics)."""
        self.applied = 0
        """Receipts applied so far (stored or duplicate)."""

    # -- waking ---------------------------------------------------------------------------
    def kick(
        self, lock_ids: Sequence[str | None] = (), *, count: int = 0, more_coming: bool = False
    ) -> None:
        """``count`` new receipts (of ``lock_ids``) were committed: apply them now (starts a
        drain task if none runs).

        With ``more_coming`` (more webhooks are being received: their batch kicks again, or
        :meth:`release` runs when the last is answered) the pass waits for them, unless
        :attr:`eager_batch` receipts are already waiting. Under sustained load (receipts
        committed within :attr:`max_hold` seconds of the end of the last pass) the pass
        likewise waits for the next receipt batch, at most :attr:`max_hold` seconds: a pass
        has a fixed cost of a few statements (about 1 ms), so passes of 64 events instead
        of 32 cut the server's CPU per webhook by a sixth, while an idle system still
        applies each batch at once.
        """
        self._prefetch.update(lock for lock in lock_ids if lock is not None)
        self._backlog += count
        if count and self._backlog < self.eager_batch:
            if more_coming:
                self._deferred = True
                return
            loop = asyncio.get_running_loop()
            if (
                self._last_pass_end is not None
                and loop.time() - self._last_pass_end < self.max_hold
            ):
                if self._held is None:
                    self._held = loop.call_later(self.max_hold, self._flush)
                return
        self._deferred = False
        if self._held is not None:
            self._held.cancel()
            self._held = None
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._drain(), name="roomkey-loqed-apply"
            )

    def release(self) -> None:
        """No more receipts are on their way: run a pass :meth:`kick` deferred."""
        if self._deferred:
            self.kick()

    def _flush(self) -> None:
        """Run a pass :meth:`kick` deferred or held (the hold timer, :meth:`settle`)."""
        self._held_timer_done()
        if self._deferred or self._backlog:
            self.kick()

    def _held_timer_done(self) -> None:
        if self._held is not None:
            self._held.cancel()
            self._held = None

    async def settle(self) -> None:
        """Wait until what has been kicked so far is applied (or has failed and waits for
        its retry). For callers that want "received and applied" (tests, ``ingest_event``)."""
        self._flush()
        while self._task is not None and not self._task.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)

    async def _drain(self) -> None:
        try:
            await self.drain()
        except Exception:  # the receipts stay; the worker's next pass retries them
            log.exception("applying LOQED events failed; they stay stored and are retried")
            if self._on_failure is not None:
                self._on_failure()

    async def drain(self) -> None:
        """Run passes until nothing kicked is left."""
        async with self._lock:
            self._dirty = True
            while self._dirty:
                self._dirty = False
                report = await self._pass()
                if report.receipts >= self.batch_size:
                    self._dirty = True
            self._last_pass_end = asyncio.get_running_loop().time()

    async def step(self) -> float | None:
        """One supervisor pass: apply what is pending, prune old receipts; returns the
        seconds until the earliest retry is due (None: nothing waits)."""
        self._prefetch.update(lock.id for lock in self.ctx.config.locks)
        await self.drain()
        now = self.ctx.clock.time()
        if self._last_prune is None or now - self._last_prune >= PRUNE_EVERY:
            self._last_prune = now
            async with self.ctx.sessions() as session, session.begin():
                pruned = await prune_receipts(session, applied_before=self.ctx.now() - RETENTION)
            if pruned:
                log.info("pruned %d applied LOQED event receipts", pruned)
        if self._next_retry is None:
            return None
        return max(0.0, (self._next_retry - self.ctx.now()).total_seconds())

    # -- one pass -------------------------------------------------------------------------
    async def _learn_key_slots(self) -> None:
        """Read learned cloud key slots of the locks about to be applied *before* the apply
        transaction (reading them opens a session of its own)."""
        locks, self._prefetch = self._prefetch, set()
        for lock_id in sorted(locks):
            await self.ctx.transports(lock_id)

    async def _pass(self) -> ApplyReport:
        self._backlog = 0
        await self._learn_key_slots()
        report = ApplyReport()
        now = self.ctx.now()
        self._next_retry = None
        batches: list[_LockBatch] = []
        try:
            async with self.ctx.sessions() as session, session.begin():
                batches = await self._claim(session, now, report)
                if batches:
                    await self._apply(session, batches)
        except Exception as exc:
            if not batches:
                raise
            log.warning(
                "applying a batch of %d LOQED events failed (%s); retrying lock by lock",
                sum(len(b.rows) for b in batches),
                type(exc).__name__,
            )
            await self._one_by_one([b.lock_id for b in batches], report)
            self._finish(report)
            return report
        self._after_commit(batches, report)
        self._finish(report)
        return report

    async def _claim(
        self, session: AsyncSession, now: datetime, report: ApplyReport
    ) -> list[_LockBatch]:
        """The pending receipts, grouped by lock (locks waiting for a retry left out)."""
        conn = await session.connection()  # Core statements: skip the ORM execution layer
        rows = await pending_receipts(conn, limit=self.batch_size)
        if not rows:
            return []
        if dialect_name(session) == "postgresql":
            locks = sorted({row.lock_id for row in rows}, key=lambda lock: lock or "")
            for lock in locks:
                await serialize_scope(session, _scope(lock))
            rows = await pending_receipts(conn, lock_ids=locks, limit=self.batch_size)
        return self._group(rows, now, report)

    def _group(self, rows: Sequence[Any], now: datetime, report: ApplyReport) -> list[_LockBatch]:
        grouped: dict[str | None, list[Any]] = {}
        for row in rows:
            grouped.setdefault(row.lock_id, []).append(row)
        batches = []
        for lock_id, lock_rows in grouped.items():
            first = lock_rows[0]
            if first.retry_at is not None and first.retry_at > now:
                report.blocked_locks.append(lock_id)
                self._note_retry(first.retry_at)
                continue
            batches.append(_LockBatch(lock_id, lock_rows))
        return batches

    def _note_retry(self, at: datetime) -> None:
        if self._next_retry is None or at < self._next_retry:
            self._next_retry = at

    async def _one_by_one(self, lock_ids: list[str | None], report: ApplyReport) -> None:
        """After a failed batch: each lock in its own transaction; failures are recorded."""
        for lock_id in lock_ids:
            batch: _LockBatch | None = None
            now = self.ctx.now()
            try:
                async with self.ctx.sessions() as session, session.begin():
                    await serialize_scope(session, _scope(lock_id))
                    rows = await pending_receipts(
                        session, lock_ids=[lock_id], limit=self.batch_size
                    )
                    found = self._group(rows, now, report)
                    if not found:
                        continue
                    batch = found[0]
                    await self._apply(session, [batch])
            except Exception as exc:
                report.failed_locks.append(lock_id)
                await self._record_failure(lock_id, batch, exc)
                continue
            if batch is not None:
                self._after_commit([batch], report)

    async def _record_failure(
        self, lock_id: str | None, batch: _LockBatch | None, exc: Exception
    ) -> None:
        if self._on_failure is not None:
            self._on_failure()
        if batch is None:  # could not even read them: the next pass tries again
            log.error("lock %s: reading its pending events failed: %r", lock_id, exc)
            return
        attempts = max(int(row.attempts or 0) for row in batch.rows) + 1
        delay = min(self.backoff_max, self.backoff_initial * 2 ** (attempts - 1))
        now = self.ctx.now()
        retry_at = now + timedelta(seconds=delay)
        log.error(
            "lock %s: applying %d received event(s) failed (attempt %d, retry in %.0fs): %s: %s",
            lock_id,
            len(batch.rows),
            attempts,
            delay,
            type(exc).__name__,
            exc,
        )
        try:
            async with self.ctx.sessions() as session, session.begin():
                await receipt_failed(
                    session,
                    [row.id for row in batch.rows],
                    error=f"{type(exc).__name__}: {exc}",
                    retry_at=retry_at,
                )
                if attempts >= ALERT_AFTER and lock_id is not None:
                    await raise_alert(
                        session,
                        AlertKind.EVENT_APPLY_FAILED,
                        subject=lock_id,
                        message=f"{len(batch.rows)} received event(s) could not be applied "
                        f"({type(exc).__name__}); retrying",
                        now=now,
                        lock_id=lock_id,
                    )
        except Exception:
            log.exception("lock %s: could not record the failed apply", lock_id)
        self._note_retry(retry_at)

    def _after_commit(self, batches: list[_LockBatch], report: ApplyReport) -> None:
        for batch in batches:
            report.receipts += len(batch.rows)
            report.stored += len(batch.stored_ids)
            report.duplicates += len(batch.duplicate_ids)
            report.locks += 1
            report.commands.extend(batch.commands)
            for command_id, state in batch.commands:
                log.info(
                    "lock %s: an event moved command %s to %s", batch.lock_id, command_id, state
                )
        if any(batch.ended for batch in batches):
            self.ctx.poke()

    def _finish(self, report: ApplyReport) -> None:
        self.passes += 1
        self.applied += report.receipts
        if not report.receipts and not report.failed_locks:
            return
        total = self._unlogged
        total.receipts += report.receipts
        total.locks += report.locks
        total.stored += report.stored
        total.duplicates += report.duplicates
        total.failed_locks.extend(report.failed_locks)
        now = self.ctx.clock.time()
        if (
            self._logged_at is not None
            and now - self._logged_at < LOG_EVERY
            and not report.failed_locks
        ):
            return
        self._logged_at = now
        self._unlogged = ApplyReport()
        log.info(
            "applied %d LOQED event(s) (%d lock batch(es)): %d stored, %d duplicate(s)%s",
            total.receipts,
            total.locks,
            total.stored,
            total.duplicates,
            f"; {len(total.failed_locks)} lock(s) failed" if total.failed_locks else "",
        )

    # -- applying -------------------------------------------------------------------------
    async def _apply(self, session: AsyncSession, batches: list[_LockBatch]) -> None:
        """Apply ``batches`` inside ``session``'s transaction (see the module doc)."""
        ctx = self.ctx
        window = timedelta(seconds=ctx.config.loqed.dedupe_window_seconds)
        named = [b.lock_id for b in batches if b.lock_id is not None]
        conn = await session.connection()  # Core statements: skip the ORM execution layer
        locks = await _load_locks(conn, named)
        movers = [
            b.lock_id
            for b in batches
            if b.lock_id in locks
            and locks[b.lock_id].has_commands
            and any(row.kind in _LIFECYCLE_VALUES for row in b.rows)
        ]
        commands = await _in_flight(session, movers, ctx)
        times = [row.received_at for b in batches if b.lock_id in locks for row in b.rows]
        windows = await _door_windows(conn, list(locks), min(times), max(times)) if times else {}
        now = ctx.now()
        command_links: dict[int, str] = {}
        reservation_links: dict[int, int] = {}
        lock_updates: list[dict[str, Any]] = []
        alert_changes: list[tuple[str, AlertChange, datetime]] = []
        for batch in batches:
            lock = locks.get(batch.lock_id) if batch.lock_id is not None else None
            await self._fold(session, batch, lock, commands, windows, window)
            command_links.update(batch.command_links)
            reservation_links.update(batch.reservation_links)
            if batch.lock_update is not None:
                lock_updates.append(batch.lock_update)
            if batch.lock_id is not None:
                alert_changes.extend((batch.lock_id, c, at) for c, at in batch.alert_changes)
                if any(int(row.attempts or 0) > 0 for row in batch.rows):
                    await resolve_alert(
                        session, AlertKind.EVENT_APPLY_FAILED, subject=batch.lock_id, now=now
                    )
        with_alerts = {lock_id for lock_id, lock in locks.items() if lock.has_alerts}
        await apply_alert_batch(session, alert_changes, maybe_open=with_alerts)
        stored = sorted(i for b in batches for i in b.stored_ids)
        await insert_events_from_receipts(
            conn, stored, commands=command_links, reservations=reservation_links
        )
        if lock_updates:
            await conn.execute(_UPDATE_LOCKS, lock_updates)
        duplicates = [i for b in batches for i in b.duplicate_ids]
        await mark_receipts(conn, stored, outcome="stored", now=now)
        await mark_receipts(conn, duplicates, outcome="duplicate", now=now)

    async def _fold(
        self,
        session: AsyncSession,
        batch: _LockBatch,
        lock: Any,
        commands: dict[str, list[lc.Command]],
        windows: dict[str, list[tuple[datetime, datetime, int]]],
        window: timedelta,
    ) -> None:
        """Decide duplicates and fold the lock's events in order."""
        lock_id = batch.lock_id
        latest: tuple[str, datetime] | None
        if lock is not None:
            latest = (
                (lock.last_event_key, lock.last_event_at)
                if lock.last_event_key is not None and lock.last_event_at is not None
                else await latest_event_key(session, lock_id)
            )
        else:
            latest = await latest_event_key(session, lock_id)
        cloud, payloads = await self._cloud_seen(session, batch, window)
        snapshot = snapshot_of(lock) if lock is not None else None
        last: tuple[datetime, str] | None = None
        for row in batch.rows:
            received_at: datetime = row.received_at
            key: str = row.dedupe_key
            from_cloud = row.source == EventSource.CLOUD
            raw = payloads.get(row.id) if from_cloud else None
            if from_cloud:
                seen = cloud.get(key, [])
                if any(at > received_at - window and prior == raw for at, prior in seen):
                    batch.duplicate_ids.append(row.id)
                    continue
            if latest is not None and latest[0] == key and received_at - latest[1] < window:
                batch.duplicate_ids.append(row.id)
                continue
            latest = (key, received_at)
            if from_cloud:
                cloud.setdefault(key, []).append((received_at, raw))
            batch.stored_ids.append(row.id)
            command_id = reservation_id = None
            if lock is not None and snapshot is not None and lock_id is not None:
                event = _event_of(row)
                after = apply_event(snapshot, event)
                batch.alert_changes.extend(
                    (change, received_at)
                    for change in lock_alert_changes(
                        snapshot, after, event, low_battery=self.ctx.low_battery_percent
                    )
                )
                if row.kind in _LIFECYCLE_VALUES and commands.get(lock_id):
                    command_id = await self._advance(
                        session, batch, commands[lock_id], event, snapshot, received_at
                    )
                reservation_id = _reservation_at(windows.get(lock_id, []), received_at)
                snapshot = after
                last = (received_at, key)
            if command_id is not None:
                batch.command_links[row.id] = command_id
            if reservation_id is not None:
                batch.reservation_links[row.id] = reservation_id
        if last is not None and snapshot is not None and lock_id is not None:
            batch.lock_update = _lock_params(lock_id, snapshot, *last)

    async def _cloud_seen(
        self, session: AsyncSession, batch: _LockBatch, window: timedelta
    ) -> tuple[dict[str, list[tuple[datetime, Any]]], dict[int, Any]]:
        """Cloud payloads already stored within the window, by dedupe key, and the payloads
        of the batch's cloud receipts (two queries, and only when the lock's batch has cloud
        events: bridge events are never compared by payload)."""
        cloud_rows = [r for r in batch.rows if r.source == EventSource.CLOUD]
        if not cloud_rows:
            return {}, {}
        payloads = await receipt_payloads(session, [r.id for r in cloud_rows])
        since = min(r.received_at for r in cloud_rows) - window
        keys = {r.dedupe_key for r in cloud_rows}
        seen: dict[str, list[tuple[datetime, Any]]] = defaultdict(list)
        for key, at, raw in await cloud_payloads_since(session, batch.lock_id, keys, since=since):
            seen[key].append((at, raw))
        return dict(seen), payloads

    async def _advance(
        self,
        session: AsyncSession,
        batch: _LockBatch,
        in_flight: list[lc.Command],
        event: _Facts,
        before: LockSnapshot,
        now: datetime,
    ) -> str | None:
        """Feed a bolt event to the lock's in-flight commands (kept in memory across the
        batch); the id of the one it moved."""
        kind = _LIFECYCLE_KINDS[event.kind]
        view = lc.LockEventView(
            kind=kind,
            state=lc.DoorState(event.bolt_state.value) if event.bolt_state is not None else None,
            key_local_id=event.key_local_id,
        )
        current = lc.DoorState(before.bolt_state.value) if before.bolt_state is not None else None
        for i, domain in enumerate(in_flight):
            after = lc.on_lock_event(domain, view, now=now, current_state=current)
            if after.state is domain.state:
                continue
            detail = f"{event.event_type[:64]} (key {event.key_local_id})"
            if not await persist_transition(session, domain, after, now=now, detail=detail):
                continue
            if after.state.terminal:
                await command_ended(session, after, now=now, detail=event.event_type[:64])
                del in_flight[i]
                batch.ended = True
            else:
                in_flight[i] = after
            batch.commands.append((after.id, after.state.value))
            return after.id
        return None


# --------------------------------------------------------------------------- batch loads
# The statements are built once (building one costs about as much as running it).

_LOCK_ROWS = select(
    _L.id,
    _L.bolt_state,
    _L.battery_percentage,
    _L.battery_type,
    _L.online,
    _L.ble_strength,
    _L.wifi_strength,
    _L.last_event_at,
    _L.last_event_key,
    exists().where(Command.lock_id == _L.id, Command.state.in_(_IN_FLIGHT)).label("has_commands"),
    exists()
    .where(
        Alert.dedupe_key.in_([literal(f"{kind.value}:") + _L.id for kind in _LOCK_ALERTS]),
        Alert.acknowledged_at.is_(None),
    )
    .label("has_alerts"),
).where(_L.id.in_(bindparam("ids", expanding=True)))
_WINDOWS = (
    select(RoomLock.lock_id, DoorWindow.start_at, DoorWindow.end_at, DoorWindow.reservation_id)
    .join(RoomLock, RoomLock.room_id == DoorWindow.room_id)
    .where(
        RoomLock.lock_id.in_(bindparam("ids", expanding=True)),
        DoorWindow.start_at <= bindparam("end", type_=DoorWindow.start_at.type),
        DoorWindow.end_at > bindparam("start", type_=DoorWindow.end_at.type),
    )
)
_UPDATE_LOCKS = (
    update(_LOCKS)
    .where(_L.id == bindparam("b_lock_id"))
    .values(
        bolt_state=bindparam("b_bolt_state"),
        battery_percentage=bindparam("b_battery_percentage"),
        battery_type=bindparam("b_battery_type"),
        online=bindparam("b_online"),
        ble_strength=bindparam("b_ble_strength"),
        wifi_strength=bindparam("b_wifi_strength"),
        last_event_at=bindparam("b_at"),
        last_event_key=bindparam("b_key"),
        state_updated_at=bindparam("b_at"),
    )
)


async def _load_locks(session: Executor, lock_ids: list[str]) -> dict[str, Any]:
    """The lock rows (state columns) of ``lock_ids``, one query; with ``has_commands`` (any
    in-flight command) and ``has_alerts`` (any open lock alert) so the batch skips the
    queries it does not need."""
    if not lock_ids:
        return {}
    params = {"ids": sorted(set(lock_ids))}
    return {row.id: row for row in (await session.execute(_LOCK_ROWS, params)).all()}


async def _in_flight(
    session: AsyncSession, lock_ids: list[Any], ctx: LoqedContext
) -> dict[str, list[lc.Command]]:
    """The in-flight commands of ``lock_ids`` (oldest first) in the lifecycle's view: one
    query for the commands, one for their attempts."""
    if not lock_ids:
        return {}
    stmt = (
        select(Command)
        .where(Command.lock_id.in_(sorted(set(lock_ids))), Command.state.in_(_IN_FLIGHT))
        .order_by(Command.created_at, Command.id)
        .execution_options(populate_existing=True)
    )
    rows = list((await session.execute(stmt)).scalars())
    if not rows:
        return {}
    attempts: dict[str, list[CommandAttempt]] = defaultdict(list)
    stmt_a = (
        select(CommandAttempt)
        .where(CommandAttempt.command_id.in_([row.id for row in rows]))
        .order_by(CommandAttempt.started_at, CommandAttempt.id)
    )
    for attempt in (await session.execute(stmt_a)).scalars():
        attempts[attempt.command_id].append(attempt)
    found: dict[str, list[lc.Command]] = defaultdict(list)
    key_ids: dict[str, dict[str, int | None]] = {}
    for row in rows:
        if row.lock_id not in key_ids:  # no I/O here: slots were read before the transaction
            key_ids[row.lock_id] = ctx.key_ids(row.lock_id)
        found[row.lock_id].append(to_domain(row, attempts[row.id], key_ids[row.lock_id]))
    return dict(found)


async def _door_windows(
    session: Executor, lock_ids: list[str], start: datetime, end: datetime
) -> dict[str, list[tuple[datetime, datetime, int]]]:
    """Door windows at the rooms of ``lock_ids`` overlapping ``[start, end]``, per lock."""
    if not lock_ids:
        return {}
    params = {"ids": sorted(set(lock_ids)), "start": start, "end": end}
    found: dict[str, list[tuple[datetime, datetime, int]]] = defaultdict(list)
    for lock_id, start_at, end_at, reservation_id in (
        await session.execute(_WINDOWS, params)
    ).all():
        found[lock_id].append((start_at, end_at, reservation_id))
    return dict(found)


def _reservation_at(windows: list[tuple[datetime, datetime, int]], at: datetime) -> int | None:
    """The reservation whose window contains ``at`` (latest start, then highest id, wins)."""
    best: tuple[datetime, int] | None = None
    for start_at, end_at, reservation_id in windows:
        if start_at <= at < end_at and (best is None or (start_at, reservation_id) > best):
            best = (start_at, reservation_id)
    return None if best is None else best[1]


def _lock_params(lock_id: str, snap: LockSnapshot, at: datetime, key: str) -> dict[str, Any]:
    return {
        "b_lock_id": lock_id,
        "b_bolt_state": snap.bolt_state.value if snap.bolt_state is not None else None,
        "b_battery_percentage": snap.battery_percentage,
        "b_battery_type": snap.battery_type,
        "b_online": snap.online,
        "b_ble_strength": snap.ble_strength,
        "b_wifi_strength": snap.wifi_strength,
        "b_at": at,
        "b_key": key,
    }


# --------------------------------------------------------------------------- wiring

_APPLIERS: dict[int, tuple[weakref.ref[LoqedContext], EventApplier]] = {}


def applier_for(ctx: LoqedContext) -> EventApplier:
    """The applier of ``ctx`` (one per LOQED context, so per service)."""
    found = _APPLIERS.get(id(ctx))
    if found is not None and found[0]() is ctx:
        return found[1]
    applier = EventApplier(ctx)
    key = id(ctx)
    _APPLIERS[key] = (weakref.ref(ctx, lambda _ref: _APPLIERS.pop(key, None)), applier)
    return applier


def create_worker(service: Service) -> Worker:
    """The supervisor worker that applies receipts left over (crash, failures) and prunes
    old ones; the receivers wake the applier directly (found through
    ``OPTIONAL_WORKER_MODULES``)."""
    from roomkey.service.runtime import Worker

    applier = applier_for(context_for(service))
    applier._on_failure = lambda: service.metrics.worker_failures.labels("loqed-events").inc()
    return Worker(name="loqed-events", step=applier.step, interval=30.0)
