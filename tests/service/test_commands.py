"""Unit tests of the command lifecycle: transitions, send outcomes, lock events, deadlines,
superseding and lateness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from roomkey.service.commands import (
    AttemptPlan,
    Command,
    CommandError,
    CommandState,
    DeadlinePolicy,
    DoorCommand,
    DoorState,
    EventKind,
    FailureReason,
    IllegalTransitionError,
    LockEventView,
    RetryPolicy,
    SendResult,
    SupersedeDecision,
    Transport,
    check_deadline,
    legal_targets,
    new_command,
    on_lock_event,
    on_send_outcome,
    plan_first_attempt,
    should_skip,
    start_attempt,
    supersede,
    transition,
)

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
S = CommandState
BRIDGE_KEY, CLOUD_KEY = 1, 7

# The lifecycle as specified: pending → sending → sent → accepted → confirmed, or a terminal
# failed / expired / superseded. Lock events may overtake the HTTP answer (sending → accepted
# or confirmed). Only a command nobody sent can be superseded.
SPEC = {
    S.PENDING: {S.SENDING, S.FAILED, S.EXPIRED, S.SUPERSEDED},
    S.SENDING: {S.SENT, S.ACCEPTED, S.CONFIRMED, S.FAILED, S.EXPIRED},
    S.SENT: {S.ACCEPTED, S.CONFIRMED, S.FAILED, S.EXPIRED},
    S.ACCEPTED: {S.CONFIRMED, S.FAILED, S.EXPIRED},
    S.CONFIRMED: set(),
    S.FAILED: set(),
    S.EXPIRED: set(),
    S.SUPERSEDED: set(),
}


def cmd(
    kind: DoorCommand = DoorCommand.NIGHT_LOCK, *, cid: str = "c1", at: datetime = T0
) -> Command:
    return new_command(cid, "L1", kind, now=at)


def in_state(state: CommandState, kind: DoorCommand = DoorCommand.NIGHT_LOCK) -> Command:
    """A command driven to ``state`` through the real API."""
    c = cmd(kind)
    if state is S.PENDING:
        return c
    if state is S.SUPERSEDED:
        return transition(c, S.SUPERSEDED, now=T0, superseded_by="c2")
    if state in (S.FAILED, S.EXPIRED):
        return transition(c, state, now=T0, reason=FailureReason.UNREACHABLE)
    c = start_attempt(c, plan_first_attempt(c), now=T0, key_local_id=BRIDGE_KEY)
    if state is S.SENDING:
        return c
    c = on_send_outcome(c, SendResult.ACCEPTED_BY_TRANSPORT, now=T0).command
    if state is S.SENT:
        return c
    go_to = LockEventView(EventKind.GO_TO_STATE, kind.target, BRIDGE_KEY)
    c = on_lock_event(c, go_to, now=T0)
    if state is S.ACCEPTED:
        return c
    done = LockEventView(EventKind.STATE_CHANGED, kind.target, BRIDGE_KEY)
    return on_lock_event(c, done, now=T0)


@pytest.mark.parametrize("state", list(S))
def test_in_state_helper_reaches_each_state(state: CommandState) -> None:
    assert in_state(state).state is state


@pytest.mark.parametrize("source", list(S))
@pytest.mark.parametrize("target", list(S))
def test_every_transition_is_legal_or_rejected(source: CommandState, target: CommandState) -> None:
    c = in_state(source)
    reason = FailureReason.NO_RESPONSE if target in (S.FAILED, S.EXPIRED) else None
    if target in SPEC[source]:
        moved = transition(c, target, now=T0 + timedelta(seconds=1), reason=reason)
        assert moved.state is target
        assert moved.history[-1] == (target, T0 + timedelta(seconds=1))
        assert moved.reason is reason
    else:
        with pytest.raises(IllegalTransitionError) as info:
            transition(c, target, now=T0, reason=reason)
        assert (info.value.source, info.value.target) == (source, target)
    assert legal_targets(source) == SPEC[source]
    assert source.terminal == (not SPEC[source])


def test_failure_reasons_are_required_exactly_where_they_belong() -> None:
    c = cmd()
    with pytest.raises(IllegalTransitionError, match="reason is required"):
        transition(c, S.FAILED, now=T0)
    with pytest.raises(IllegalTransitionError, match="only failed/expired"):
        transition(c, S.SUPERSEDED, now=T0, reason=FailureReason.REJECTED)
    with pytest.raises(IllegalTransitionError, match="superseded_by"):
        transition(c, S.SENDING, now=T0, superseded_by="x")
    assert {r.value for r in FailureReason} == {
        "unreachable",
        "no_response",
        "rejected",
        "unauthorized",
        "key_revoked",
        "rate_limited",
        "stalled",
        "no_confirmation",
        "offline",
    }


# --- sending ---------------------------------------------------------------------------------


def test_first_attempt_uses_the_configured_order_and_a_fresh_signature() -> None:
    c = cmd()
    plan = plan_first_attempt(c, RetryPolicy(order=(Transport.CLOUD, Transport.BRIDGE)))
    assert plan == AttemptPlan(number=1, transport=Transport.CLOUD, fresh_signature=True)
    started = start_attempt(c, plan, now=T0, key_local_id=CLOUD_KEY)
    assert started.state is S.SENDING
    assert started.attempts[0].transport is Transport.CLOUD
    with pytest.raises(CommandError, match="fresh pending"):
        plan_first_attempt(started)
    with pytest.raises(ValueError, match="at least one"):
        RetryPolicy(order=())


def test_not_sent_moves_to_the_next_transport_then_fails_unreachable() -> None:
    c = start_attempt(cmd(), plan_first_attempt(cmd()), now=T0, key_local_id=BRIDGE_KEY)
    d = on_send_outcome(c, SendResult.NOT_SENT, now=T0)
    assert d.command.state is S.SENDING
    assert d.next_attempt == AttemptPlan(number=2, transport=Transport.CLOUD)
    assert d.next_attempt.fresh_signature
    c2 = start_attempt(d.command, d.next_attempt, now=T0, key_local_id=CLOUD_KEY)
    d2 = on_send_outcome(c2, SendResult.NOT_SENT, now=T0)
    assert d2.next_attempt is None
    assert (d2.command.state, d2.command.reason) == (S.FAILED, FailureReason.UNREACHABLE)
    assert [a.result for a in d2.command.attempts] == [SendResult.NOT_SENT] * 2


def test_not_sent_after_the_deadline_fails_instead_of_retrying() -> None:
    c = start_attempt(cmd(), plan_first_attempt(cmd()), now=T0)
    d = on_send_outcome(c, SendResult.NOT_SENT, now=c.deadline)
    assert d.next_attempt is None
    assert d.command.state is S.FAILED


@pytest.mark.parametrize("kind", list(DoorCommand))
@pytest.mark.parametrize("result", [SendResult.MAYBE_DELIVERED, SendResult.ACCEPTED_BY_TRANSPORT])
def test_a_request_that_may_have_arrived_is_never_retried(
    kind: DoorCommand, result: SendResult
) -> None:
    c = start_attempt(cmd(kind), plan_first_attempt(cmd(kind)), now=T0)
    d = on_send_outcome(c, result, now=T0)
    assert d.next_attempt is None
    settled = kind.is_setting and result is SendResult.ACCEPTED_BY_TRANSPORT
    assert d.command.state is (S.CONFIRMED if settled else S.SENT)
    assert d.command.may_have_reached
    with pytest.raises(CommandError, match="may have reached"):
        start_attempt(d.command, AttemptPlan(2, Transport.CLOUD), now=T0)


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        (SendResult.REJECTED, FailureReason.REJECTED),
        (SendResult.UNAUTHORIZED, FailureReason.UNAUTHORIZED),
        (SendResult.KEY_REVOKED, FailureReason.KEY_REVOKED),
        (SendResult.RATE_LIMITED, FailureReason.RATE_LIMITED),
        (SendResult.LOCK_OFFLINE, FailureReason.OFFLINE),
    ],
)
def test_refusals_fail_with_their_reason_unless_fallback_is_enabled(
    result: SendResult, reason: FailureReason
) -> None:
    c = start_attempt(cmd(), plan_first_attempt(cmd()), now=T0)
    d = on_send_outcome(c, result, now=T0)
    assert (d.command.state, d.command.reason, d.next_attempt) == (S.FAILED, reason, None)
    lenient = RetryPolicy(fallback_on_refusal=True)
    d2 = on_send_outcome(c, result, now=T0, retry=lenient)
    assert d2.command.state is S.SENDING
    assert d2.next_attempt == AttemptPlan(2, Transport.CLOUD)
    c3 = start_attempt(d2.command, d2.next_attempt, now=T0)
    d3 = on_send_outcome(c3, result, now=T0, retry=lenient)
    assert (d3.command.state, d3.command.reason) == (S.FAILED, reason)


def test_attempt_guards() -> None:
    c = start_attempt(cmd(), plan_first_attempt(cmd()), now=T0)
    with pytest.raises(CommandError, match="in progress"):
        start_attempt(c, AttemptPlan(2, Transport.CLOUD), now=T0)
    with pytest.raises(CommandError, match="no attempt in progress"):
        on_send_outcome(cmd(), SendResult.NOT_SENT, now=T0)
    fresh = cmd()
    with pytest.raises(CommandError, match="out of sequence"):
        start_attempt(fresh, AttemptPlan(2, Transport.CLOUD), now=T0)
    with pytest.raises(CommandError, match="deadline"):
        start_attempt(fresh, plan_first_attempt(fresh), now=fresh.deadline)
    with pytest.raises(CommandError, match="superseded"):
        start_attempt(in_state(S.SUPERSEDED), AttemptPlan(1, Transport.BRIDGE), now=T0)


def test_repeated_transport_in_the_order() -> None:
    retry = RetryPolicy(order=(Transport.BRIDGE, Transport.BRIDGE, Transport.CLOUD))
    c = start_attempt(cmd(), plan_first_attempt(cmd(), retry), now=T0)
    plans = []
    for _ in range(3):
        d = on_send_outcome(c, SendResult.NOT_SENT, now=T0, retry=retry)
        if d.next_attempt is None:
            break
        plans.append(d.next_attempt.transport)
        c = start_attempt(d.command, d.next_attempt, now=T0)
    assert plans == [Transport.BRIDGE, Transport.CLOUD]
    assert d.command.state is S.FAILED


# --- lock events -----------------------------------------------------------------------------


def sent(kind: DoorCommand = DoorCommand.NIGHT_LOCK, key: int | None = BRIDGE_KEY) -> Command:
    c = start_attempt(cmd(kind), plan_first_attempt(cmd(kind)), now=T0, key_local_id=key)
    return on_send_outcome(c, SendResult.ACCEPTED_BY_TRANSPORT, now=T0).command


def ev(kind: EventKind, state: DoorState | None, key: int | None = BRIDGE_KEY) -> LockEventView:
    return LockEventView(kind, state, key)


def test_go_to_then_state_changed_confirms() -> None:
    c = on_lock_event(sent(), ev(EventKind.GO_TO_STATE, DoorState.NIGHT_LOCK), now=T0)
    assert c.state is S.ACCEPTED
    again = on_lock_event(c, ev(EventKind.GO_TO_STATE, DoorState.NIGHT_LOCK), now=T0)
    assert again.state is S.ACCEPTED
    c = on_lock_event(c, ev(EventKind.STATE_CHANGED, DoorState.NIGHT_LOCK), now=T0)
    assert c.state is S.CONFIRMED
    assert [h[0] for h in c.history] == [S.PENDING, S.SENDING, S.SENT, S.ACCEPTED, S.CONFIRMED]


def test_events_not_about_our_command_change_nothing() -> None:
    c = sent()
    for event in [
        ev(EventKind.GO_TO_STATE, DoorState.NIGHT_LOCK, key=42),  # someone else's key
        ev(EventKind.GO_TO_STATE, DoorState.NIGHT_LOCK, key=None),
        ev(EventKind.GO_TO_STATE, DoorState.DAY_LOCK),  # another target
        ev(EventKind.STATE_CHANGED, DoorState.DAY_LOCK),
        ev(EventKind.STATE_CHANGED, DoorState.NIGHT_LOCK, key=None),  # keyless before GO_TO
        ev(EventKind.MOTOR_STALL, DoorState.UNKNOWN, key=42),
        ev(EventKind.OTHER, None),
    ]:
        assert on_lock_event(c, event, now=T0) == c
    pending = cmd()
    assert (
        on_lock_event(pending, ev(EventKind.STATE_CHANGED, DoorState.NIGHT_LOCK), now=T0) == pending
    )
    done = in_state(S.CONFIRMED)
    assert on_lock_event(done, ev(EventKind.MOTOR_STALL, DoorState.UNKNOWN), now=T0) == done


def test_keyless_state_changed_confirms_after_acceptance() -> None:
    c = on_lock_event(sent(), ev(EventKind.GO_TO_STATE, DoorState.NIGHT_LOCK), now=T0)
    c = on_lock_event(c, ev(EventKind.STATE_CHANGED, DoorState.NIGHT_LOCK, key=None), now=T0)
    assert c.state is S.CONFIRMED


def test_motor_stall_fails_stalled() -> None:
    for key in (BRIDGE_KEY, None):
        c = on_lock_event(
            sent(key=BRIDGE_KEY), ev(EventKind.MOTOR_STALL, DoorState.UNKNOWN, key), now=T0
        )
        assert (c.state, c.reason) == (S.FAILED, FailureReason.STALLED)


def test_command_for_the_current_state_confirms_on_go_to() -> None:
    go_to = ev(EventKind.GO_TO_STATE, DoorState.NIGHT_LOCK)
    c = on_lock_event(sent(), go_to, now=T0, current_state=DoorState.NIGHT_LOCK)
    assert c.state is S.CONFIRMED
    other = on_lock_event(sent(), go_to, now=T0, current_state=DoorState.DAY_LOCK)
    assert other.state is S.ACCEPTED
    # An OPEN is not confirmed by a GO_TO: the lock re-latches by itself within seconds.
    open_go = ev(EventKind.GO_TO_STATE, DoorState.OPEN)
    o = on_lock_event(sent(DoorCommand.OPEN), open_go, now=T0, current_state=DoorState.OPEN)
    assert o.state is S.ACCEPTED


def test_lock_events_may_overtake_the_http_answer() -> None:
    c = start_attempt(cmd(), plan_first_attempt(cmd()), now=T0, key_local_id=BRIDGE_KEY)
    c = on_lock_event(c, ev(EventKind.GO_TO_STATE, DoorState.NIGHT_LOCK), now=T0)
    assert c.state is S.ACCEPTED
    d = on_send_outcome(c, SendResult.MAYBE_DELIVERED, now=T0)
    assert d.command.state is S.ACCEPTED
    assert d.next_attempt is None
    assert d.command.attempts[-1].result is SendResult.MAYBE_DELIVERED


def test_key_of_a_fallback_transport_is_recognised() -> None:
    c = start_attempt(cmd(), plan_first_attempt(cmd()), now=T0, key_local_id=BRIDGE_KEY)
    d = on_send_outcome(c, SendResult.NOT_SENT, now=T0)
    assert d.next_attempt is not None
    c = start_attempt(d.command, d.next_attempt, now=T0, key_local_id=CLOUD_KEY)
    c = on_send_outcome(c, SendResult.ACCEPTED_BY_TRANSPORT, now=T0).command
    c = on_lock_event(c, ev(EventKind.GO_TO_STATE, DoorState.NIGHT_LOCK, CLOUD_KEY), now=T0)
    assert c.state is S.ACCEPTED


def test_settings_ignore_bolt_events() -> None:
    c = start_attempt(cmd(DoorCommand.OPEN_HOUSE_ON), AttemptPlan(1, Transport.CLOUD), now=T0)
    assert on_lock_event(c, ev(EventKind.MOTOR_STALL, DoorState.UNKNOWN), now=T0) == c
    assert DoorCommand.OPEN_HOUSE_ON.target is None


# --- deadlines -------------------------------------------------------------------------------


def test_default_and_configured_deadlines() -> None:
    assert cmd(DoorCommand.NIGHT_LOCK).deadline == T0 + timedelta(seconds=30)
    assert cmd(DoorCommand.DAY_LOCK).deadline == T0 + timedelta(seconds=30)
    assert cmd(DoorCommand.OPEN).deadline == T0 + timedelta(seconds=10)
    custom = DeadlinePolicy(lock_unlock=timedelta(seconds=45), open=timedelta(seconds=5))
    assert new_command("x", "L1", DoorCommand.OPEN, now=T0, deadlines=custom).deadline == (
        T0 + timedelta(seconds=5)
    )
    assert custom.for_command(DoorCommand.NIGHT_LOCK) == timedelta(seconds=45)
    assert custom.for_command(DoorCommand.OPEN_HOUSE_OFF) == timedelta(seconds=30)


def test_deadline_expiry_reasons() -> None:
    accepted = on_lock_event(sent(), ev(EventKind.GO_TO_STATE, DoorState.NIGHT_LOCK), now=T0)
    late = accepted.deadline
    assert check_deadline(accepted, now=late - timedelta(microseconds=1)) == accepted
    expired = check_deadline(accepted, now=late)
    assert (expired.state, expired.reason) == (S.EXPIRED, FailureReason.NO_CONFIRMATION)
    assert check_deadline(sent(), now=late).reason is FailureReason.NO_CONFIRMATION
    maybe = start_attempt(cmd(), plan_first_attempt(cmd()), now=T0)
    maybe = on_send_outcome(maybe, SendResult.MAYBE_DELIVERED, now=T0).command
    assert check_deadline(maybe, now=late).reason is FailureReason.NO_RESPONSE
    hanging = start_attempt(cmd(), plan_first_attempt(cmd()), now=T0)
    assert check_deadline(hanging, now=late).reason is FailureReason.NO_RESPONSE
    assert check_deadline(cmd(), now=late).reason is FailureReason.UNREACHABLE
    assert check_deadline(sent(), now=late, lock_online=False).reason is FailureReason.OFFLINE
    done = in_state(S.CONFIRMED)
    assert check_deadline(done, now=late + timedelta(hours=1)) == done


# --- one pending command per lock ------------------------------------------------------------


def test_latest_pending_command_wins() -> None:
    old = cmd(DoorCommand.DAY_LOCK, cid="old")
    new = cmd(DoorCommand.NIGHT_LOCK, cid="new")
    out = supersede(old, new, now=T0)
    assert out.decision is SupersedeDecision.SUPERSEDE
    assert (out.existing.state, out.existing.superseded_by) == (S.SUPERSEDED, "new")
    assert out.new == new


@pytest.mark.parametrize("state", [S.PENDING, S.SENDING, S.SENT, S.ACCEPTED])
def test_equal_commands_coalesce(state: CommandState) -> None:
    existing = in_state(state, DoorCommand.OPEN)
    out = supersede(existing, cmd(DoorCommand.OPEN, cid="again"), now=T0)
    assert out.decision is SupersedeDecision.COALESCE
    assert out.new is None
    assert out.existing == existing


@pytest.mark.parametrize("state", [S.SENDING, S.SENT, S.ACCEPTED])
def test_a_command_on_the_wire_is_never_superseded(state: CommandState) -> None:
    existing = in_state(state, DoorCommand.OPEN)
    out = supersede(existing, cmd(DoorCommand.NIGHT_LOCK, cid="n"), now=T0)
    assert out.decision is SupersedeDecision.QUEUE
    assert out.existing == existing


@pytest.mark.parametrize("state", [S.CONFIRMED, S.FAILED, S.EXPIRED, S.SUPERSEDED])
def test_finished_commands_do_not_conflict(state: CommandState) -> None:
    out = supersede(in_state(state), cmd(DoorCommand.NIGHT_LOCK, cid="n"), now=T0)
    assert out.decision is SupersedeDecision.INDEPENDENT


def test_open_house_setting_and_bolt_commands_use_separate_slots() -> None:
    off = cmd(DoorCommand.OPEN_HOUSE_OFF, cid="off")
    lock = cmd(DoorCommand.NIGHT_LOCK, cid="lock")
    assert supersede(off, lock, now=T0).decision is SupersedeDecision.INDEPENDENT
    on = cmd(DoorCommand.OPEN_HOUSE_ON, cid="on")
    assert supersede(on, off, now=T0).decision is SupersedeDecision.SUPERSEDE


def test_supersede_guards() -> None:
    other_lock = new_command("x", "L2", DoorCommand.OPEN, now=T0)
    with pytest.raises(CommandError, match="one lock"):
        supersede(cmd(), other_lock, now=T0)
    with pytest.raises(CommandError, match="must be pending"):
        supersede(cmd(), in_state(S.SENT), now=T0)


# --- lateness --------------------------------------------------------------------------------


def test_should_skip_boundary() -> None:
    late = timedelta(minutes=15)
    assert not should_skip(T0, T0, late)
    assert not should_skip(T0, T0 + late, late)
    assert should_skip(T0, T0 + late + timedelta(microseconds=1), late)
    assert not should_skip(T0, T0 - timedelta(hours=1), late)


def test_lock_side_actions_are_never_skipped_for_lateness() -> None:
    late = timedelta(minutes=15)
    hours_late = T0 + timedelta(hours=5)
    assert should_skip(T0, hours_late, late)
    assert not should_skip(T0, hours_late, late, locks_door=True)
