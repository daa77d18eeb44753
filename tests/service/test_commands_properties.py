"""Property tests of the command lifecycle: whatever the transports and the lock do, an OPEN
is attempted at most once after it may have been delivered, retries follow only certain
non-delivery, and every step is a legal transition."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from roomkey.service.commands import (
    AttemptPlan,
    Command,
    CommandError,
    DoorCommand,
    DoorState,
    EventKind,
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
    start_attempt,
    supersede,
)

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)

steps = st.one_of(
    st.tuples(st.just("send"), st.sampled_from(list(SendResult))),
    st.tuples(
        st.just("event"),
        st.builds(
            LockEventView,
            kind=st.sampled_from(list(EventKind)),
            state=st.one_of(st.none(), st.sampled_from(list(DoorState))),
            key_local_id=st.sampled_from([None, 1, 2, 42]),
        ),
    ),
    st.tuples(st.just("tick"), st.integers(0, 15)),
    st.tuples(st.just("retry"), st.sampled_from(list(Transport))),
)

retry_policies = st.builds(
    RetryPolicy,
    order=st.lists(st.sampled_from(list(Transport)), min_size=1, max_size=4).map(tuple),
    fallback_on_refusal=st.booleans(),
)


def run(kind: DoorCommand, policy: RetryPolicy, script: list[tuple[str, object]]) -> Command:
    """Drive a command like an executor would, plus an adversarial executor that tries
    extra attempts on its own (the lifecycle must refuse the unsafe ones)."""
    now = T0
    c = new_command("c", "L1", kind, now=now)
    next_plan: AttemptPlan | None = plan_first_attempt(c, policy)
    key = 1
    for step, arg in script:
        if step == "send":
            if next_plan is not None and not c.state.terminal:
                try:
                    c = start_attempt(c, next_plan, now=now, key_local_id=key)
                except CommandError:
                    next_plan = None
                    continue
                assert isinstance(arg, SendResult)
                decision = on_send_outcome(c, arg, now=now, retry=policy)
                c, next_plan = decision.command, decision.next_attempt
                key = 2
        elif step == "event":
            assert isinstance(arg, LockEventView)
            c = on_lock_event(c, arg, now=now, current_state=DoorState.NIGHT_LOCK)
        elif step == "tick":
            assert isinstance(arg, int)
            now += timedelta(seconds=arg)
            c = check_deadline(c, now=now)
        else:
            # An adversarial executor trying to send again on its own.
            assert isinstance(arg, Transport)
            number = len(c.attempts) + 1
            try:
                c = start_attempt(c, AttemptPlan(number, arg), now=now)
            except CommandError:
                continue
            c = on_send_outcome(c, SendResult.MAYBE_DELIVERED, now=now, retry=policy).command
    return c


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(list(DoorCommand)),
    policy=retry_policies,
    script=st.lists(steps, max_size=14),
)
def test_lifecycle_safety(
    kind: DoorCommand, policy: RetryPolicy, script: list[tuple[str, object]]
) -> None:
    c = run(kind, policy, script)
    reached = [a for a in c.attempts if a.result is not None and a.result.may_have_reached]
    # At most one attempt that may have been delivered, and it is the last one.
    assert len(reached) <= 1
    if reached:
        assert c.attempts[-1] is reached[0]
    # A follow-up attempt only after certain non-delivery (or a refusal, when allowed).
    for previous in c.attempts[:-1]:
        assert previous.result is not None
        allowed = previous.result is SendResult.NOT_SENT or (
            policy.fallback_on_refusal and not previous.result.may_have_reached
        )
        assert allowed
    # The history is a chain of legal steps.
    states = [h[0] for h in c.history]
    for a, b in itertools.pairwise(states):
        assert b in legal_targets(a)
    assert [h[1] for h in c.history] == sorted(h[1] for h in c.history)


@settings(max_examples=100, deadline=None)
@given(
    first=st.sampled_from(list(DoorCommand)),
    second=st.sampled_from(list(DoorCommand)),
    sent_first=st.booleans(),
)
def test_supersede_never_touches_a_command_on_the_wire(
    first: DoorCommand, second: DoorCommand, sent_first: bool
) -> None:
    existing = new_command("a", "L1", first, now=T0)
    if sent_first:
        existing = start_attempt(existing, plan_first_attempt(existing), now=T0)
    new = new_command("b", "L1", second, now=T0)
    out = supersede(existing, new, now=T0)
    if out.decision is SupersedeDecision.SUPERSEDE:
        assert not sent_first
        assert out.existing.superseded_by == "b"
    else:
        assert out.existing == existing
    if first is second:
        assert out.decision is SupersedeDecision.COALESCE
        assert out.new is None
