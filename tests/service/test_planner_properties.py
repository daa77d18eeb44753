"""Property tests of the door planner (hypothesis)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from roomkey.service.planner import (
    ActionRole,
    BookingInput,
    LockPlan,
    merge_lock_actions,
    plan_room,
)
from roomkey.service.policy import BookingFilter, DoorPolicy, LockAction, UnlockMode

NOW = datetime(2026, 3, 1, tzinfo=UTC)
# Days around both Europe/Warsaw DST transitions and an ordinary one.
DAYS = [date(2026, 3, 28), date(2026, 3, 29), date(2026, 5, 4), date(2026, 10, 25)]

policies = st.builds(
    DoorPolicy,
    unlock_lead_minutes=st.integers(0, 60),
    lock_lag_minutes=st.integers(0, 60),
    default_slot_minutes=st.integers(15, 180),
    unlock_mode=st.sampled_from(list(UnlockMode)),
    lock_action=st.sampled_from(list(LockAction)),
    bookings=st.sampled_from(list(BookingFilter)),
    merge_gap_minutes=st.integers(0, 90),
)


@st.composite
def booking_lists(draw: st.DrawFn, room: int = 1, max_size: int = 8) -> list[BookingInput]:
    n = draw(st.integers(0, max_size))
    out = []
    for i in range(n):
        out.append(
            BookingInput(
                reservation_id=f"r{room}-{i}",
                room_id=room,
                date=draw(st.sampled_from(DAYS)),
                hour=time(draw(st.integers(0, 23)), draw(st.sampled_from([0, 15, 30, 45]))),
                duration_minutes=draw(st.one_of(st.none(), st.integers(15, 240))),
                status=draw(st.booleans()),
                source=draw(st.sampled_from(["web", "panel", "widget", "api"])),
                deleted=draw(st.booleans()),
            )
        )
    return out


def check_lock_plan(lp: LockPlan) -> None:
    """Structural invariants of one lock's plan."""
    intervals = lp.intervals
    for a, b in itertools.pairwise(intervals):
        assert a.end < b.start, "intervals are disjoint and not adjacent"
        assert b.start - a.end >= max(
            min(w.merge_gap for w in a.windows), min(w.merge_gap for w in b.windows)
        ), "unmerged intervals are at least a merge gap apart"
    for iv in intervals:
        assert iv.start == min(w.start for w in iv.windows)
        assert iv.end == max(w.end for w in iv.windows)
    # Replaying the actions in order: never unlock twice without a lock in between, every
    # unlock is followed by a later lock, and the door ends locked.
    unlocked = False
    unlocked_at: datetime | None = None
    for action in lp.actions:
        if action.role in (ActionRole.UNLOCK, ActionRole.OPEN_HOUSE_ON):
            assert not unlocked, "two unlocks overlap"
            unlocked, unlocked_at = True, action.at
        elif action.role is ActionRole.OPEN:
            unlocked, unlocked_at = True, unlocked_at or action.at
        elif action.role is ActionRole.LOCK:
            assert unlocked
            assert unlocked_at is not None
            assert action.at > unlocked_at, "lock is later than its unlock"
            unlocked, unlocked_at = False, None
    assert not unlocked
    keys = [a.key for a in lp.actions]
    assert len(keys) == len(set(keys))


def counted(b: BookingInput, policy: DoorPolicy) -> bool:
    return not b.deleted and (policy.bookings is BookingFilter.ALL or b.status)


@settings(max_examples=120, deadline=None)
@given(bookings=booking_lists(), policy=policies, locks=st.sampled_from([["L1"], ["L1", "L2"]]))
def test_plan_invariants(
    bookings: list[BookingInput], policy: DoorPolicy, locks: list[str]
) -> None:
    p = plan_room(1, bookings, policy, locks, now=NOW)
    # Deterministic, idempotent and independent of input order.
    again = plan_room(1, list(reversed(bookings)), policy, locks, now=NOW)
    assert again.actions == p.actions
    assert [a.key for a in p.actions] == [a.key for a in again.actions]
    # Exactly the counted bookings have windows; nothing else appears in any action.
    wanted = {b.reservation_id for b in bookings if counted(b, policy)}
    assert {w.reservation_id for w in p.windows} == wanted
    assert {r for a in p.actions for r in a.reservation_ids} == wanted
    by_id = {b.reservation_id: b for b in bookings}
    for w in p.windows:
        b = by_id[w.reservation_id]
        minutes = b.duration_minutes or policy.default_slot_minutes
        assert w.slot_end - w.slot_start == timedelta(minutes=minutes)
        assert w.slot_start - w.start == policy.unlock_lead
        assert w.end - w.slot_end == policy.lock_lag
        # Each window lies inside one interval on every lock.
        for lock in locks:
            assert any(
                iv.start <= w.start and w.end <= iv.end for iv in p.lock_plans[lock].intervals
            )
    for lock in locks:
        check_lock_plan(p.lock_plans[lock])
    if policy.bookings is BookingFilter.PAID:
        unpaid = {b.reservation_id for b in bookings if not b.status}
        assert not unpaid & {r for a in p.actions for r in a.reservation_ids}
    if len(locks) == 2:
        one = [(a.role, a.at, a.reservation_id) for a in p.lock_plans["L1"].actions]
        two = [(a.role, a.at, a.reservation_id) for a in p.lock_plans["L2"].actions]
        assert one == two


@settings(max_examples=80, deadline=None)
@given(
    policy=policies,
    hours=st.lists(st.integers(6, 16), min_size=1, max_size=4),
    data=st.data(),
)
def test_edit_changes_times_not_keys(
    policy: DoorPolicy, hours: list[int], data: st.DataObject
) -> None:
    # One booking per day: each is its own interval, so editing one within its day keeps
    # every key and only moves times.
    days = [date(2026, 6, 1) + timedelta(days=2 * i) for i in range(len(hours))]
    bookings = [
        BookingInput(reservation_id=f"r{i}", room_id=1, date=d, hour=time(h), status=True)
        for i, (d, h) in enumerate(zip(days, hours, strict=True))
    ]
    before = plan_room(1, bookings, policy, ["L1"], now=NOW)
    index = data.draw(st.integers(0, len(bookings) - 1))
    new_hour = data.draw(st.integers(6, 16))
    new_minutes = data.draw(st.one_of(st.none(), st.integers(15, 240)))
    edited = list(bookings)
    edited[index] = bookings[index].model_copy(
        update={"hour": time(new_hour), "duration_minutes": new_minutes}
    )
    after = plan_room(1, edited, policy, ["L1"], now=NOW)
    assert [a.key for a in before.actions] == [a.key for a in after.actions]
    untouched = [a for a in before.actions if f"r{index}" not in a.reservation_ids]
    assert all(a in after.actions for a in untouched)


@settings(max_examples=80, deadline=None)
@given(
    first=booking_lists(room=1, max_size=5),
    second=booking_lists(room=2, max_size=5),
    p1=policies,
    p2=policies,
)
def test_shared_lock_never_locks_a_door_another_room_needs(
    first: list[BookingInput], second: list[BookingInput], p1: DoorPolicy, p2: DoorPolicy
) -> None:
    r1 = plan_room(1, first, p1, ["hall", "a"], now=NOW)
    r2 = plan_room(2, second, p2, ["hall", "b"], now=NOW)
    merged = merge_lock_actions([r1, r2])
    assert set(merged) == {"hall", "a", "b"}
    assert merged["a"].actions == r1.lock_plans["a"].actions
    assert merged["b"].actions == r2.lock_plans["b"].actions
    hall = merged["hall"]
    check_lock_plan(hall)
    locks = [a for a in hall.actions if a.role is ActionRole.LOCK]
    for plan in (r1, r2):
        for w in plan.windows:
            # No lock of the shared door falls inside any room's window.
            assert not any(w.start <= lock.at < w.end for lock in locks)
    assert merge_lock_actions([r2, r1]) == merged
