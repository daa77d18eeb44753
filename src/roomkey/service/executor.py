"""The executor: due door actions become commands, commands are sent and watched.

One pass (:meth:`Executor.step`) does three things, in short transactions that never stay
open across a network call:

1. **Fire due door actions and start due commands — one transaction.** It claims
   ``planned`` actions whose time has come (row claims, so replicas never both take one),
   reading the clock once it holds its write turn so whatever fell due while it waited is
   included. An action later than its room's ``max_lateness`` (e.g. after downtime) is
   *skipped* with an alert and an audit entry; any other becomes a command: one pending
   command per lock, the latest wins, equal commands coalesce, and a command that may
   already be on the wire is never superseded (the new one queues behind it) — the rules
   of :func:`roomkey.service.commands.supersede`. In the same transaction due ``pending``
   commands (the new ones included) are claimed, and each one whose lock is free is moved
   to ``sending`` with its first attempt row: all of it is **committed before** any
   request goes out, so a crash can never lead to a blind resend. The statements are
   batched (one query for the rooms, one for the locks' active commands, one flush for
   the rows), so N actions falling due together cost about what one does.
2. **Send.** After the commit every ready command is sent in its own task, so the locks
   are reached concurrently. Transports are tried in the configured order, but the next
   one only after the previous attempt certainly never left; every attempt is signed
   afresh by the SDK. The pass stays with the sends in progress only until the next
   moment of interest (or a wake-up), so a slow lock never holds back another lock's
   next action.
3. **Watch deadlines.** Commands past their deadline end ``expired`` with a reason
   (``no_confirmation``, ``no_response``, ``offline``, ``unreachable``) and an alert.

Between passes the worker sleeps until the next moment of interest, counted from the
clock after the query that found it.

Lock events (``hooks_loqed``) move sent commands to ``accepted``/``confirmed`` and wake the
executor when a command ends, so a queued command follows at once.

Entry points: :class:`LoqedContext` (what the LOQED side needs from the service),
:class:`Executor` (``step()`` for the service's supervisor, ``run_once()`` for tests and the
CLI), :func:`executor_worker` and :func:`run_executor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from roomkey.loqed import BoltState, LockStatus, LoqedError, StatusBudget, parse_bolt_state
from roomkey.service import commands as lc
from roomkey.service.alerts import DEFAULT_LOW_BATTERY, AlertKind, raise_alert, resolve_alert
from roomkey.service.clock import Clock, utc_now
from roomkey.service.config import Config, LockConfig
from roomkey.service.db._sql import serialize_scope, serialize_scopes
from roomkey.service.db.audit import write_audit
from roomkey.service.db.claims import claim_rows
from roomkey.service.db.commands import (
    ACTIVE_COMMAND_STATES,
    begin_attempt,
    claim_due_commands,
    commands_past_deadline,
    finish_attempt,
    get_command,
    list_attempts,
    supersede_pending_commands,
    transition_command,
)
from roomkey.service.db.kv import kv_get, kv_set
from roomkey.service.db.models import (
    Command,
    CommandAction,
    CommandAttempt,
    CommandOrigin,
    CommandReason,
    CommandState,
    DoorAction,
    DoorActionKind,
    DoorActionStatus,
    Lock,
    Room,
)
from roomkey.service.db.plans import claim_due_door_actions
from roomkey.service.logging import register_secret
from roomkey.service.policy import DoorPolicy
from roomkey.service.replan import stored_command
from roomkey.service.runtime import Service, Worker
from roomkey.service.transports import (
    BridgeTransport,
    CloudTransport,
    LockTransport,
    build_transports,
    send_one,
    transport_order,
)

__all__ = [
    "ACTOR",
    "EnqueueResult",
    "Executor",
    "LoqedContext",
    "context_for",
    "create_worker",
    "enqueue_command",
    "executor_worker",
    "run_executor",
    "to_domain",
]

log = logging.getLogger(__name__)

ACTOR = "roomkey"
"""Audit actor of what the executor does by itself."""
CLOUD_KEY_KV = "loqed.cloud_key_local_id."
CLOUD_KEY_RETRY = 6 * 3600.0
"""Seconds before a failed read of the cloud key slot is tried again (LOQED allows ~12
status reads per 12 h)."""


# --------------------------------------------------------------------------- context


@dataclass
class LoqedContext:
    """Everything the LOQED side (executor, hooks, manual actions) needs from the service.

    ``http_client`` is shared by every SDK client (tests pass one bound to the simulator's
    ASGI app); ``wake`` is the executor's wake-up event.
    """

    config: Config
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    owner: str
    http_client: httpx.AsyncClient | None = None
    wake: asyncio.Event | None = None
    low_battery_percent: int = DEFAULT_LOW_BATTERY
    transport_timeout: float = 10.0
    _transports: dict[str, list[LockTransport]] = field(default_factory=dict, repr=False)
    _cloud_key_tried: dict[str, float] = field(default_factory=dict, repr=False)
    _budget: StatusBudget | None = field(default=None, repr=False)
    _own_http: httpx.AsyncClient | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Belt and braces: the SDK never logs credentials, but if anything ever renders one,
        # the service's log redaction cuts it out.
        for lock in self.config.locks:
            for part in (lock.bridge, lock.cloud, lock.app):
                if part is None:
                    continue
                for _name, value in part:
                    if isinstance(value, SecretStr):
                        register_secret(value.get_secret_value())

    def now(self) -> datetime:
        return utc_now(self.clock)

    def poke(self) -> None:
        """Wake the executor (a plan changed, a command ended, a manual command arrived)."""
        if self.wake is not None:
            self.wake.set()

    @property
    def deadlines(self) -> lc.DeadlinePolicy:
        loqed = self.config.loqed
        return lc.DeadlinePolicy(
            lock_unlock=timedelta(seconds=loqed.command_deadline_seconds),
            open=timedelta(seconds=loqed.open_deadline_seconds),
            setting=timedelta(seconds=loqed.command_deadline_seconds),
        )

    def lock_config(self, lock_id: str) -> LockConfig | None:
        try:
            return self.config.lock(lock_id)
        except KeyError:
            return None

    @property
    def status_budget(self) -> StatusBudget | None:
        """The persisted cloud status-read budget (``[loqed] status_budget_file``)."""
        if self._budget is None and self.config.loqed.status_budget_file is not None:
            self._budget = StatusBudget(self.config.loqed.status_budget_file, clock=self.clock.time)
        return self._budget

    def shared_http(self) -> httpx.AsyncClient:
        """The one HTTP client every lock's SDK clients share: ``http_client`` when given,
        else one created on first use (one connection pool and one TLS context for all
        locks instead of one per SDK client; timeouts and base URLs stay per client, as
        the SDK sets them on every request)."""
        if self.http_client is not None:
            return self.http_client
        if self._own_http is None:
            self._own_http = httpx.AsyncClient()
        return self._own_http

    def cached_transports(self, lock_id: str) -> list[LockTransport]:
        """The lock's transports in the configured order (built once, without network)."""
        found = self._transports.get(lock_id)
        if found is None:
            cfg = self.lock_config(lock_id)
            found = (
                []
                if cfg is None
                else build_transports(
                    cfg,
                    order=self.config.loqed.transport_order,
                    http_client=self.shared_http(),
                    clock=self.clock,
                    timeout=self.transport_timeout,
                    status_budget=self.status_budget,
                )
            )
            self._transports[lock_id] = found
        return found

    def ready_transports(self, lock_id: str) -> list[LockTransport] | None:
        """The lock's transports when sending through them needs no I/O first, else None
        (a cloud transport whose key slot is unknown and due to be looked up)."""
        transports = self.cached_transports(lock_id)
        for transport in transports:
            if isinstance(transport, CloudTransport) and transport.key_local_id is None:
                last = self._cloud_key_tried.get(lock_id)
                if last is None or self.clock.time() - last >= CLOUD_KEY_RETRY:
                    return None
        return transports

    async def transports(self, lock_id: str, *, learn: bool = False) -> list[LockTransport]:
        """The lock's transports; with ``learn``, first find the cloud token's key slot.

        Cloud commands show up in lock events under the token's own key slot, which the
        config does not name. It is read from ``GET /api/locks/`` (one read serves every
        lock of that token, through the status budget) and kept in the database (``kv``),
        so the rate-limited read happens once, not per start; a failed read is retried
        after :data:`CLOUD_KEY_RETRY` seconds.
        """
        transports = self.cached_transports(lock_id)
        for i, transport in enumerate(transports):
            if isinstance(transport, CloudTransport) and transport.key_local_id is None:
                key_id = await self._cloud_key(lock_id, transport, learn=learn)
                if key_id is not None:
                    transports[i] = transport.with_key(key_id)
        return transports

    async def _cloud_key(
        self, lock_id: str, transport: CloudTransport, *, learn: bool
    ) -> int | None:
        async with self.sessions() as session:
            stored = await kv_get(session, CLOUD_KEY_KV + lock_id)
        if isinstance(stored, int):
            return stored
        last = self._cloud_key_tried.get(lock_id)
        if not learn or (last is not None and self.clock.time() - last < CLOUD_KEY_RETRY):
            return None
        self._cloud_key_tried[lock_id] = self.clock.time()
        try:
            cloud_locks = await transport.client.list_locks()
        except LoqedError as exc:
            log.warning("lock %s: cannot read the cloud key slot (%s)", lock_id, type(exc).__name__)
            return None
        slots = {c.id: c.local_id for c in cloud_locks if c.local_id is not None}
        async with self.sessions() as session, session.begin():
            for lock in self.config.locks:
                if lock.cloud is not None and lock.cloud.lock_id in slots:
                    await kv_set(
                        session, CLOUD_KEY_KV + lock.id, slots[lock.cloud.lock_id], now=self.now()
                    )
        return slots.get(transport.lock_id)

    async def read_status(self, lock_id: str) -> LockStatus | None:
        """The bridge's ``/status`` of a lock (local and free of LOQED's read budget), or None
        when the lock has no bridge or it does not answer. A hint only: events are truth."""
        for transport in self.cached_transports(lock_id):
            if isinstance(transport, BridgeTransport):
                try:
                    return await transport.client.status()
                except LoqedError as exc:
                    log.info("lock %s: bridge status unavailable (%s)", lock_id, type(exc).__name__)
        return None

    async def seed_lock_state(self, lock_id: str) -> BoltState | None:
        """Fill in an unknown bolt state from the bridge's status (never over event data)."""
        async with self.sessions() as session:
            lock = await session.get(Lock, lock_id)
            if lock is None or lock.bolt_state is not None:
                return parse_bolt_state(lock.bolt_state) if lock is not None else None
        status = await self.read_status(lock_id)
        if status is None:
            return None
        pct = status.battery_percentage
        battery = pct if pct is not None and 0 <= pct <= 100 else None
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(Lock)
                .where(Lock.id == lock_id, Lock.bolt_state.is_(None))
                .values(
                    bolt_state=status.bolt_state.value,
                    online=func.coalesce(Lock.online, status.lock_online),
                    battery_percentage=func.coalesce(Lock.battery_percentage, battery),
                    state_updated_at=self.now(),
                )
                .execution_options(synchronize_session=False)
            )
        return status.bolt_state

    def key_ids(self, lock_id: str) -> dict[str, int | None]:
        """Key slot per transport name (what lock events name for our commands)."""
        return {t.kind.value: t.key_local_id for t in self.cached_transports(lock_id)}


# --------------------------------------------------------------------------- conversions


def to_domain(
    row: Command, attempts: Sequence[CommandAttempt], key_ids: dict[str, int | None]
) -> lc.Command:
    """The lifecycle's view of a stored command."""
    results = {r.value for r in lc.SendResult}
    domain_attempts = tuple(
        lc.Attempt(
            number=i + 1,
            transport=lc.Transport(a.transport),
            started_at=a.started_at,
            key_local_id=key_ids.get(a.transport),
            result=lc.SendResult(a.outcome) if a.outcome in results else None,
        )
        for i, a in enumerate(attempts)
    )
    return lc.Command(
        id=row.id,
        lock_id=row.lock_id,
        command=lc.DoorCommand(row.action.value),
        created_at=row.created_at,
        deadline=row.deadline,
        state=lc.CommandState(row.state.value),
        reason=lc.FailureReason(row.reason.value) if row.reason is not None else None,
        attempts=domain_attempts,
        superseded_by=row.superseded_by,
        action_key=row.door_action_key,
    )


async def persist_transition(
    session: AsyncSession,
    before: lc.Command,
    after: lc.Command,
    *,
    now: datetime,
    owner: str | None = None,
    detail: str | None = None,
    transport: str | None = None,
) -> bool:
    """Store ``before → after`` as a compare-and-set on the state; False if it lost a race."""
    if after.state is before.state:
        return False
    return await transition_command(
        session,
        after.id,
        to=CommandState(after.state.value),
        now=now,
        from_states={CommandState(before.state.value)},
        owner=owner,
        reason=CommandReason(after.reason.value) if after.reason is not None else None,
        detail=detail,
        transport=transport,
    )


async def command_ended(
    session: AsyncSession, command: lc.Command, *, now: datetime, detail: str = ""
) -> None:
    """Side effects of a command reaching a terminal state: alerts and its door action."""
    lock_id = command.lock_id
    if command.state is lc.CommandState.CONFIRMED:
        await resolve_alert(session, AlertKind.COMMAND_FAILED, subject=lock_id, now=now)
        await resolve_alert(session, AlertKind.COMMAND_UNCONFIRMED, subject=lock_id, now=now)
        return
    if command.state is lc.CommandState.SUPERSEDED or command.reason is None:
        return
    unconfirmed = command.reason in (
        lc.FailureReason.NO_CONFIRMATION,
        lc.FailureReason.NO_RESPONSE,
    )
    kind = AlertKind.COMMAND_UNCONFIRMED if unconfirmed else AlertKind.COMMAND_FAILED
    what = command.command.value
    message = f"{what} {command.state.value}: {command.reason.value}"
    if detail:
        message += f" ({detail})"
    await raise_alert(
        session,
        kind,
        subject=lock_id,
        message=message,
        now=now,
        lock_id=lock_id,
        details={
            "command_id": command.id,
            "command": what,
            "reason": command.reason.value,
            "door_action": command.action_key,
        },
    )
    if command.action_key is not None:
        await session.execute(
            update(DoorAction)
            .where(
                DoorAction.key == command.action_key,
                DoorAction.status == DoorActionStatus.DONE,
                DoorAction.command_id == command.id,
            )
            .values(
                status=DoorActionStatus.FAILED,
                reason=f"command {command.state.value}: {command.reason.value}",
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )


# --------------------------------------------------------------------------- enqueueing


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """What :func:`enqueue_command` did: the command that will do the job, and how."""

    command_id: str
    decision: lc.SupersedeDecision
    superseded: tuple[str, ...] = ()
    blocked_by_slot: bool = False
    """True when a pending command of the other slot (bolt vs open-house) occupies the
    lock's one pending place; nothing was created, try again once it has been sent."""


async def _active_commands(session: AsyncSession, lock_id: str) -> list[Command]:
    return (await _active_commands_of(session, [lock_id])).get(lock_id, [])


async def _active_commands_of(
    session: AsyncSession, lock_ids: Collection[str]
) -> dict[str, list[Command]]:
    """The non-terminal commands of these locks (one query), newest first per lock."""
    found: dict[str, list[Command]] = {lock_id: [] for lock_id in lock_ids}
    if not found:
        return found
    stmt = (
        select(Command)
        .where(Command.lock_id.in_(list(found)), Command.state.in_(list(ACTIVE_COMMAND_STATES)))
        .order_by(Command.created_at.desc(), Command.id.desc())
    )
    for row in (await session.execute(stmt)).scalars():
        found[row.lock_id].append(row)
    return found


async def enqueue_command(
    session: AsyncSession,
    ctx: LoqedContext,
    lock_id: str,
    command: lc.DoorCommand,
    *,
    now: datetime,
    origin: CommandOrigin = CommandOrigin.PLAN,
    actor: str | None = None,
    door_action_key: str | None = None,
) -> EnqueueResult:
    """Make ``command`` the lock's pending command (latest wins; equal ones coalesce).

    Runs in the caller's transaction, serialised per lock across replicas.
    """
    await serialize_scope(session, f"commands:{lock_id}")
    active = await _active_commands(session, lock_id)
    result = await _enqueue(
        session,
        ctx,
        lock_id,
        command,
        now=now,
        active=active,
        origin=origin,
        actor=actor,
        door_action_key=door_action_key,
    )
    await session.flush()
    return result


async def _enqueue(
    session: AsyncSession,
    ctx: LoqedContext,
    lock_id: str,
    command: lc.DoorCommand,
    *,
    now: datetime,
    active: list[Command],
    origin: CommandOrigin = CommandOrigin.PLAN,
    actor: str | None = None,
    door_action_key: str | None = None,
) -> EnqueueResult:
    """:func:`enqueue_command` on the lock's ``active`` commands (newest first) as loaded
    in this transaction under the lock's ``commands:`` scope; ``active`` is kept up to date
    (a batch fires several actions of one lock in one transaction). A new command is added
    to the session, not flushed: the caller flushes once for the whole batch."""
    new_id = str(uuid.uuid4())
    new = lc.new_command(
        new_id, lock_id, command, now=now, deadlines=ctx.deadlines, action_key=door_action_key
    )
    key_ids = ctx.key_ids(lock_id)
    pending: Command | None = None
    on_wire: Command | None = None
    for row in active:
        if row.state is CommandState.PENDING and pending is None:
            pending = row
        elif row.state is not CommandState.PENDING and on_wire is None:
            existing = to_domain(row, [], key_ids)
            decision = lc.supersede(existing, new, now=now).decision
            if decision is not lc.SupersedeDecision.INDEPENDENT:
                on_wire = row
    if pending is not None:
        outcome = lc.supersede(to_domain(pending, [], key_ids), new, now=now)
        if outcome.decision is lc.SupersedeDecision.COALESCE:
            return EnqueueResult(pending.id, outcome.decision)
        if outcome.decision is lc.SupersedeDecision.INDEPENDENT:
            # The other slot's command holds the lock's single pending place.
            return EnqueueResult(pending.id, outcome.decision, blocked_by_slot=True)
    superseded: list[str] = []
    if on_wire is not None:
        outcome = lc.supersede(to_domain(on_wire, [], key_ids), new, now=now)
        if outcome.decision is lc.SupersedeDecision.COALESCE:
            if pending is not None:
                superseded = await supersede_pending_commands(
                    session, lock_id, now=now, by=on_wire.id
                )
                _forget(active, superseded)
            return EnqueueResult(on_wire.id, outcome.decision, tuple(superseded))
    deadline = new.deadline
    if on_wire is not None:
        # Queued behind a command that may still be moving the bolt: its own time starts
        # when that one ends at the latest.
        deadline = max(deadline, _aware(on_wire.deadline) + ctx.deadlines.for_command(command))
    if pending is not None:  # latest wins (the partial unique index allows one pending)
        superseded = await supersede_pending_commands(session, lock_id, now=now, by=new_id)
        _forget(active, superseded)
    row = Command(
        id=new_id,
        lock_id=lock_id,
        action=CommandAction(command.value),
        state=CommandState.PENDING,
        attempts=0,
        origin=origin,
        actor=actor,
        door_action_key=door_action_key,
        due_at=now,
        deadline=deadline,
        created_at=now,
        version=1,
    )
    session.add(row)
    active.insert(0, row)
    decision = (
        lc.SupersedeDecision.QUEUE
        if on_wire is not None
        else (lc.SupersedeDecision.SUPERSEDE if superseded else lc.SupersedeDecision.INDEPENDENT)
    )
    return EnqueueResult(row.id, decision, tuple(superseded))


def _forget(active: list[Command], ids: Collection[str]) -> None:
    active[:] = [row for row in active if row.id not in ids]


# --------------------------------------------------------------------------- the executor


def _policy_of(room: Room | None, ctx: LoqedContext, room_id: int) -> DoorPolicy:
    if room is not None and room.policy:
        with contextlib.suppress(ValueError):
            return DoorPolicy.model_validate(room.policy)
    try:
        return ctx.config.policy_for(room_id)
    except KeyError:
        return ctx.config.defaults.policy


def _finish(
    action: DoorAction,
    status: DoorActionStatus,
    *,
    now: datetime,
    reason: str | None = None,
    command_id: str | None = None,
) -> None:
    """What :func:`~roomkey.service.db.plans.finish_door_action` stores, on an action row
    claimed in this transaction (written by the next flush, with the rest of the batch)."""
    action.status = status
    action.finished_at = now
    action.updated_at = now
    action.reason = reason
    action.claim_owner = action.claim_until = None
    if command_id is not None:
        action.command_id = command_id


async def _now_holding_turn(session: AsyncSession, ctx: LoqedContext) -> datetime:
    """The clock read once this transaction holds its write turn (SQLite queues writers in
    process), so whatever fell due while it waited is claimed too."""
    await session.execute(select(1))
    return ctx.now()


def _blocks(blocker: Command, command: Command) -> bool:
    """Whether an in-flight ``blocker`` makes ``command`` wait (same slot, maybe on the wire)."""
    same_slot = CommandAction(blocker.action).value.startswith("open_house") == CommandAction(
        command.action
    ).value.startswith("open_house")
    return same_slot and blocker.state in (
        CommandState.SENDING,
        CommandState.SENT,
        CommandState.ACCEPTED,
    )


@dataclass(frozen=True, slots=True)
class _Begun:
    """A command's attempt loop state: its transports and retry order, the command, the
    attempt to make and, when that attempt is already recorded, its row id."""

    transports: Sequence[LockTransport]
    retry: lc.RetryPolicy
    command: lc.Command
    plan: lc.AttemptPlan
    attempt_id: int | None


@dataclass(frozen=True, slots=True)
class _Start:
    """A claimed command to send; ``begun`` when its first attempt is already on record."""

    row: Command
    begun: _Begun | None = None
    attempt: CommandAttempt | None = None
    """The first attempt's row, added in the claiming transaction (its id after the flush)."""


class _Replanned(Exception):
    """The claimed door action changed under us; roll the transaction back."""


class Executor:
    """Fires due door actions, sends commands, expires the unconfirmed.

    ``step()`` (alias ``run_once()``) runs one pass and returns the seconds until it wants
    to run again; the supervisor also wakes it early through ``ctx.wake``.
    """

    def __init__(
        self,
        ctx: LoqedContext,
        *,
        batch: int = 50,
        claim_lease: timedelta = timedelta(seconds=60),
        idle_interval: float = 30.0,
    ) -> None:
        self.ctx = ctx
        self.batch = batch
        self.claim_lease = claim_lease
        self.idle_interval = idle_interval
        self._sending: set[asyncio.Task[None]] = set()
        self._locks_busy: set[str] = set()
        self._seeded = False
        self._queued: set[str] = set()
        """Locks with an action or command waiting for this executor's send to that lock."""
        self._deadline_hint: datetime | None = None
        self._hint_known = False
        """Soonest deadline of an active command, as of the last :meth:`next_delay`."""
        self.attempts_made = 0
        """Send attempts this executor started."""

    # -- entry points ---------------------------------------------------------------------
    async def step(self) -> float | None:
        """One pass for the service's supervisor; returns seconds until the next moment of
        interest (a planned action, a due command, a deadline), None when there is none.

        The time-critical part comes first and is one transaction: due door actions become
        commands and their first attempts are claimed and recorded (committed before
        anything leaves); then the sends start concurrently, one task per lock. The pass
        then expires overdue commands and stays with the sends in progress only until the
        next moment of interest or a wake-up (:meth:`_settle`), so a slow lock never delays
        another lock's next action.
        """
        await self._pass()
        return await self._settle()

    async def run_once(self) -> float | None:
        """One complete pass for tests and the CLI: like :meth:`step`, but it waits for every
        send it started (and expires what is overdue after them) before returning."""
        await self._pass()
        await self.drain()
        await self.expire_overdue()
        return await self.next_delay()

    async def _pass(self) -> None:
        await self.seed_lock_states()
        await self.prepare_transports()
        await self.fire_and_start()
        if self._may_be_overdue() and await self.expire_overdue():
            await self.start_due_commands()  # a command queued behind an expired one goes now

    async def _settle(self) -> float | None:
        """Wait for the sends in progress, but only until the next moment of interest is
        due or the executor is woken (then 0: run the next pass now)."""
        ctx = self.ctx
        if not self._sending:
            return await self.next_delay()
        while self._sending:
            delay = await self.next_delay()
            if not self._sending:
                break  # the last send ended during the query
            extra: list[asyncio.Future[Any]] = []
            if delay is not None:
                extra.append(asyncio.ensure_future(ctx.clock.sleep(delay)))
            if ctx.wake is not None:
                extra.append(asyncio.ensure_future(ctx.wake.wait()))
            try:
                waiting: list[asyncio.Future[Any]] = [*self._sending, *extra]
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in extra:
                    waiter.cancel()
                await asyncio.gather(*extra, return_exceptions=True)
            if any(waiter in done for waiter in extra):
                return 0.0
        await self.expire_overdue()
        return await self.next_delay()

    async def seed_lock_states(self) -> None:
        """Once per executor: read the bridge status of locks roomkey has no state for yet,
        so "command for the state the lock is already in" is recognised from the start."""
        if self._seeded:
            return
        self._seeded = True
        for lock in self.ctx.config.locks:
            if lock.bridge is not None:
                await self.ctx.seed_lock_state(lock.id)

    async def prepare_transports(self) -> None:
        """Ahead of any due action: learn the cloud key slots that are still unknown (the
        only transport preparation needing I/O), so a due command's first attempt can be
        claimed and sent without it. A no-op once every lock's transports are ready."""
        for lock in self.ctx.config.locks:
            if self.ctx.ready_transports(lock.id) is None:
                await self.ctx.transports(lock.id, learn=True)

    async def send_now(self, command_ids: Collection[str]) -> None:
        """Send these pending commands now and wait for the sends (manual actions)."""
        if command_ids:
            await self.start_due_commands(only=command_ids)
            await self.drain()

    async def drain(self) -> None:
        """Wait for every send in progress."""
        while self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel sends in progress (their commands stay ``sending`` and expire as
        ``no_response``: a request that may have left is never resent)."""
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*list(self._sending), return_exceptions=True)

    # -- phase 1 + 2 in one transaction: due actions → commands → first attempts -----------
    async def fire_and_start(self) -> list[str]:
        """Fire due door actions and claim due commands (the new ones included) in **one**
        transaction, recording each ready command's first attempt in it; after the commit
        the sends start concurrently. Returns the door action keys handled.

        One write transaction with a handful of statements however many actions fall due
        at once: on SQLite every transaction queues for the single write lock and every
        statement is a round trip through the event loop, so per-action transactions and
        statements made the last of N simultaneous actions wait for all the others.
        """
        ctx = self.ctx
        try:
            async with ctx.sessions() as session, session.begin():
                now = await _now_holding_turn(session, ctx)
                handled, active = await self._fire_due_in(session, now)
                starts = await self._claim_and_begin(session, now, active=active)
        except _Replanned:
            return []  # the whole batch rolled back; the next pass takes it again
        self._launch(starts)
        return handled

    async def fire_due_actions(self) -> list[str]:
        """Turn due door actions into commands (or skip them when too late), in one
        transaction, without sending. Returns the keys handled."""
        ctx = self.ctx
        try:
            async with ctx.sessions() as session, session.begin():
                now = await _now_holding_turn(session, ctx)
                handled, _active = await self._fire_due_in(session, now)
        except _Replanned:
            return []
        return handled

    async def _fire_due_in(
        self, session: AsyncSession, now: datetime
    ) -> tuple[list[str], dict[str, list[Command]]]:
        """Claim and fire due actions in the caller's transaction; returns the keys handled
        and the active commands of their locks (newest first, kept up to date)."""
        ctx = self.ctx
        actions = await claim_due_door_actions(
            session, owner=ctx.owner, now=now, limit=self.batch, lease=self.claim_lease
        )
        if not actions:
            return [], {}
        lock_ids = sorted({a.lock_id for a in actions})
        # Per-lock command scopes in one go (hash order): no deadlock with another replica
        # taking the same locks in a different order.
        await serialize_scopes(session, (f"commands:{lock_id}" for lock_id in lock_ids))
        rooms = {
            room.id: room
            for room in (
                await session.execute(
                    select(Room).where(Room.id.in_(sorted({a.room_id for a in actions})))
                )
            ).scalars()
        }
        active = await _active_commands_of(session, lock_ids)
        handled: list[str] = []
        waiting_locks: set[str] = set()
        for action in actions:
            if action.lock_id in waiting_locks:
                action.claim_owner = action.claim_until = None  # released with the flush
                continue
            policy = _policy_of(rooms.get(action.room_id), ctx, action.room_id)
            outcome = await self._fire_one(
                session, action, policy, now=now, active=active[action.lock_id]
            )
            if outcome == "blocked":
                waiting_locks.add(action.lock_id)
                self._queued.add(action.lock_id)
            else:
                handled.append(action.key)
        await session.flush()  # the new commands and the finished actions, in one go
        return handled, active

    async def _fire_one(
        self,
        session: AsyncSession,
        action: DoorAction,
        policy: DoorPolicy,
        *,
        now: datetime,
        active: list[Command],
    ) -> str:
        """Fire one action this transaction claimed (so nothing else can change it before
        the commit): skip it when too late, else enqueue its command and mark it done."""
        ctx = self.ctx
        key, lock_id, room_id, kind = action.key, action.lock_id, action.room_id, action.kind
        planned_at = _aware(action.planned_at)
        if action.status is not DoorActionStatus.PLANNED or action.claim_owner != ctx.owner:
            raise _Replanned  # cannot happen to a row claimed in this transaction
        # A late lock-side action still runs: skipping it could leave a door roomkey
        # unlocked standing open (re-locking a locked door is harmless).
        locks_door = kind in (DoorActionKind.LOCK, DoorActionKind.OPEN_HOUSE_OFF)
        if lc.should_skip(planned_at, now, policy.max_lateness, locks_door=locks_door):
            late = now - planned_at
            reason = (
                f"{int(late.total_seconds())} s late "
                f"(max lateness {policy.max_lateness_minutes} min)"
            )
            _finish(action, DoorActionStatus.SKIPPED, now=now, reason=reason)
            await raise_alert(
                session,
                AlertKind.ACTION_SKIPPED,
                subject=key,
                message=f"{kind.value} planned at {planned_at.isoformat()} skipped: {reason}",
                now=now,
                lock_id=lock_id,
                room_id=room_id,
                details={"door_action": key, "planned_at": planned_at.isoformat()},
            )
            await write_audit(
                session,
                at=now,
                actor=ACTOR,
                action="door_action.skipped",
                target=key,
                details={"lock": lock_id, "room": room_id, "reason": reason},
            )
            log.warning("door action %s skipped: %s", key, reason)
            return "skipped"
        command = stored_command(kind, policy)
        result = await _enqueue(
            session, ctx, lock_id, command, now=now, active=active, door_action_key=key
        )
        if result.blocked_by_slot:
            action.claim_owner = action.claim_until = None
            return "blocked"
        _finish(action, DoorActionStatus.DONE, now=now, command_id=result.command_id)
        log.info(
            "door action %s → command %s (%s, %s)",
            key,
            result.command_id,
            command.value,
            result.decision.value,
        )
        return "fired"

    # -- phase 2: send ---------------------------------------------------------------------
    async def start_due_commands(self, only: Collection[str] | None = None) -> int:
        """Claim due pending commands (or just the ``only`` ids) and start sending them;
        returns how many started."""
        ctx = self.ctx
        async with ctx.sessions() as session, session.begin():
            now = await _now_holding_turn(session, ctx)
            starts = await self._claim_and_begin(session, now, only=only)
        return self._launch(starts)

    async def _claim_and_begin(
        self,
        session: AsyncSession,
        now: datetime,
        *,
        only: Collection[str] | None = None,
        active: dict[str, list[Command]] | None = None,
    ) -> list[_Start]:
        """In the caller's transaction: claim due pending commands whose lock is free and
        record the first attempt of each whose transports are ready (so it is on record
        when the transaction commits, before anything leaves). ``active``: the active
        commands already loaded in this transaction, per lock."""
        ctx = self.ctx
        if only is None:
            rows = await claim_due_commands(
                session, owner=ctx.owner, now=now, limit=self.batch, lease=self.claim_lease
            )
        else:
            rows = await claim_rows(
                session,
                Command,
                owner=ctx.owner,
                now=now,
                lease=self.claim_lease,
                limit=len(only),
                where=[
                    Command.id.in_(list(only)),
                    Command.state == CommandState.PENDING,
                    Command.due_at <= now,
                ],
                order_by=[Command.due_at, Command.created_at, Command.id],
            )
        if not rows:
            return []
        known = dict(active or {})
        missing = {row.lock_id for row in rows} - set(known)
        if missing:
            known.update(await _active_commands_of(session, missing))
        starts: list[_Start] = []
        taken: set[str] = set()
        for row in rows:
            blocked = any(
                other.id != row.id and _blocks(other, row) for other in known.get(row.lock_id, [])
            )
            if blocked or row.lock_id in self._locks_busy or row.lock_id in taken:
                row.claim_owner = row.claim_until = None  # released with the flush below
                self._queued.add(row.lock_id)
                continue
            taken.add(row.lock_id)
            starts.append(self._begin_first_attempt(session, row, now))
        await session.flush()  # the claims released, the commands moved, their attempts
        return [
            replace(start, begun=replace(start.begun, attempt_id=start.attempt.id))
            if start.begun is not None and start.attempt is not None
            else start
            for start in starts
        ]

    def _begin_first_attempt(self, session: AsyncSession, row: Command, now: datetime) -> _Start:
        """Move a pending command this transaction claimed to ``sending`` and add its first
        attempt, if that needs no I/O (flushed by the caller); otherwise leave it for
        :meth:`send` (which prepares it first)."""
        ctx = self.ctx
        transports = ctx.ready_transports(row.lock_id)
        if transports is None or row.state is not CommandState.PENDING:
            return _Start(row)
        key_ids = {t.kind.value: t.key_local_id for t in transports}
        domain = to_domain(row, [], key_ids)
        order = transport_order(transports, domain.command)
        if not order or now >= domain.deadline:
            return _Start(row)  # send() fails it / leaves it to the deadline watchdog
        retry = lc.RetryPolicy(order=order)
        plan = lc.plan_first_attempt(domain, retry)
        transport = {t.kind: t for t in transports}[plan.transport]
        started = lc.start_attempt(domain, plan, now=now, key_local_id=transport.key_local_id)
        # What persist_transition + begin_attempt store, on the row claimed just now.
        row.state = CommandState.SENDING
        row.sending_at = now
        row.version += 1
        row.transport = plan.transport.value
        row.attempts += 1
        attempt = CommandAttempt(command_id=row.id, transport=plan.transport.value, started_at=now)
        session.add(attempt)
        return _Start(row, _Begun(transports, retry, started, plan, None), attempt)

    def _launch(self, starts: Sequence[_Start]) -> int:
        started = 0
        for start in starts:
            lock_id = start.row.lock_id
            if lock_id in self._locks_busy:
                continue
            self._locks_busy.add(lock_id)
            task = asyncio.create_task(
                self._send_guarded(start), name=f"roomkey-send-{start.row.id}"
            )
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
            started += 1
        return started

    async def _send_guarded(self, start: _Start) -> None:
        row = start.row
        try:
            if start.begun is None:
                await self.send(row)
            else:
                await self._attempts(row, start.begun)
        except Exception:
            log.exception("sending command %s failed unexpectedly", row.id)
        finally:
            self._locks_busy.discard(row.lock_id)
            if row.lock_id in self._queued:
                self._queued.discard(row.lock_id)
                self.ctx.poke()  # what waited for this lock may go now

    async def send(self, row: Command) -> lc.Command:
        """Send one claimed pending command through the lock's transports (see module doc)."""
        ctx = self.ctx
        transports = await ctx.transports(row.lock_id, learn=True)
        key_ids = {t.kind.value: t.key_local_id for t in transports}
        domain = to_domain(row, [], key_ids)
        order = transport_order(transports, domain.command)
        if not order:
            async with ctx.sessions() as session, session.begin():
                now = ctx.now()
                failed = lc.transition(
                    lc.transition(domain, lc.CommandState.SENDING, now=now),
                    lc.CommandState.FAILED,
                    now=now,
                    reason=lc.FailureReason.REJECTED,
                )
                detail = "no configured transport can carry this command"
                ok = await transition_command(
                    session,
                    row.id,
                    to=CommandState.FAILED,
                    now=now,
                    from_states={CommandState.PENDING},
                    owner=ctx.owner,
                    reason=CommandReason.REJECTED,
                    detail=detail,
                )
                if ok:
                    await command_ended(session, failed, now=now, detail=detail)
            return failed
        retry = lc.RetryPolicy(order=order)
        return await self._attempts(
            row, _Begun(transports, retry, domain, lc.plan_first_attempt(domain, retry), None)
        )

    async def _attempts(self, row: Command, begun: _Begun) -> lc.Command:
        """The attempt loop: each attempt is committed before it is sent (the first one may
        already be, by :meth:`_claim_and_begin`), retried only while certainly not sent."""
        ctx = self.ctx
        by_kind = {t.kind: t for t in begun.transports}
        retry = begun.retry
        domain = begun.command
        plan: lc.AttemptPlan | None = begun.plan
        attempt_id = begun.attempt_id
        while plan is not None:
            transport = by_kind[plan.transport]
            if attempt_id is None:
                now = ctx.now()
                if now >= domain.deadline:
                    break  # the deadline watchdog ends it with the right reason
                before = domain
                domain = lc.start_attempt(
                    domain, plan, now=now, key_local_id=transport.key_local_id
                )
                async with ctx.sessions() as session, session.begin():
                    if before.state is lc.CommandState.PENDING:
                        moved = await persist_transition(
                            session,
                            before,
                            domain,
                            now=now,
                            owner=ctx.owner,
                            transport=plan.transport.value,
                        )
                    else:
                        fresh = await get_command(session, row.id)
                        moved = fresh is not None and fresh.state is CommandState.SENDING
                    if not moved:
                        log.info("command %s changed hands before attempt %d", row.id, plan.number)
                        return domain
                    attempt = await begin_attempt(
                        session, row.id, transport=plan.transport.value, now=now
                    )
                    attempt_id = attempt.id
            # Committed: the attempt is on record before anything leaves.
            self.attempts_made += 1
            outcome = await send_one(transport, domain.command)
            async with ctx.sessions() as session, session.begin():
                now = ctx.now()
                await finish_attempt(
                    session,
                    attempt_id,
                    now=now,
                    outcome=outcome.result.value,
                    error=outcome.detail or None,
                )
                fresh = await get_command(session, row.id)
                if fresh is not None:
                    domain = replace(domain, state=lc.CommandState(fresh.state.value))
                decision = lc.on_send_outcome(domain, outcome.result, now=now, retry=retry)
                changed = await persist_transition(
                    session,
                    domain,
                    decision.command,
                    now=now,
                    detail=outcome.detail or None,
                    transport=outcome.transport.value,
                )
                domain = decision.command
                if changed and domain.state.terminal:
                    await command_ended(session, domain, now=now, detail=outcome.detail)
            attempt_id = None
            log.info(
                "command %s (%s) via %s: %s → %s",
                row.id,
                domain.command.value,
                outcome.transport.value,
                outcome.result.value,
                domain.state.value,
            )
            if domain.state.terminal:
                ctx.poke()
            plan = decision.next_attempt
        return domain

    # -- phase 3: deadlines ----------------------------------------------------------------
    def _may_be_overdue(self) -> bool:
        """Whether a deadline may have passed since the last :meth:`next_delay` (which runs
        at the end of every pass and saw every active command's deadline); saves the
        query on the passes that wake-ups cause. Commands created since end later."""
        hint = self._deadline_hint
        return not self._hint_known or (hint is not None and hint < self.ctx.now())

    async def expire_overdue(self) -> list[str]:
        """End commands past their deadline; returns their ids.

        A command the lock accepted (GO_TO with our key) but never reported reaching is
        confirmed instead when the lock is known to be in the target state: a command for the
        state the lock is already in yields only the GO_TO. When roomkey has no state for the
        lock yet, the bridge's status is read (a hint, used only here).
        """
        ctx = self.ctx
        now = ctx.now()
        async with ctx.sessions() as session:
            overdue = await commands_past_deadline(session, now=now, limit=self.batch)
            if not overdue:
                return []  # the usual case: no write transaction
            unknown = {
                row.lock_id
                for row in overdue
                if row.state is CommandState.ACCEPTED
                and (lock := await session.get(Lock, row.lock_id)) is not None
                and lock.bolt_state is None
            }
        for lock_id in unknown:
            await ctx.seed_lock_state(lock_id)
        ended: list[str] = []
        async with ctx.sessions() as session, session.begin():
            for row in await commands_past_deadline(session, now=now, limit=self.batch):
                attempts = await list_attempts(session, row.id)
                domain = to_domain(row, attempts, ctx.key_ids(row.lock_id))
                lock = await session.get(Lock, row.lock_id, populate_existing=True)
                state = parse_bolt_state(lock.bolt_state) if lock and lock.bolt_state else None
                target = domain.command.target
                if (
                    domain.state is lc.CommandState.ACCEPTED
                    and target is not None
                    and domain.command is not lc.DoorCommand.OPEN
                    and state is not None
                    and state.value == target.value
                ):
                    after = lc.transition(domain, lc.CommandState.CONFIRMED, now=now)
                    detail = "only GO_TO: the lock was already in the target state"
                else:
                    after = lc.check_deadline(
                        domain, now=now, lock_online=lock.online if lock is not None else None
                    )
                    detail = "deadline passed without confirmation"
                if await persist_transition(session, domain, after, now=now, detail=detail):
                    await command_ended(session, after, now=now)
                    ended.append(row.id)
                    confirmed = after.state is lc.CommandState.CONFIRMED
                    log.log(
                        logging.INFO if confirmed else logging.WARNING,
                        "command %s (%s) %s: %s",
                        row.id,
                        row.action.value,
                        after.state.value,
                        after.reason.value if after.reason else detail,
                    )
        if ended:
            ctx.poke()
        return ended

    async def next_delay(self) -> float | None:
        """Seconds until the next planned action, pending command or deadline."""
        ctx = self.ctx
        now = ctx.now()
        async with ctx.sessions() as session:
            next_action = (
                await session.execute(
                    select(func.min(DoorAction.planned_at)).where(
                        DoorAction.status == DoorActionStatus.PLANNED,
                        DoorAction.planned_at > now,
                    )
                )
            ).scalar_one_or_none()
            next_deadline = (
                await session.execute(
                    select(func.min(Command.deadline)).where(
                        Command.state.in_(list(ACTIVE_COMMAND_STATES))
                    )
                )
            ).scalar_one_or_none()
            next_due = (
                await session.execute(
                    select(func.min(Command.due_at)).where(
                        Command.state == CommandState.PENDING, Command.due_at > now
                    )
                )
            ).scalar_one_or_none()
        self._deadline_hint = _aware(next_deadline) if next_deadline is not None else None
        self._hint_known = True
        moments = [m for m in (next_action, next_deadline, next_due) if m is not None]
        if not moments:
            return None
        soonest = min(_aware(m) for m in moments)
        # Counted from the clock *after* the queries (under load they can take a while), so
        # the sleep ends at the moment itself. Deadlines are strict (expired only *after*
        # them): wake just past the moment.
        return max(0.0, soonest.timestamp() - ctx.clock.time()) + 0.001


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- running


_CONTEXTS: weakref.WeakKeyDictionary[Service, LoqedContext] = weakref.WeakKeyDictionary()


def context_for(service: Service) -> LoqedContext:
    """The service's LOQED context (built once per service and shared by the executor,
    the LOQED webhooks and manual actions, so transports and learned key slots are too)."""
    ctx = _CONTEXTS.get(service)
    if ctx is None:
        ctx = LoqedContext(
            config=service.config,
            sessions=service.session_factory,
            clock=service.clock,
            owner=service.instance_id,
            http_client=service.loqed_http,
            wake=service.wakes.executor,
            # Picked up once the config grows ``[loqed] low_battery_percent``.
            low_battery_percent=getattr(
                service.config.loqed, "low_battery_percent", DEFAULT_LOW_BATTERY
            ),
        )
        _CONTEXTS[service] = ctx
    return ctx


def executor_worker(executor: Executor, *, interval: float = 30.0) -> Worker:
    """A supervisor :class:`~roomkey.service.runtime.Worker` running ``executor.step``."""
    return Worker(name="executor", step=executor.step, interval=interval, wake=executor.ctx.wake)


def create_worker(service: Service) -> Worker:
    """The executor worker of a :class:`~roomkey.service.runtime.Service` (found by the
    service through ``OPTIONAL_WORKER_MODULES``)."""
    return executor_worker(Executor(context_for(service)))


async def run_executor(
    ctx: LoqedContext, *, interval: float = 30.0, stop: asyncio.Event | None = None
) -> None:
    """Run executor passes until ``stop`` is set (or the task is cancelled), for callers
    without the service's supervisor. Between passes it sleeps (on ``ctx.clock``) until the
    next moment of interest, at most ``interval``, or until ``ctx.wake`` is set."""
    executor = Executor(ctx, idle_interval=interval)
    stopping = stop if stop is not None else asyncio.Event()
    try:
        while not stopping.is_set():
            if ctx.wake is not None:
                ctx.wake.clear()  # before the pass: a poke during it runs another pass
            try:
                delay = await executor.step()
            except Exception:
                log.exception("executor pass failed")
                delay = 1.0
            wait = interval if delay is None else min(delay, interval)
            waiters: list[asyncio.Future[object]] = [
                asyncio.ensure_future(stopping.wait()),
                asyncio.ensure_future(ctx.clock.sleep(wait)),
            ]
            if ctx.wake is not None:
                waiters.append(asyncio.ensure_future(ctx.wake.wait()))
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)
        # Stopped: the sends in progress may finish (each within the transport timeout).
        await executor.drain()
    finally:
        await executor.aclose()
