"""The Lockme message worker: at-least-once in, exactly-once effect.

Each message id stored by the receiver goes through:

1. **claim** — a replica-safe row claim (``claim_owner``/``claim_until``), so two replicas never
   work on one message at once; a crashed worker's claim simply expires;
2. **fetch** — ``GET /message/{id}`` with our token (skipped when the raw message is already
   stored: Lockme messages never change);
3. **store raw** — committed on its own, so what Lockme said is on record even if applying fails;
4. **apply** — to the reservation mirror, then **replan** the affected rooms (old and new room
   on a move), all in **one transaction**, committed;
5. **mark read** — ``POST /message/{id}``, only after that commit. A failure here leaves the
   message ``failed`` with ``applied_at`` set: the retry only marks it read.

Any failure keeps the message with ``attempts``, ``last_error`` and an exponential backoff
(``next_attempt_at``). After ``max_attempts`` the message stays ``failed`` with no next attempt
(visible, never dropped); reconciliation re-arms such messages and ``retry_message`` does it by
hand. ``test`` messages are just marked read. Redeliveries of a known id are no-ops at the
receiver; re-applying a snapshot changes nothing in the mirror.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from roomkey.lockme.errors import LockmeError
from roomkey.lockme.models import Message, Reservation
from roomkey.service.clock import utc_now
from roomkey.service.db.alerts import open_alert_if_new, resolve_alerts
from roomkey.service.db.messages import (
    claim_messages,
    insert_message_if_new,
    record_message_acked,
    record_message_applied,
    record_message_failed,
    record_message_fetched,
    requeue_message,
)
from roomkey.service.db.models import LockmeMessage, MessageState
from roomkey.service.logging import redact
from roomkey.service.mirror import MirrorResult, apply_snapshot, mark_deleted

if TYPE_CHECKING:
    from roomkey.service.runtime import Service

__all__ = [
    "MessageOutcome",
    "MessageSettings",
    "MessageWorker",
    "rearm_failed_messages",
    "record_delivery",
    "retry_message",
]

log = logging.getLogger(__name__)

_ERROR_MAX = 2000
_MIN_IDLE = 1.0


def _aware(moment: dt.datetime) -> dt.datetime:
    # SQLite aggregates bypass the column type and come back naive (UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class MessageSettings:
    """Tuning of the message worker (from ``[lockme]`` in the config)."""

    batch_size: int = 20
    max_attempts: int = 12
    backoff_initial: float = 15.0
    backoff_max: float = 3600.0
    claim_seconds: float = 120.0
    """How long a claim holds; a replica that dies mid-message releases it this way."""
    idle_interval: float = 60.0
    """Longest sleep between passes when nothing is due (the receiver wakes the worker)."""
    max_concurrency: int = 8
    """Most Lockme API requests in flight at once (``[lockme] max_concurrency``)."""


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
    """Durably store a delivered message id (one ``INSERT … ON CONFLICT DO NOTHING``,
    committed before returning). True when the id was new, False for a redelivery."""
    async with service.session_factory() as session, session.begin():
        return await insert_message_if_new(session, message_id, utc_now(service.clock))


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
        self._lockme_slots = asyncio.Semaphore(self.settings.max_concurrency)

    @property
    def owner(self) -> str:
        return f"{self.service.instance_id}:messages"

    async def step(self) -> float | None:
        """Claim and process one batch. Returns 0 when more is due, else the seconds until
        the next retry (or a claim held elsewhere) falls due; None: nothing scheduled."""
        claimed = await self.claim()
        await self.process_batch(claimed)
        if len(claimed) >= self.settings.batch_size:
            return 0.0
        delay = await self._seconds_until_next_due()
        if delay is not None and not claimed:
            delay = max(delay, _MIN_IDLE)  # never spin on rows another worker holds
        return delay

    async def run_until_idle(self, *, limit: int = 1000) -> list[MessageOutcome]:
        """Process everything due now (tests, ``roomkey sync``); returns the outcomes."""
        outcomes: list[MessageOutcome] = []
        for _ in range(limit):
            claimed = await self.claim()
            if not claimed:
                break
            outcomes.extend(await self.process_batch(claimed))
        return outcomes

    async def process_batch(self, message_ids: list[str]) -> list[MessageOutcome]:
        """Process claimed messages concurrently, in claim order where it matters.

        Lockme requests (fetch, mark read) overlap, at most ``max_concurrency`` in flight;
        the apply steps (mirror + replan transactions) run one after another in claim order,
        so an older snapshot of a reservation is never applied after a newer one.
        """
        if len(message_ids) <= 1:
            return [await self.process(message_id) for message_id in message_ids]
        turns = [asyncio.Event() for _ in message_ids]
        return list(
            await asyncio.gather(
                *(
                    self.process(message_id, after=turns[i - 1] if i else None, done=turns[i])
                    for i, message_id in enumerate(message_ids)
                )
            )
        )

    # -- claiming ----------------------------------------------------------------------
    async def claim(self) -> list[str]:
        """Claim up to ``batch_size`` due messages for this worker (replica-safe)."""
        now = utc_now(self.service.clock)
        async with self.service.session_factory() as session, session.begin():
            rows = await claim_messages(
                session,
                owner=self.owner,
                now=now,
                limit=self.settings.batch_size,
                lease=dt.timedelta(seconds=self.settings.claim_seconds),
            )
        return [row.message_id for row in rows]

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
        self,
        message_id: str,
        *,
        after: asyncio.Event | None = None,
        done: asyncio.Event | None = None,
    ) -> MessageOutcome:
        """Take one claimed message as far as it goes; failures are recorded, not raised.

        ``after``/``done`` order the apply step within a batch: wait for ``after`` before
        applying, set ``done`` once this message no longer needs its turn.
        """
        service = self.service
        step = "load"
        try:
            row = await self._load(message_id)
            if row is None:
                return MessageOutcome(message_id, MessageState.ACKED)
            if row.applied_at is None:
                raw = row.raw
                if raw is None:
                    step = "fetch"
                    async with self._lockme_slots:
                        fetched = await service.lockme.get_message(message_id)
                    raw = fetched.model_dump(mode="json", exclude_none=True)
                    step = "store"
                    await self._store_raw(message_id, raw)
                step = "apply"
                if after is not None:
                    await after.wait()
                outcome_rooms = await self._apply(message_id, raw)
            else:
                outcome_rooms = frozenset()
            if done is not None:
                done.set()
            step = "mark_read"
            async with self._lockme_slots:
                await service.lockme.mark_message_read(message_id)
            action = await self._acked(message_id)
        except Exception as exc:
            return await self._failed(message_id, step, exc)
        finally:
            if done is not None:
                done.set()
        service.metrics.messages_processed.labels(action or "unknown", "acked").inc()
        log.info("lockme message %s (%s) applied and marked read", message_id, action)
        return MessageOutcome(message_id, MessageState.ACKED, action, outcome_rooms)

    async def _load(self, message_id: str) -> LockmeMessage | None:
        async with self.service.session_factory() as session:
            row = await session.get(LockmeMessage, message_id)
        if row is None or row.state == MessageState.ACKED:
            return None
        return row

    async def _store_raw(self, message_id: str, raw: dict[str, Any]) -> None:
        now = utc_now(self.service.clock)
        async with self.service.session_factory() as session, session.begin():
            if not await record_message_fetched(
                session, message_id, owner=self.owner, raw=raw, now=now
            ):
                raise ClaimLostError(message_id)

    async def _apply(self, message_id: str, raw: dict[str, Any]) -> frozenset[int]:
        """Mirror + replan + state change in one transaction."""
        service = self.service
        message = Message.model_validate(raw)
        now = utc_now(service.clock)
        async with service.session_factory() as session, session.begin():
            row = await session.get(LockmeMessage, message_id, with_for_update=True)
            if row is None or row.claim_owner != self.owner:
                raise ClaimLostError(message_id)
            result = await apply_message(session, message, message_id=message_id, now=now)
            rooms = result.rooms if result is not None else frozenset()
            changes = await service.replan_rooms(session, rooms, now=now) if rooms else None
            await record_message_applied(session, message_id, owner=self.owner, now=now)
        if changes is not None and changes.changed:
            service.wakes.executor.set()
        return rooms

    async def _acked(self, message_id: str) -> str | None:
        now = utc_now(self.service.clock)
        async with self.service.session_factory() as session, session.begin():
            await record_message_acked(session, message_id, owner=self.owner, now=now)
            await resolve_alerts(session, _alert_key(message_id), by=self.owner, now=now)
            row = await session.get(LockmeMessage, message_id)
            return row.action if row is not None else None

    async def _failed(self, message_id: str, step: str, exc: Exception) -> MessageOutcome:
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
                action = row.action
                gave_up = attempts >= settings.max_attempts
                delay = min(settings.backoff_max, settings.backoff_initial * 2 ** (attempts - 1))
                retry_at = None if gave_up else now + dt.timedelta(seconds=delay)
                await record_message_failed(
                    session, message_id, owner=self.owner, error=error, retry_at=retry_at
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
    reservation_id = _reservation_id(message)
    if reservation_id is None:
        raise UnusableMessageError("the message names no numeric reservation id")
    snapshot: Reservation | None = message.data
    room_id = message.roomid
    if room_id is None and snapshot is not None:
        room_id = snapshot.roomid
    if action == "delete":
        return await mark_deleted(
            session,
            reservation_id,
            now=now,
            message_id=message_id,
            room_id=room_id,
            snapshot=snapshot,
        )
    if snapshot is None or room_id is None:
        raise UnusableMessageError(f"{action} message without reservation data or room id")
    return await apply_snapshot(
        session, reservation_id, room_id, snapshot, now=now, message_id=message_id
    )
