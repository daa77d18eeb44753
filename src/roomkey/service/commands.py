"""Door command lifecycle: pure decisions for the executor (no I/O, no clock of its own).

A command is one wanted change on one lock. Its states::

    pending → sending → sent → accepted → confirmed
        ╰──────────┴───────┴────────┴──→ failed | expired | superseded   (terminal)

* ``sending``: an attempt is in progress on one transport (bridge, cloud, app).
* ``sent``: a transport took the request, or it may have reached the lock (the answer was lost).
* ``accepted``: the lock's GO_TO event named our key and the target state.
* ``confirmed``: the lock's STATE_CHANGED event reached the target.

Door-safety rules encoded here (go-loqed semantics, anchors.md §2.2):

* the next transport is tried only when an attempt certainly never left (``not_sent``), or —
  only if :attr:`RetryPolicy.fallback_on_refusal` is set — when a transport definitely refused;
* every attempt needs a fresh signature (:attr:`AttemptPlan.fresh_signature`);
* once any attempt may have been delivered, no further attempt is planned (so an OPEN is
  never attempted twice);
* one pending command per lock and slot: the latest wins, equal commands coalesce, and a
  command that may already be on the wire is never superseded — it completes;
* each command has an absolute deadline (30 s lock/unlock, 10 s open by default).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

__all__ = [
    "TERMINAL_STATES",
    "Attempt",
    "AttemptPlan",
    "Command",
    "CommandError",
    "CommandState",
    "DeadlinePolicy",
    "DoorCommand",
    "DoorState",
    "EventKind",
    "FailureReason",
    "IllegalTransitionError",
    "LockEventView",
    "RetryPolicy",
    "SendDecision",
    "SendResult",
    "SupersedeDecision",
    "SupersedeOutcome",
    "Transport",
    "check_deadline",
    "legal_targets",
    "new_command",
    "on_lock_event",
    "on_send_outcome",
    "plan_first_attempt",
    "should_skip",
    "start_attempt",
    "supersede",
    "transition",
]


class DoorCommand(enum.StrEnum):
    """What roomkey asks of a lock (the pipeline maps it to an SDK call)."""

    OPEN = "open"
    DAY_LOCK = "day_lock"
    NIGHT_LOCK = "night_lock"
    OPEN_HOUSE_ON = "open_house_on"
    OPEN_HOUSE_OFF = "open_house_off"

    @property
    def is_setting(self) -> bool:
        """Open-house commands change a lock setting; no bolt event confirms them."""
        return self in (DoorCommand.OPEN_HOUSE_ON, DoorCommand.OPEN_HOUSE_OFF)

    @property
    def target(self) -> DoorState | None:
        """The bolt state a bolt command drives to (None for settings)."""
        return _TARGETS.get(self)


class DoorState(enum.StrEnum):
    """Bolt states as seen in lock events (service-side twin of the SDK's BoltState)."""

    UNKNOWN = "unknown"
    OPEN = "open"
    DAY_LOCK = "day_lock"
    NIGHT_LOCK = "night_lock"


_TARGETS = {
    DoorCommand.OPEN: DoorState.OPEN,
    DoorCommand.DAY_LOCK: DoorState.DAY_LOCK,
    DoorCommand.NIGHT_LOCK: DoorState.NIGHT_LOCK,
}


class CommandState(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    ACCEPTED = "accepted"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def maybe_on_wire(self) -> bool:
        """An attempt is in progress or may have reached the lock."""
        return self in (CommandState.SENDING, CommandState.SENT, CommandState.ACCEPTED)


TERMINAL_STATES = frozenset(
    {CommandState.CONFIRMED, CommandState.FAILED, CommandState.EXPIRED, CommandState.SUPERSEDED}
)


class FailureReason(enum.StrEnum):
    """The closed vocabulary of why a command did not confirm."""

    UNREACHABLE = "unreachable"
    NO_RESPONSE = "no_response"
    REJECTED = "rejected"
    UNAUTHORIZED = "unauthorized"
    KEY_REVOKED = "key_revoked"
    RATE_LIMITED = "rate_limited"
    STALLED = "stalled"
    NO_CONFIRMATION = "no_confirmation"
    OFFLINE = "offline"


class Transport(enum.StrEnum):
    """LOQED surfaces (values match ``roomkey.service.transports.TransportKind``)."""

    BRIDGE = "bridge"
    CLOUD = "cloud"
    APP = "app"


class SendResult(enum.StrEnum):
    """What one attempt's transport call told us."""

    NOT_SENT = "not_sent"
    """Certainly never left (DNS/connect failure, connect timeout)."""
    MAYBE_DELIVERED = "maybe_delivered"
    """May have reached the lock (timeout after writing, dropped connection, 5xx)."""
    ACCEPTED_BY_TRANSPORT = "accepted_by_transport"
    """The bridge/cloud took it (200/204); lock events tell the rest."""
    REJECTED = "rejected"
    UNAUTHORIZED = "unauthorized"
    KEY_REVOKED = "key_revoked"
    RATE_LIMITED = "rate_limited"
    LOCK_OFFLINE = "lock_offline"
    """The transport answered that the lock is offline (not executed)."""

    @property
    def may_have_reached(self) -> bool:
        return self in (SendResult.MAYBE_DELIVERED, SendResult.ACCEPTED_BY_TRANSPORT)


_REFUSALS = {
    SendResult.REJECTED: FailureReason.REJECTED,
    SendResult.UNAUTHORIZED: FailureReason.UNAUTHORIZED,
    SendResult.KEY_REVOKED: FailureReason.KEY_REVOKED,
    SendResult.RATE_LIMITED: FailureReason.RATE_LIMITED,
    SendResult.LOCK_OFFLINE: FailureReason.OFFLINE,
}


class CommandError(Exception):
    """A lifecycle rule was broken by the caller."""


class IllegalTransitionError(CommandError):
    """``source → target`` is not a legal lifecycle step."""

    def __init__(self, source: CommandState, target: CommandState, detail: str = "") -> None:
        self.source = source
        self.target = target
        msg = f"illegal command transition {source.value} → {target.value}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


_LEGAL: dict[CommandState, frozenset[CommandState]] = {
    CommandState.PENDING: frozenset(
        {CommandState.SENDING, CommandState.FAILED, CommandState.EXPIRED, CommandState.SUPERSEDED}
    ),
    CommandState.SENDING: frozenset(
        {
            CommandState.SENT,
            CommandState.ACCEPTED,
            CommandState.CONFIRMED,
            CommandState.FAILED,
            CommandState.EXPIRED,
        }
    ),
    CommandState.SENT: frozenset(
        {CommandState.ACCEPTED, CommandState.CONFIRMED, CommandState.FAILED, CommandState.EXPIRED}
    ),
    CommandState.ACCEPTED: frozenset(
        {CommandState.CONFIRMED, CommandState.FAILED, CommandState.EXPIRED}
    ),
    CommandState.CONFIRMED: frozenset(),
    CommandState.FAILED: frozenset(),
    CommandState.EXPIRED: frozenset(),
    CommandState.SUPERSEDED: frozenset(),
}


def legal_targets(state: CommandState) -> frozenset[CommandState]:
    """The states reachable from ``state`` in one step."""
    return _LEGAL[state]


@dataclass(frozen=True, slots=True)
class DeadlinePolicy:
    """Absolute time from creation to confirmation, per command kind."""

    lock_unlock: timedelta = timedelta(seconds=30)
    open: timedelta = timedelta(seconds=10)
    setting: timedelta = timedelta(seconds=30)

    def for_command(self, command: DoorCommand) -> timedelta:
        if command is DoorCommand.OPEN:
            return self.open
        if command.is_setting:
            return self.setting
        return self.lock_unlock


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Which transports to try, in order; an entry may repeat (e.g. bridge, bridge, cloud)."""

    order: tuple[Transport, ...] = (Transport.BRIDGE, Transport.CLOUD)
    fallback_on_refusal: bool = False
    """Also try the next transport after a definite refusal (401, revoked key, 429, …).
    Off by default: the issue allows retries only when the request certainly never left."""

    def __post_init__(self) -> None:
        if not self.order:
            raise ValueError("the transport order must name at least one transport")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try on one transport; ``result`` is None while it runs."""

    number: int
    transport: Transport
    started_at: datetime
    key_local_id: int | None = None
    """The key slot this transport signs with (GO_TO events name it)."""
    result: SendResult | None = None


@dataclass(frozen=True, slots=True)
class AttemptPlan:
    """The next attempt to make. The pipeline signs it afresh (``fresh_signature``)."""

    number: int
    transport: Transport
    fresh_signature: bool = True


@dataclass(frozen=True, slots=True)
class Command:
    """One command's lifecycle record (immutable; every step returns a new one)."""

    id: str
    lock_id: str
    command: DoorCommand
    created_at: datetime
    deadline: datetime
    state: CommandState = CommandState.PENDING
    reason: FailureReason | None = None
    attempts: tuple[Attempt, ...] = ()
    superseded_by: str | None = None
    updated_at: datetime | None = None
    action_key: str | None = None
    """The planned action this command executes, if any (None for manual commands)."""
    history: tuple[tuple[CommandState, datetime], ...] = field(default=())

    @property
    def may_have_reached(self) -> bool:
        """Some attempt may have reached the lock (or the lock reported acting on it)."""
        return self.state in (CommandState.ACCEPTED, CommandState.CONFIRMED) or any(
            a.result is not None and a.result.may_have_reached for a in self.attempts
        )

    @property
    def our_key_ids(self) -> frozenset[int]:
        return frozenset(a.key_local_id for a in self.attempts if a.key_local_id is not None)


def new_command(
    id: str,
    lock_id: str,
    command: DoorCommand,
    *,
    now: datetime,
    deadlines: DeadlinePolicy | None = None,
    action_key: str | None = None,
) -> Command:
    """A pending command whose deadline is ``now`` + the kind's timeout."""
    policy = deadlines or DeadlinePolicy()
    return Command(
        id=id,
        lock_id=lock_id,
        command=command,
        created_at=now,
        deadline=now + policy.for_command(command),
        updated_at=now,
        action_key=action_key,
        history=((CommandState.PENDING, now),),
    )


def transition(
    command: Command,
    target: CommandState,
    *,
    now: datetime,
    reason: FailureReason | None = None,
    superseded_by: str | None = None,
) -> Command:
    """``command`` moved to ``target``; illegal steps raise :class:`IllegalTransitionError`.

    ``failed`` and ``expired`` need a reason; other states take none.
    """
    if target not in _LEGAL[command.state]:
        raise IllegalTransitionError(command.state, target)
    needs_reason = target in (CommandState.FAILED, CommandState.EXPIRED)
    if needs_reason and reason is None:
        raise IllegalTransitionError(command.state, target, "a failure reason is required")
    if not needs_reason and reason is not None:
        raise IllegalTransitionError(command.state, target, "only failed/expired take a reason")
    if superseded_by is not None and target is not CommandState.SUPERSEDED:
        raise IllegalTransitionError(command.state, target, "superseded_by needs superseded")
    return replace(
        command,
        state=target,
        reason=reason,
        superseded_by=superseded_by,
        updated_at=now,
        history=(*command.history, (target, now)),
    )


def _next_transport(command: Command, retry: RetryPolicy) -> AttemptPlan | None:
    number = len(command.attempts)
    if number >= len(retry.order):
        return None
    return AttemptPlan(number=number + 1, transport=retry.order[number])


def plan_first_attempt(command: Command, retry: RetryPolicy | None = None) -> AttemptPlan:
    """The first attempt of a pending command."""
    if command.state is not CommandState.PENDING or command.attempts:
        raise CommandError(f"command {command.id} is {command.state.value}, not fresh pending")
    plan = _next_transport(command, retry or RetryPolicy())
    assert plan is not None  # RetryPolicy guarantees a non-empty order
    return plan


def start_attempt(
    command: Command, plan: AttemptPlan, *, now: datetime, key_local_id: int | None = None
) -> Command:
    """Record that ``plan`` is being sent now (pending → sending, or the next try in sending).

    Refuses an attempt once any earlier attempt may have reached the lock, an attempt while
    another is unfinished, and an attempt at or after the deadline.
    """
    if command.may_have_reached:
        raise CommandError(f"command {command.id} may have reached the lock; no new attempt")
    if command.attempts and command.attempts[-1].result is None:
        raise CommandError(f"command {command.id} has an attempt in progress")
    if plan.number != len(command.attempts) + 1:
        raise CommandError(f"attempt {plan.number} is out of sequence for {command.id}")
    if now >= command.deadline:
        raise CommandError(f"command {command.id} is past its deadline")
    attempt = Attempt(
        number=plan.number, transport=plan.transport, started_at=now, key_local_id=key_local_id
    )
    if command.state is CommandState.PENDING:
        command = transition(command, CommandState.SENDING, now=now)
    elif command.state is not CommandState.SENDING:
        raise CommandError(f"command {command.id} is {command.state.value}; cannot send")
    return replace(command, attempts=(*command.attempts, attempt), updated_at=now)


@dataclass(frozen=True, slots=True)
class SendDecision:
    """The command after an attempt's outcome, and the next attempt to make (if any)."""

    command: Command
    next_attempt: AttemptPlan | None = None


def on_send_outcome(
    command: Command,
    result: SendResult,
    *,
    now: datetime,
    retry: RetryPolicy | None = None,
) -> SendDecision:
    """Apply the outcome of the attempt in progress.

    * ``not_sent`` → next transport in the order if one is left and the deadline has not
      passed, else failed/unreachable;
    * ``maybe_delivered`` / ``accepted_by_transport`` → sent, never another attempt (settings
      are confirmed by ``accepted_by_transport`` itself: no lock event reports them);
    * a refusal → failed with its reason (or the next transport when
      ``fallback_on_refusal``).

    A late outcome for a command already accepted/confirmed by lock events only records it.
    """
    policy = retry or RetryPolicy()
    if not command.attempts or command.attempts[-1].result is not None:
        raise CommandError(f"command {command.id} has no attempt in progress")
    last = replace(command.attempts[-1], result=result)
    recorded = replace(command, attempts=(*command.attempts[:-1], last), updated_at=now)
    if command.state is not CommandState.SENDING:
        # Lock events overtook the HTTP answer (accepted/confirmed), or the command ended.
        return SendDecision(recorded)
    if result is SendResult.ACCEPTED_BY_TRANSPORT and command.command.is_setting:
        return SendDecision(transition(recorded, CommandState.CONFIRMED, now=now))
    if result.may_have_reached:
        return SendDecision(transition(recorded, CommandState.SENT, now=now))
    refusal = _REFUSALS.get(result)
    may_fall_back = result is SendResult.NOT_SENT or policy.fallback_on_refusal
    following = _next_transport(recorded, policy) if may_fall_back else None
    if following is not None and now < command.deadline:
        return SendDecision(recorded, next_attempt=following)
    reason = refusal if refusal is not None else FailureReason.UNREACHABLE
    return SendDecision(transition(recorded, CommandState.FAILED, now=now, reason=reason))


class EventKind(enum.StrEnum):
    """Lock event kinds the lifecycle reacts to (service-side twin of the SDK's)."""

    GO_TO_STATE = "go_to_state"
    STATE_CHANGED = "state_changed"
    MOTOR_STALL = "motor_stall"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class LockEventView:
    """The parts of a lock event the lifecycle needs.

    ``state`` is the target for GO_TO and the reached state for STATE_CHANGED;
    ``key_local_id`` None means no key (255/""/null on the wire).
    """

    kind: EventKind
    state: DoorState | None = None
    key_local_id: int | None = None


def on_lock_event(
    command: Command,
    event: LockEventView,
    *,
    now: datetime,
    current_state: DoorState | None = None,
) -> Command:
    """Advance a bolt command from a lock event (unrelated events leave it unchanged).

    * GO_TO with one of our attempts' key ids and the target → accepted; if the lock's
      last known state (``current_state``, before this event) already equals the target,
      → confirmed at once, because a command for the state the lock is in yields only the
      GO_TO and never a STATE_CHANGED. OPEN is never confirmed this way (the lock falls back
      to day_lock within seconds, so "already open" is not trustworthy).
    * STATE_CHANGED to the target with our key (or with no key once accepted) → confirmed.
    * MOTOR_STALL with our key or no key → failed/stalled.
    """
    if not command.state.maybe_on_wire or command.command.is_setting:
        return command
    target = command.command.target
    ours = event.key_local_id is not None and event.key_local_id in command.our_key_ids
    keyless = event.key_local_id is None
    if event.kind is EventKind.MOTOR_STALL and (ours or keyless):
        return transition(command, CommandState.FAILED, now=now, reason=FailureReason.STALLED)
    if event.state is not target:
        return command
    if event.kind is EventKind.GO_TO_STATE and ours:
        already = current_state is target and command.command is not DoorCommand.OPEN
        if already:
            return transition(command, CommandState.CONFIRMED, now=now)
        if command.state is CommandState.ACCEPTED:
            return command
        return transition(command, CommandState.ACCEPTED, now=now)
    if event.kind is EventKind.STATE_CHANGED and (
        ours or (keyless and command.state is CommandState.ACCEPTED)
    ):
        return transition(command, CommandState.CONFIRMED, now=now)
    return command


def check_deadline(command: Command, *, now: datetime, lock_online: bool | None = None) -> Command:
    """Expire a non-terminal command at or after its deadline.

    Reason: ``offline`` when the lock is known offline; else ``no_confirmation`` if a
    transport took the request or the lock accepted it, ``no_response`` if an attempt may
    have been delivered without an answer, ``unreachable`` if nothing ever left.
    """
    if command.state.terminal or now < command.deadline:
        return command
    if lock_online is False:
        reason = FailureReason.OFFLINE
    elif command.state is CommandState.ACCEPTED or any(
        a.result is SendResult.ACCEPTED_BY_TRANSPORT for a in command.attempts
    ):
        reason = FailureReason.NO_CONFIRMATION
    elif any(a.result is SendResult.MAYBE_DELIVERED or a.result is None for a in command.attempts):
        reason = FailureReason.NO_RESPONSE
    else:
        reason = FailureReason.UNREACHABLE
    return transition(command, CommandState.EXPIRED, now=now, reason=reason)


class SupersedeDecision(enum.StrEnum):
    SUPERSEDE = "supersede"
    """The existing pending command is superseded; the new one becomes the pending one."""
    COALESCE = "coalesce"
    """Same command already pending or in flight: the new one is not needed."""
    QUEUE = "queue"
    """The existing one may be on the wire: it completes; the new one waits for it."""
    INDEPENDENT = "independent"
    """No conflict (the existing one ended, or they act on different slots)."""


@dataclass(frozen=True, slots=True)
class SupersedeOutcome:
    decision: SupersedeDecision
    existing: Command
    new: Command | None
    """None when coalesced (the existing command does the job)."""


def _slot(command: DoorCommand) -> str:
    return "setting" if command.is_setting else "bolt"


def supersede(existing: Command, new: Command, *, now: datetime) -> SupersedeOutcome:
    """One pending command per lock and slot (bolt / open-house setting); the latest wins.

    Equal commands coalesce — two OPENs become one. A command that may already be on the
    wire (sending/sent/accepted) is never superseded: a different new command queues
    behind it. Bolt commands and open-house settings occupy different slots, so
    "open house off, then night lock" both run.
    """
    if existing.lock_id != new.lock_id:
        raise CommandError("supersede compares commands of one lock")
    if new.state is not CommandState.PENDING:
        raise CommandError(f"the new command {new.id} must be pending")
    if existing.state.terminal or _slot(existing.command) != _slot(new.command):
        return SupersedeOutcome(SupersedeDecision.INDEPENDENT, existing, new)
    if existing.command is new.command:
        return SupersedeOutcome(SupersedeDecision.COALESCE, existing, None)
    if existing.state.maybe_on_wire:
        return SupersedeOutcome(SupersedeDecision.QUEUE, existing, new)
    done = transition(existing, CommandState.SUPERSEDED, now=now, superseded_by=new.id)
    return SupersedeOutcome(SupersedeDecision.SUPERSEDE, done, new)


def should_skip(
    planned_at: datetime, now: datetime, max_lateness: timedelta, *, locks_door: bool = False
) -> bool:
    """True when an action due at ``planned_at`` is more than ``max_lateness`` overdue.

    ``locks_door=True`` (lock-side actions: lock, open house off) is never skipped: a door
    roomkey may have unlocked must still be locked however late, and a late lock of a door
    that is already locked is harmless (the lock reports only a GO_TO). Exactly
    ``max_lateness`` late still runs.
    """
    if locks_door:
        return False
    return now - planned_at > max_lateness
