"""The Lockme message worker: at-least-once in, exactly-once effect.

Each message id stored by the receiver goes through:

1. **claim** — a replica-safe row claim (``claim_owner``/``claim_until``), so two replicas never
   work on one message at once; a crashed worker's claim simply expires, and a worker renews
   the claims it still holds long before that;
2. **fetch** — ``GET /message/{id}`` with our token (skipped when the raw message is already
   stored: Lockme messages never change);
3. **apply** — to the reservation mirror, then **replan** the affected rooms (old and new room
   on a move), and store the raw message, all in **one transaction**, committed. When applying
   fails, the failure record keeps the raw message, so what Lockme said is on record anyway;
4. **mark read** — ``POST /message/{id}``, only after that commit. A failure here leaves the
   message ``failed`` with ``applied_at`` set: the retry only marks it read. The "acked" state
   of concurrent messages is committed in one transaction per batch (group commit).

The worker is a continuously fed pipeline: it holds up to ``window`` messages at once
(``max_in_flight``, default twice ``[lockme] max_concurrency``), claims more as they finish or
as the receiver wakes it, and never has more than ``max_concurrency`` Lockme requests in
flight. Messages apply independently, except that two messages about the same reservation
apply in claim (receipt) order when their ids cannot be compared — with Lockme's numeric ids
the mirror itself refuses a snapshot older than the one it holds, so no order is needed there.

Any failure keeps the message with ``attempts``, ``last_error`` and an exponential backoff
(``next_attempt_at``). After ``max_attempts`` the message stays ``failed`` with no next attempt
(visible, never dropped); reconciliation re-arms such messages and ``retry_message`` does it by
hand. ``test`` messages are just marked read. Redeliveries of a known id are no-ops at the
receiver; re-applying a snapshot changes nothing in the mirror.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from roomkey.lockme.errors import LockmeError
from roomkey.lockme.models import Message, Reservation
from roomkey.service.clock import utc_now
from roomkey.service.db.alerts import open_alert_if_new, resolve_alerts
from roomkey.service.db.claims import renew_claims
from roomkey.service.db.messages import (
    claim_messages,
    hold_claimed_messages,
    record_message_failed,
    record_messages_acked,
    record_messages_applied,
    requeue_message,
)
from roomkey.service.db.models import LockmeMessage, MessageState
from roomkey.service.group_commit import GroupCommit
from roomkey.service.logging import redact
from roomkey.service.mirror import (
    MirrorResult,
    SnapshotInput,
    apply_snapshot,
    apply_snapshots,
    mark_deleted,
)

if TYPE_CHECKING:
    from roomkey.service.runtime import Service

__all__ = [
    "ClaimedMessage",
    "MessageOutcome",
    "MessageSettings",
    "MessageWorker",
    "rearm_failed_messages",
    "record_delivery",
    "retry_message",
    "snapshot_input",
]

log = logging.getLogger(__name__)

_ERROR_MAX = 2000
_MIN_IDLE = 1.0
_APPLY_BATCH = 32
"""Most messages applied in one transaction."""
_REFILL_PARTS = 8
"""Claim again once an eighth of the window is free (fewer, larger claim transactions)."""


def _aware(moment: dt.datetime) -> dt.datetime:
    # SQLite aggregates bypass the column type and come back naive (UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class MessageSettings:
    """Tuning of the message worker (from ``[lockme]`` in the config)."""

    batch_size: int = 32
    """Most messages one claim statement takes."""
    max_attempts: int = 12
    backoff_initial: float = 15.0
    backoff_max: float = 3600.0
    claim_seconds: float = 120.0
    """How long a claim holds; a replica that dies mid-message releases it this way. The
    worker renews the claims of messages it still holds after half of it."""
    idle_interval: float = 60.0
    """Longest sleep between passes when nothing is due (the receiver wakes the worker)."""
    max_concurrency: int = 8
    """Most Lockme API requests in flight at once (``[lockme] max_concurrency``)."""
    max_in_flight: int | None = None
    """Most messages the worker holds at once (claimed and not finished: waiting for Lockme,
    applying, marking read); default twice ``max_concurrency``, so the Lockme slots stay busy
    while other messages apply."""

    @property
    def window(self) -> int:
        """Messages held at once (``max_in_flight`` or twice ``max_concurrency``)."""
        return self.max_in_flight if self.max_in_flight is not None else 2 * self.max_concurrency


@dataclass(frozen=True)
class MessageOutcome:
    """What one processing attempt did."""

    message_id: str
    state: MessageState
    action: str | None = None
    rooms: frozenset[int] = frozenset()
    error: str | None = None


# --------------------------------------------------------------------------- receiver side


async def record_delivery(service: Service, message_id: str) -> bool:
    """Durably store a delivered message id, committed before returning: group-committed
    with concurrent deliveries (``service.message_intake``, one multi-row ``INSERT … ON
    CONFLICT DO NOTHING`` per batch). True when the id was new, False for a redelivery."""
    return await service.message_intake.submit(message_id)


# --------------------------------------------------------------------------- by hand


async def retry_message(service: Service, message_id: str) -> bool:
    """Make a stored, not yet acknowledged message due now (CLI / dashboard)."""
    async with service.session_factory() as session, session.begin():
        found = await requeue_message(session, message_id, now=utc_now(service.clock))
    if found:
        service.wakes.messages.set()
    return found


async def rearm_failed_messages(session: AsyncSession, *, now: dt.datetime) -> int:
    """Give messages that ran out of attempts a fresh start (called by reconciliation)."""
    result = await session.execute(
        update(LockmeMessage)
        .where(
            LockmeMessage.state == MessageState.FAILED,
            LockmeMessage.next_attempt_at.is_(None),
        )
        .values(next_attempt_at=now, attempts=0)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


# --------------------------------------------------------------------------- the worker


class MessageWorker:
    """Processes due Lockme messages; :meth:`step` is one supervisor pass."""

    def __init__(self, service: Service, settings: MessageSettings | None = None) -> None:
        self.service = service
        self.settings = settings or MessageSettings()
        if self.settings.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if self.settings.window < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._lockme_slots = asyncio.Semaphore(self.settings.max_concurrency)
        # One apply transaction at a time, holding every message ready by then: fewer,
        # larger transactions (SQLite has one writer anyway) and one replan per batch.
        self._appliers: GroupCommit[_ApplyItem, _Applied] = GroupCommit(
            self._apply_batch, max_batch=_APPLY_BATCH, name="lockme-apply"
        )
        self._turns: dict[str, _Turn] = {}
        self._acks: GroupCommit[tuple[str, bool], bool] = GroupCommit(
            self._ack_batch, max_batch=max(self.settings.window, 1), name="lockme-acks"
        )

    @property
    def owner(self) -> str:
        return f"{self.service.instance_id}:messages"

    async def step(self) -> float | None:
        """One pass: process due messages, claiming more as held ones finish and as new ones
        arrive, until none is due and none is held. Returns 0 when more is due (the service
        is stopping), else the seconds until the next retry (or a claim held elsewhere) falls
        due; None: nothing scheduled."""
        managed = self.service.supervisor.running
        claimed = await self._pump(wake=self.service.wakes.messages, managed=managed)
        if managed and not self.service.supervisor.running:
            return 0.0
        delay = await self._seconds_until_next_due()
        if delay is not None and not claimed:
            delay = max(delay, _MIN_IDLE)  # never spin on rows another worker holds
        return delay

    async def run_until_idle(self, *, limit: int = 1000) -> list[MessageOutcome]:
        """Process everything due now, at most ``limit`` messages (tests, ``roomkey sync``);
        returns the outcomes."""
        outcomes: list[MessageOutcome] = []
        await self._pump(outcomes=outcomes, limit=limit)
        return outcomes

    # -- the pipeline ------------------------------------------------------------------
    async def _pump(
        self,
        *,
        wake: asyncio.Event | None = None,
        managed: bool = False,
        outcomes: list[MessageOutcome] | None = None,
        limit: int | None = None,
    ) -> int:
        """Keep up to ``window`` messages in flight until none is due and none is held.

        Claims again as soon as a few slots are free (or the pipeline is empty) and more may
        be due: the last claim was full, or ``wake`` was set since. With ``managed``, stops
        claiming once the supervisor stops and drains what it holds. Returns how many
        messages it claimed.
        """
        window = self.settings.window
        refill = max(1, window // _REFILL_PARTS)
        flights: dict[asyncio.Task[MessageOutcome], str] = {}
        claimed_total = 0
        due = True
        waker: asyncio.Future[Any] | None = None
        renewer: asyncio.Task[None] | None = None
        try:
            while True:
                stopping = managed and not self.service.supervisor.running
                free = window - len(flights)
                if limit is not None:
                    free = min(free, limit - claimed_total)
                if due and not stopping and free > 0 and (not flights or free >= refill):
                    if wake is not None:
                        wake.clear()
                    ask = min(free, self.settings.batch_size)
                    batch = await self._claim(ask)
                    claimed_total += len(batch)
                    due = len(batch) >= ask
                    for held in batch:
                        self._turns[held.message_id] = _Turn(held.message_id, held.raw)
                        flights[asyncio.create_task(self._fly(held))] = held.message_id
                if not flights:
                    return claimed_total
                if renewer is None:
                    renewer = asyncio.create_task(self._renew_claims(flights))
                waiters: set[asyncio.Future[Any]] = set(flights)
                if wake is not None and not due and not stopping:
                    if waker is None:
                        waker = asyncio.ensure_future(wake.wait())
                    waiters.add(waker)
                done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                if waker is not None and waker.done():
                    waker = None
                    due = True
                for finished in done:
                    if finished is waker or not isinstance(finished, asyncio.Task):
                        continue
                    task: asyncio.Task[MessageOutcome] = finished
                    message_id = flights.pop(task, None)
                    if message_id is None:
                        continue
                    if task.cancelled() or task.exception() is not None:
                        log.error(
                            "lockme message %s: processing ended abnormally",
                            message_id,
                            exc_info=None if task.cancelled() else task.exception(),
                        )
                        continue
                    if outcomes is not None:
                        outcomes.append(task.result())
        finally:
            for extra in (waker, renewer):
                if extra is not None:
                    extra.cancel()
            if flights:  # cancelled mid-way: the claims expire, nothing is lost
                for task in flights:
                    task.cancel()
                await asyncio.gather(*flights, return_exceptions=True)
            for extra in (waker, renewer):
                if extra is not None:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await extra

    async def _fly(self, held: ClaimedMessage) -> MessageOutcome:
        try:
            return await self.process(held.message_id, claimed=held)
        finally:
            turn = self._turns.pop(held.message_id, None)
            if turn is not None:
                turn.finish()

    async def _renew_claims(self, flights: dict[asyncio.Task[MessageOutcome], str]) -> None:
        """Every quarter lease, extend the claims on every message still held."""
        lease = self.settings.claim_seconds
        while True:
            await self.service.clock.sleep(lease / 4)
            held = sorted(flights.values())
            if not held:
                continue
            now = utc_now(self.service.clock)
            try:
                async with self.service.session_factory() as session, session.begin():
                    kept = await renew_claims(
                        session,
                        LockmeMessage,
                        held,
                        owner=self.owner,
                        until=now + dt.timedelta(seconds=lease),
                    )
            except Exception:
                log.warning(
                    "could not renew the claims on %d lockme message(s)", len(held), exc_info=True
                )
                continue
            if len(kept) < len(held):
                log.warning(
                    "lockme messages %s: claim lost to another worker",
                    " ".join(sorted(set(held) - kept)),
                )

    async def _wait_turn(self, turn: _Turn) -> None:
        """Wait until every older held message about the same reservation has applied.

        Only needed when the two ids cannot be compared: for Lockme's numeric ids the mirror
        refuses a snapshot older than the one it holds (``last_message_id``)."""
        if not turn.keys:
            return
        for other in list(self._turns.values()):
            if other is turn:
                return
            if turn.numeric and other.numeric:
                continue
            await other.known.wait()
            if other.keys & turn.keys:
                await other.applied.wait()

    # -- claiming ----------------------------------------------------------------------
    async def claim(self) -> list[str]:
        """Claim up to ``batch_size`` due messages for this worker (replica-safe)."""
        return [held.message_id for held in await self._claim(self.settings.batch_size)]

    async def _claim(self, limit: int) -> list[ClaimedMessage]:
        now = utc_now(self.service.clock)
        async with self.service.session_factory() as session, session.begin():
            rows = await claim_messages(
                session,
                owner=self.owner,
                now=now,
                limit=limit,
                lease=dt.timedelta(seconds=self.settings.claim_seconds),
            )
            return [ClaimedMessage.from_row(row) for row in rows]

    async def _seconds_until_next_due(self) -> float | None:
        now = utc_now(self.service.clock)
        open_rows = (
            LockmeMessage.state != MessageState.ACKED,
            LockmeMessage.next_attempt_at.is_not(None),
        )
        async with self.service.session_factory() as session:
            free = await session.scalar(
                select(func.min(LockmeMessage.next_attempt_at)).where(
                    *open_rows,
                    or_(LockmeMessage.claim_until.is_(None), LockmeMessage.claim_until < now),
                )
            )
            held = await session.scalar(
                select(func.min(LockmeMessage.claim_until)).where(
                    *open_rows, LockmeMessage.claim_until >= now
                )
            )
        moments = [_aware(m) for m in (free, held) if m is not None]
        if not moments:
            return None
        return max(0.0, (min(moments) - now).total_seconds())

    # -- processing --------------------------------------------------------------------
    async def process(
        self, message_id: str, *, claimed: ClaimedMessage | None = None
    ) -> MessageOutcome:
        """Take one message as far as it goes; failures are recorded, not raised.

        ``claimed`` is what the claim read (the pipeline passes it); without it the row is
        loaded first (a message claimed by :meth:`claim`)."""
        service = self.service
        turn = self._turns.get(message_id) if claimed is not None else None
        step = "load"
        unsaved_raw: dict[str, Any] | None = None
        try:
            held = claimed if claimed is not None else await self._load(message_id)
            if held is None:
                return MessageOutcome(message_id, MessageState.ACKED)
            action = held.action
            rooms: frozenset[int] = frozenset()
            if not held.applied:
                raw = held.raw
                if raw is None:
                    step = "fetch"
                    async with self._lockme_slots:
                        message = await service.lockme.get_message(message_id)
                    raw = unsaved_raw = message.model_dump(mode="json", exclude_none=True)
                    step = "apply"
                else:
                    step = "apply"
                    message = Message.model_validate(raw)
                action = _action_of(raw)
                if turn is not None:
                    turn.know(message)
                    await self._wait_turn(turn)
                rooms = await self._apply(message_id, message, raw=unsaved_raw)
                unsaved_raw = None  # stored with the apply
            if turn is not None:
                turn.finish()
            step = "mark_read"
            async with self._lockme_slots:
                await service.lockme.mark_message_read(message_id)
            await self._acked(message_id, resolve=held.may_have_alert)
        except Exception as exc:
            return await self._failed(message_id, step, exc, raw=unsaved_raw)
        finally:
            if turn is not None:
                turn.finish()
        service.metrics.messages_processed.labels(action or "unknown", "acked").inc()
        log.info("lockme message %s (%s) applied and marked read", message_id, action)
        return MessageOutcome(message_id, MessageState.ACKED, action, rooms)

    async def _load(self, message_id: str) -> ClaimedMessage | None:
        async with self.service.session_factory() as session:
            row = await session.get(LockmeMessage, message_id)
            if row is None or row.state == MessageState.ACKED:
                return None
            return ClaimedMessage.from_row(row)

    async def _apply(
        self, message_id: str, message: Message, *, raw: dict[str, Any] | None = None
    ) -> frozenset[int]:
        """Mirror + replan + state change (+ ``raw``, when just fetched), committed.

        Messages ready at the same time are applied together (:meth:`_apply_batch`), each
        only while this worker still holds its claim (:class:`ClaimLostError` otherwise)."""
        result = await self._appliers.submit(_ApplyItem(message_id, message, raw))
        if isinstance(result, Exception):
            raise result
        return result

    async def _apply_batch(self, items: Sequence[_ApplyItem]) -> list[_Applied]:
        """Apply ``items`` in one transaction with one replan of every room they touched.

        If that transaction fails (a message that cannot be applied, the replan, the
        commit), each message is applied again in a transaction of its own, so a failure
        stays with its message and the others still commit."""
        if len(items) > 1:
            try:
                return await self._apply_together(items)
            except Exception:
                log.warning(
                    "applying %d lockme messages together failed; applying them one by one",
                    len(items),
                    exc_info=True,
                )
        results: list[_Applied] = []
        for item in items:
            try:
                results.extend(await self._apply_together([item]))
            except Exception as exc:
                results.append(exc)
        return results

    async def _apply_together(self, items: Sequence[_ApplyItem]) -> list[_Applied]:
        """One transaction: claim check (held rows stay ours until commit), mirror, replan,
        state change. A message whose claim is gone is left out (:class:`ClaimLostError`)."""
        service = self.service
        results: list[_Applied] = []
        touched: set[int] = set()
        now = utc_now(service.clock)
        async with service.session_factory() as session, session.begin():
            held = await hold_claimed_messages(
                session, [item.message_id for item in items], owner=self.owner
            )
            snapshots: list[tuple[int, SnapshotInput]] = []  # add/edit: mirrored in bulk

            async def mirror_snapshots() -> None:
                if not snapshots:
                    return
                mirrored = await apply_snapshots(session, [s for _, s in snapshots], now=now)
                for (index, _), result in zip(snapshots, mirrored, strict=True):
                    results[index] = result.rooms
                    touched.update(result.rooms)
                snapshots.clear()

            for item in items:
                if item.message_id not in held:
                    results.append(ClaimLostError(item.message_id))
                    continue
                snapshot = snapshot_input(item.message, message_id=item.message_id)
                if snapshot is not None:
                    snapshots.append((len(results), snapshot))
                    results.append(frozenset())
                    continue
                await mirror_snapshots()  # in order: a delete after the edits before it
                result = await apply_message(
                    session, item.message, message_id=item.message_id, now=now
                )
                rooms = result.rooms if result is not None else frozenset()
                touched |= rooms
                results.append(rooms)
            await mirror_snapshots()
            changes = await service.replan_rooms(session, touched, now=now) if touched else None
            await record_messages_applied(
                session,
                [(item.message_id, item.raw) for item in items if item.message_id in held],
                now=now,
            )
        if changes is not None and changes.changed:
            service.wakes.executor.set()
        return results

    async def _acked(self, message_id: str, *, resolve: bool = True) -> None:
        """Record the message read at Lockme (group-committed with concurrent ones);
        ``resolve`` also closes its "still fails" alert."""
        await self._acks.submit((message_id, resolve))

    async def _ack_batch(self, items: Sequence[tuple[str, bool]]) -> list[bool]:
        now = utc_now(self.service.clock)
        async with self.service.session_factory() as session, session.begin():
            marked = await record_messages_acked(
                session, [message_id for message_id, _ in items], owner=self.owner, now=now
            )
            for message_id, resolve in items:
                if resolve:
                    await resolve_alerts(session, _alert_key(message_id), by=self.owner, now=now)
        return [message_id in marked for message_id, _ in items]

    async def _failed(
        self,
        message_id: str,
        step: str,
        exc: Exception,
        *,
        raw: dict[str, Any] | None = None,
    ) -> MessageOutcome:
        settings = self.settings
        error = redact(f"{step}: {type(exc).__name__}: {exc}")[:_ERROR_MAX]
        if isinstance(exc, ClaimLostError):
            log.warning(
                "lockme message %s: claim lost at %s; another worker has it", message_id, step
            )
            return MessageOutcome(message_id, MessageState.PROCESSING, None, frozenset(), error)
        now = utc_now(self.service.clock)
        try:
            async with self.service.session_factory() as session, session.begin():
                row = await session.get(LockmeMessage, message_id)
                if row is None:
                    raise LookupError(message_id)
                attempts = row.attempts  # bumped when claimed
                action = _action_of(raw) if raw is not None else row.action
                gave_up = attempts >= settings.max_attempts
                delay = min(settings.backoff_max, settings.backoff_initial * 2 ** (attempts - 1))
                retry_at = None if gave_up else now + dt.timedelta(seconds=delay)
                await record_message_failed(
                    session,
                    message_id,
                    owner=self.owner,
                    error=error,
                    retry_at=retry_at,
                    raw=raw,
                    now=now,
                )
                if gave_up:
                    await open_alert_if_new(
                        session,
                        kind="lockme_message_failed",
                        dedupe_key=_alert_key(message_id),
                        message=f"Lockme message {message_id} still fails after "
                        f"{attempts} attempts: {error}",
                        now=now,
                        room_id=row.room_id,
                        details={"message_id": message_id, "step": step},
                    )
        except Exception:
            log.exception("could not record the failure of lockme message %s", message_id)
            return MessageOutcome(message_id, MessageState.FAILED, None, frozenset(), error)
        self.service.metrics.messages_processed.labels(action or "unknown", "failed").inc()
        log.log(
            logging.ERROR if gave_up else logging.WARNING,
            "lockme message %s failed at %s (attempt %d%s): %s",
            message_id,
            step,
            attempts,
            ", no more automatic retries until reconciliation"
            if gave_up
            else f", retry in {delay:.0f}s",
            error,
            exc_info=not isinstance(exc, LockmeError),
        )
        return MessageOutcome(message_id, MessageState.FAILED, action, frozenset(), error)


@dataclass(frozen=True)
class _ApplyItem:
    message_id: str
    message: Message
    raw: dict[str, Any] | None
    """The raw message to store with the apply (just fetched), or None (stored already)."""


_Applied = frozenset[int] | Exception
"""The rooms one message touched, or why it could not be applied."""


@dataclass(frozen=True)
class ClaimedMessage:
    """What the worker knows of a message it holds (read together with the claim)."""

    message_id: str
    raw: dict[str, Any] | None
    """The message as fetched earlier (None: not fetched yet)."""
    applied: bool
    """Its effect is committed; only the mark-read is left."""
    action: str | None
    may_have_alert: bool
    """An earlier attempt failed, so a "still fails" alert may be open."""

    @classmethod
    def from_row(cls, row: LockmeMessage) -> ClaimedMessage:
        return cls(
            message_id=row.message_id,
            raw=row.raw,
            applied=row.applied_at is not None,
            action=row.action,
            may_have_alert=(
                row.state == MessageState.FAILED or row.attempts > 1 or row.last_error is not None
            ),
        )


class _Turn:
    """A held message's place in the apply order (claim order, see ``_wait_turn``)."""

    __slots__ = ("applied", "keys", "known", "numeric")

    def __init__(self, message_id: str, raw: dict[str, Any] | None) -> None:
        self.numeric = message_id.isdecimal()
        self.keys: frozenset[int] = frozenset()
        self.known = asyncio.Event()
        """Set once ``keys`` are known (fetched) or the message is done."""
        self.applied = asyncio.Event()
        """Set once its apply step is over (committed, failed or skipped)."""

    def know(self, message: Message) -> None:
        reservation_id = (
            _reservation_id(message)
            if message.action.strip().lower() in ("add", "edit", "delete")
            else None
        )
        self.keys = frozenset() if reservation_id is None else frozenset({reservation_id})
        self.known.set()

    def finish(self) -> None:
        self.known.set()
        self.applied.set()


def _action_of(raw: dict[str, Any]) -> str | None:
    action = raw.get("action")
    return str(action)[:16] if action is not None else None


def _alert_key(message_id: str) -> str:
    return f"lockme_message_failed:{message_id}"


class ClaimLostError(RuntimeError):
    """Our claim on a message expired and another worker took it over."""


# --------------------------------------------------------------------------- applying


def _reservation_id(message: Message) -> int | None:
    candidates: list[Any] = [message.reservationid]
    if message.data is not None:
        candidates += [message.data.reservationid, (message.data.model_extra or {}).get("id")]
    for value in candidates:
        if value is None:
            continue
        text = str(value).strip()
        if text.isdigit():
            return int(text)
    return None


class UnusableMessageError(ValueError):
    """A message that names no reservation or room (kept as failed, visible)."""


def _message_target(message: Message) -> tuple[int, int | None, Reservation | None]:
    """The reservation id, room id (from the message, else its data) and data a message
    names; :class:`UnusableMessageError` without a numeric reservation id."""
    reservation_id = _reservation_id(message)
    if reservation_id is None:
        raise UnusableMessageError("the message names no numeric reservation id")
    snapshot: Reservation | None = message.data
    room_id = message.roomid
    if room_id is None and snapshot is not None:
        room_id = snapshot.roomid
    return reservation_id, room_id, snapshot


def snapshot_input(message: Message, *, message_id: str | None) -> SnapshotInput | None:
    """What an ``add``/``edit`` message asks the mirror to store (None for other actions);
    :class:`UnusableMessageError` when it names no reservation or room."""
    action = message.action.strip().lower()
    if action not in ("add", "edit"):
        return None
    reservation_id, room_id, snapshot = _message_target(message)
    if snapshot is None or room_id is None:
        raise UnusableMessageError(f"{action} message without reservation data or room id")
    return SnapshotInput(reservation_id, room_id, snapshot, message_id)


async def apply_message(
    session: AsyncSession, message: Message, *, message_id: str | None, now: dt.datetime
) -> MirrorResult | None:
    """Apply one Lockme message to the mirror; None for ``test`` and unknown actions."""
    action = message.action.strip().lower()
    if action == "test":
        return None
    if action not in ("add", "edit", "delete"):
        log.warning("lockme message %s has unknown action %r; ignored", message_id, action)
        return None
    if action != "delete":
        item = snapshot_input(message, message_id=message_id)
        assert item is not None
        return await apply_snapshot(
            session,
            item.reservation_id,
            item.room_id,
            item.snapshot,
            now=now,
            message_id=message_id,
        )
    reservation_id, room_id, snapshot = _message_target(message)
    return await mark_deleted(
        session,
        reservation_id,
        now=now,
        message_id=message_id,
        room_id=room_id,
        snapshot=snapshot,
    )
