"""Stored-vs-planned diff: in-place updates, supersedes, door-held-open closing, OPEN never
twice, lateness, and a property test that replays random edits over time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from roomkey.service.commands import DoorCommand
from roomkey.service.plan_diff import (
    ActionChanges,
    ActionStatus,
    ChangeReason,
    DiffError,
    StoredAction,
    diff_actions,
)
from roomkey.service.planner import (
    ActionRole,
    BookingInput,
    PlannedAction,
    merge_lock_actions,
    plan_room,
)
from roomkey.service.policy import DoorPolicy, UnlockMode

DAY = "2026-05-04"  # CEST: local 10:00 = 08:00 UTC
LATE = timedelta(minutes=15)
Store = dict[tuple[str, int], StoredAction]


def utc(hhmm: str) -> datetime:
    h, m = (int(x) for x in hhmm.split(":"))
    return datetime(2026, 5, 4, h - 2, m, tzinfo=UTC)  # local wall clock → UTC (CEST)


def bk(rid: str, hour: str, *, room: int = 1, **kw: object) -> BookingInput:
    data: dict[str, object] = {
        "reservation_id": rid,
        "room_id": room,
        "date": DAY,
        "hour": hour,
        "status": 1,
    }
    data.update(kw)
    return BookingInput.model_validate(data)


def planned(
    bookings: list[BookingInput], policy: DoorPolicy | None = None, room: int = 1
) -> list[PlannedAction]:
    p = plan_room(room, bookings, policy or DoorPolicy(), ["L1"], now=utc("02:00"))
    return list(p.actions)


def as_stored(action: PlannedAction, status: ActionStatus, generation: int = 0) -> StoredAction:
    return StoredAction(
        key=action.key,
        generation=generation,
        room_id=action.room_id,
        lock_id=action.lock_id,
        role=action.role,
        command=action.command,
        at=action.at,
        status=status,
        reservation_id=action.reservation_id,
    )


def apply(store: Store, changes: ActionChanges) -> Store:
    """What storage does with a diff (insert, move, supersede, skip)."""
    out = dict(store)
    for c in changes.create:
        assert (c.action.key, c.generation) not in out, "a create never overwrites"
        out[(c.action.key, c.generation)] = as_stored(c.action, ActionStatus.PENDING, c.generation)
    for u in changes.update:
        old = out[(u.key, u.generation)]
        assert old.status is ActionStatus.PENDING, "only pending actions move"
        out[(u.key, u.generation)] = replace(old, at=u.at, command=u.command)
    for r in changes.supersede:
        old = out[(r.key, r.generation)]
        assert old.status is ActionStatus.PENDING, "only pending actions are superseded"
        out[(r.key, r.generation)] = replace(old, status=ActionStatus.SUPERSEDED)
    for s in changes.skip:
        if s.action is None:
            old = out[(s.key, s.generation)]
            assert old.status is ActionStatus.PENDING
            out[(s.key, s.generation)] = replace(
                old, status=ActionStatus.SKIPPED, at=s.at, command=s.command
            )
        else:
            assert (s.key, s.generation) not in out
            out[(s.key, s.generation)] = replace(
                as_stored(s.action, ActionStatus.SKIPPED, s.generation)
            )
    return out


def execute_due(store: Store, now: datetime) -> Store:
    """The executor: every pending action due by ``now`` runs (and ends as done)."""
    return {
        ref: replace(s, status=ActionStatus.DONE)
        if s.status is ActionStatus.PENDING and s.at <= now
        else s
        for ref, s in store.items()
    }


def diff(store: Store, plan: list[PlannedAction], now: datetime) -> ActionChanges:
    return diff_actions(list(store.values()), plan, now=now, max_lateness=LATE)


def sync(store: Store, plan: list[PlannedAction], now: datetime) -> Store:
    return apply(store, diff(store, plan, now))


def pending(store: Store) -> dict[str, datetime]:
    return {s.key: s.at for s in store.values() if s.status is ActionStatus.PENDING}


# --- basics ----------------------------------------------------------------------------------


def test_fresh_plan_is_created_and_then_unchanged() -> None:
    plan = planned([bk("a", "10:00")])
    changes = diff({}, plan, utc("06:00"))
    assert [(c.action.key, c.generation, c.reason) for c in changes.create] == [
        ("1:L1:unlock:a", 0, ChangeReason.NEW),
        ("1:L1:lock:a", 0, ChangeReason.NEW),
    ]
    store = apply({}, changes)
    again = diff(store, plan, utc("06:00"))
    assert again.empty
    assert {k.reason for k in again.keep} == {ChangeReason.UNCHANGED}


def test_edit_moves_pending_actions_in_place() -> None:
    store = sync({}, planned([bk("a", "10:00")]), utc("06:00"))
    changes = diff(store, planned([bk("a", "12:00", duration_minutes=90)]), utc("06:30"))
    assert changes.create == ()
    assert [(u.key, u.generation, u.previous_at, u.at) for u in changes.update] == [
        ("1:L1:unlock:a", 0, utc("09:50"), utc("11:50")),
        ("1:L1:lock:a", 0, utc("11:15"), utc("13:45")),
    ]
    assert {u.reason for u in changes.update} == {ChangeReason.RESCHEDULED}


def test_policy_change_updates_the_command_in_place() -> None:
    store = sync({}, planned([bk("a", "10:00")]), utc("06:00"))
    relaxed = DoorPolicy(lock_action="day_lock")
    changes = diff(store, planned([bk("a", "10:00")], relaxed), utc("06:00"))
    (update,) = changes.update
    assert (update.key, update.command, update.at) == (
        "1:L1:lock:a",
        DoorCommand.DAY_LOCK,
        utc("11:15"),
    )


def test_delete_before_the_interval_supersedes_everything() -> None:
    store = sync({}, planned([bk("a", "10:00")]), utc("06:00"))
    changes = diff(store, [], utc("07:00"))
    assert {(r.key, r.reason) for r in changes.supersede} == {
        ("1:L1:unlock:a", ChangeReason.NOT_PLANNED),
        ("1:L1:lock:a", ChangeReason.NOT_PLANNED),
    }
    assert changes.create == ()
    assert changes.update == ()


def test_move_to_another_room_supersedes_old_keys_and_creates_new() -> None:
    store = sync({}, planned([bk("a", "10:00")]), utc("06:00"))
    new_plan = planned([bk("a", "10:00", room=2)], room=2)
    changes = diff(store, new_plan, utc("07:00"))
    assert {r.key for r in changes.supersede} == {"1:L1:unlock:a", "1:L1:lock:a"}
    assert {c.action.key for c in changes.create} == {"2:L1:unlock:a", "2:L1:lock:a"}


def test_executed_action_is_never_recreated() -> None:
    plan = planned([bk("a", "10:00")])
    store = execute_due(sync({}, plan, utc("06:00")), utc("09:50"))
    changes = diff(store, plan, utc("09:51"))
    assert changes.create == ()
    assert [k.key for k in changes.keep] == ["1:L1:lock:a"]


def test_merge_and_split_supersede_and_rearm_the_inner_pair() -> None:
    a, b = bk("a", "10:00"), bk("b", "13:00")
    store = sync({}, planned([a, b]), utc("06:00"))
    merged = planned([a, bk("b", "11:00")])
    changes = diff(store, merged, utc("06:10"))
    assert {r.key for r in changes.supersede} == {"1:L1:lock:a", "1:L1:unlock:b"}
    assert {(u.key, u.at) for u in changes.update} == {("1:L1:lock:b", utc("12:15"))}
    store = apply(store, changes)
    # Split again: the superseded pair comes back as a new generation.
    changes = diff(store, planned([a, b]), utc("06:20"))
    assert {(c.action.key, c.generation, c.reason) for c in changes.create} == {
        ("1:L1:lock:a", 1, ChangeReason.REARM),
        ("1:L1:unlock:b", 1, ChangeReason.REARM),
    }


# --- the door is held open -------------------------------------------------------------------


def test_delete_while_active_locks_now() -> None:
    store = execute_due(sync({}, planned([bk("a", "10:00")]), utc("06:00")), utc("09:50"))
    now = utc("10:30")
    changes = diff(store, [], now)
    assert [(u.key, u.at, u.reason) for u in changes.update] == [
        ("1:L1:lock:a", now, ChangeReason.CLOSE_DOOR)
    ]
    assert changes.supersede == ()
    store = apply(store, changes)
    assert diff(store, [], now).empty


def test_delete_while_active_keeps_open_when_another_booking_covers_now() -> None:
    a, b = bk("a", "10:00"), bk("b", "10:30")
    store = execute_due(sync({}, planned([a, b]), utc("06:00")), utc("09:50"))
    assert pending(store) == {"1:L1:lock:b": utc("11:45")}
    changes = diff(store, planned([b]), utc("10:25"))
    assert changes.create == ()
    assert changes.update == ()
    assert changes.supersede == ()
    assert [k.key for k in changes.keep] == ["1:L1:lock:b"]
    # The other way round: delete b, a's lock (superseded when they merged) comes back.
    changes = diff(store, planned([a]), utc("10:25"))
    assert [(c.action.key, c.generation, c.action.at) for c in changes.create] == [
        ("1:L1:lock:a", 0, utc("11:15"))
    ]
    assert [(r.key, r.reason) for r in changes.supersede] == [
        ("1:L1:lock:b", ChangeReason.NOT_PLANNED)
    ]


def test_delete_while_active_keeps_open_when_the_next_booking_is_within_the_gap() -> None:
    a, b = bk("a", "10:00"), bk("b", "11:30")  # windows 09:50–11:15 and 11:20–12:45: merged
    store = execute_due(sync({}, planned([a, b]), utc("06:00")), utc("09:50"))
    now = utc("11:00")  # a deleted; b's window starts in 20 min < 30 min merge gap
    changes = diff(store, planned([b]), now)
    assert changes.update == ()
    assert {c.action.key for c in changes.create} == {"1:L1:unlock:b"}
    assert [k.key for k in changes.keep] == ["1:L1:lock:b"]
    # With b further away, the door is locked now and unlocked again for b.
    later = diff(store, planned([bk("b", "12:30")]), now)
    assert [(u.key, u.at, u.reason) for u in later.update] == [
        ("1:L1:lock:b", now, ChangeReason.CLOSE_DOOR)
    ]
    assert {(c.action.key, c.generation, c.action.at) for c in later.create} == {
        ("1:L1:unlock:b", 0, utc("12:20")),
        ("1:L1:lock:b", 1, utc("13:45")),
    }


def test_moving_an_active_booking_later_locks_now_and_rearms() -> None:
    store = execute_due(sync({}, planned([bk("a", "10:00")]), utc("06:00")), utc("09:50"))
    now = utc("10:30")
    changes = diff(store, planned([bk("a", "12:00")]), now)
    assert [(u.key, u.generation, u.at) for u in changes.update] == [("1:L1:lock:a", 0, now)]
    assert {(c.action.key, c.generation, c.action.at, c.reason) for c in changes.create} == {
        ("1:L1:unlock:a", 1, utc("11:50"), ChangeReason.REARM),
        ("1:L1:lock:a", 1, utc("13:15"), ChangeReason.REARM),
    }
    store = apply(store, changes)
    # Re-planning before the closing lock ran changes nothing.
    assert diff(store, planned([bk("a", "12:00")]), now + timedelta(seconds=5)).empty
    store = execute_due(store, now + timedelta(seconds=5))
    assert diff(store, planned([bk("a", "12:00")]), now + timedelta(seconds=6)).empty


def test_moving_an_active_booking_earlier_locks_now_without_a_second_unlock() -> None:
    store = execute_due(sync({}, planned([bk("a", "10:00")]), utc("06:00")), utc("09:50"))
    now = utc("10:30")
    changes = diff(store, planned([bk("a", "09:00")]), now)
    assert [(u.key, u.at) for u in changes.update] == [("1:L1:lock:a", now)]
    assert changes.create == ()
    assert changes.skip == ()


def test_extending_an_active_booking_moves_its_lock() -> None:
    store = execute_due(sync({}, planned([bk("a", "10:00")]), utc("06:00")), utc("09:50"))
    changes = diff(store, planned([bk("a", "10:00", duration_minutes=180)]), utc("10:30"))
    assert [(u.key, u.at) for u in changes.update] == [("1:L1:lock:a", utc("13:15"))]
    assert changes.create == ()


def test_closing_lock_runs_however_late() -> None:
    store = execute_due(sync({}, planned([bk("a", "10:00")]), utc("06:00")), utc("09:50"))
    now = utc("14:00")  # roomkey was down through the lock time
    changes = diff(store, planned([bk("a", "10:00")]), now)
    assert [(u.key, u.at, u.reason) for u in changes.update] == [
        ("1:L1:lock:a", now, ChangeReason.CLOSE_DOOR)
    ]
    assert changes.skip == ()


def test_closing_lock_is_created_when_none_is_pending() -> None:
    plan = planned([bk("a", "10:00")])
    store = execute_due(sync({}, plan, utc("06:00")), utc("09:50"))
    store = {ref: s for ref, s in store.items() if s.role is not ActionRole.LOCK}
    now = utc("10:30")
    changes = diff_actions(
        list(store.values()), [], now=now, max_lateness=LATE, lock_command=DoorCommand.DAY_LOCK
    )
    ((c),) = changes.create
    assert (c.action.key, c.action.command, c.action.at, c.reason) == (
        "1:L1:lock:a",
        DoorCommand.DAY_LOCK,
        now,
        ChangeReason.CLOSE_DOOR,
    )


def test_open_house_held_on_is_switched_off_and_locked() -> None:
    house = DoorPolicy(unlock_mode=UnlockMode.OPEN_HOUSE)
    plan = planned([bk("a", "10:00")], house)
    store = execute_due(sync({}, plan, utc("06:00")), utc("09:50"))
    now = utc("10:10")
    changes = diff(store, [], now)
    assert {(u.key, u.at) for u in changes.update} == {
        ("1:L1:open_house_off:a", now),
        ("1:L1:lock:a", now),
    }
    # Nothing pending at all: both are created.
    bare = {r: s for r, s in store.items() if s.status is not ActionStatus.PENDING}
    created = diff(bare, [], now).create
    assert [(c.action.role, c.action.command) for c in created] == [
        (ActionRole.OPEN_HOUSE_OFF, DoorCommand.OPEN_HOUSE_OFF),
        (ActionRole.LOCK, DoorCommand.NIGHT_LOCK),
    ]


def test_running_unlock_counts_as_open() -> None:
    plan = planned([bk("a", "10:00")])
    store = sync({}, plan, utc("06:00"))
    store = {
        ref: replace(s, status=ActionStatus.RUNNING) if s.role is ActionRole.UNLOCK else s
        for ref, s in store.items()
    }
    changes = diff(store, [], utc("09:50"))
    assert [(u.key, u.reason) for u in changes.update] == [("1:L1:lock:a", ChangeReason.CLOSE_DOOR)]


# --- OPEN never twice ------------------------------------------------------------------------


def test_open_is_never_planned_twice_for_a_booking() -> None:
    policy = DoorPolicy(unlock_mode=UnlockMode.OPEN)
    store = execute_due(sync({}, planned([bk("a", "10:00")], policy), utc("06:00")), utc("10:00"))
    moved = planned([bk("a", "10:40")], policy)
    changes = diff(store, moved, utc("10:05"))
    assert all(c.action.role is not ActionRole.OPEN for c in changes.create)
    assert [(u.key, u.at) for u in changes.update] == [("1:L1:lock:a", utc("11:55"))]
    # A pending duplicate OPEN for that booking is superseded.
    dup = as_stored(moved[0], ActionStatus.PENDING, generation=1)
    changes = diff({**store, (dup.key, 1): dup}, moved, utc("10:05"))
    assert [(r.key, r.generation, r.reason) for r in changes.supersede] == [
        ("1:L1:open:a", 1, ChangeReason.OPEN_ALREADY_SENT)
    ]


def test_open_failed_before_sending_may_be_planned_again() -> None:
    policy = DoorPolicy(unlock_mode=UnlockMode.OPEN)
    plan = planned([bk("a", "10:00")], policy)
    store = sync({}, plan, utc("06:00"))
    store = {
        r: replace(s, status=ActionStatus.NOT_SENT) if s.role is ActionRole.OPEN else s
        for r, s in store.items()
    }
    changes = diff(store, planned([bk("a", "10:30")], policy), utc("10:05"))
    assert [(c.action.key, c.generation) for c in changes.create] == [("1:L1:open:a", 1)]


# --- lateness --------------------------------------------------------------------------------


def test_new_actions_past_max_lateness_are_skipped_and_reported() -> None:
    plan = planned([bk("a", "10:00")])
    changes = diff({}, plan, utc("10:06"))  # unlock due 09:50: 16 min late
    (skip,) = changes.skip
    assert (skip.key, skip.reason, skip.late_by, skip.action) == (
        "1:L1:unlock:a",
        ChangeReason.LATE,
        timedelta(minutes=16),
        plan[0],
    )
    assert [c.action.key for c in changes.create] == ["1:L1:lock:a"]
    store = apply({}, changes)
    assert diff(store, plan, utc("10:07")).empty  # reported once


def test_overdue_actions_within_lateness_still_run() -> None:
    plan = planned([bk("a", "10:00")])
    changes = diff({}, plan, utc("10:05"))
    assert [c.action.key for c in changes.create] == ["1:L1:unlock:a", "1:L1:lock:a"]
    assert changes.skip == ()


def test_pending_actions_past_lateness_after_downtime_are_skipped() -> None:
    plan = planned([bk("a", "10:00")])
    store = sync({}, plan, utc("06:00"))
    changes = diff(store, plan, utc("10:30"))
    assert [(s.key, s.action, s.reason) for s in changes.skip] == [
        ("1:L1:unlock:a", None, ChangeReason.LATE)
    ]
    # The whole interval passed while down: the lock was never needed (door not unlocked).
    over = diff(store, plan, utc("12:00"))
    assert {(s.key, s.reason) for s in over.skip} == {
        ("1:L1:unlock:a", ChangeReason.INTERVAL_OVER),
        ("1:L1:lock:a", ChangeReason.LATE),
    }


def test_shared_lock_plan_feeds_the_diff() -> None:
    r1 = plan_room(1, [bk("a", "10:00", room=1)], DoorPolicy(), ["L1"], now=utc("02:00"))
    r2 = plan_room(2, [bk("b", "11:20", room=2)], DoorPolicy(), ["L1"], now=utc("02:00"))
    store = sync({}, list(merge_lock_actions([r1, r2])["L1"].actions), utc("06:00"))
    assert pending(store) == {"1:L1:unlock:a": utc("09:50"), "2:L1:lock:b": utc("12:35")}


def test_diff_input_errors() -> None:
    plan = planned([bk("a", "10:00")])
    with pytest.raises(DiffError, match="unique"):
        diff_actions([], plan + plan, now=utc("06:00"), max_lateness=LATE)
    with pytest.raises(DiffError, match="aware"):
        diff_actions([], plan, now=datetime(2026, 5, 4), max_lateness=LATE)


# --- property: random edits over a day -------------------------------------------------------

edits = st.lists(
    st.tuples(
        st.integers(0, 45),  # minutes to advance
        st.sampled_from(["a", "b", "c"]),
        st.one_of(
            st.none(),  # delete
            st.tuples(
                st.integers(8, 11),
                st.sampled_from([0, 20, 40]),
                st.integers(20, 120),
                st.sampled_from([1, 2]),  # room (used when the lock is shared)
            ),
        ),
    ),
    max_size=15,
)


@settings(max_examples=150, deadline=None)
@example(
    script=[(0, "a", (8, 0, 60, 1)), (30, "a", (9, 0, 60, 1))],
    mode=UnlockMode.OPEN,
    gap=30,
    shared=False,
)
@example(
    script=[(0, "a", (8, 0, 60, 1)), (30, "a", None)],
    mode=UnlockMode.OPEN_HOUSE,
    gap=0,
    shared=False,
)
@example(
    script=[(0, "a", (8, 0, 60, 1)), (0, "b", (9, 0, 60, 2)), (30, "a", None)],
    mode=UnlockMode.DAY_LOCK,
    gap=30,
    shared=True,
)
@given(
    script=edits,
    mode=st.sampled_from(list(UnlockMode)),
    gap=st.sampled_from([0, 30]),
    shared=st.booleans(),
)
def test_random_edits_keep_the_door_safe(
    script: list[tuple[int, str, tuple[int, int, int, int] | None]],
    mode: UnlockMode,
    gap: int,
    shared: bool,
) -> None:
    """Random adds, edits, moves (time and room) and deletes while time passes and due
    actions run. With ``shared``, two rooms with different policies share the lock."""
    policies = {
        1: DoorPolicy(unlock_mode=mode, merge_gap_minutes=gap),
        2: DoorPolicy(unlock_lead_minutes=5, lock_lag_minutes=20, merge_gap_minutes=0),
    }
    bookings: dict[str, BookingInput] = {}
    store: Store = {}
    now = utc("07:40")

    def current_plan() -> list[PlannedAction]:
        plans = [
            plan_room(room, list(bookings.values()), policy, ["L1"], now=utc("02:00"))
            for room, policy in policies.items()
        ]
        return list(merge_lock_actions(plans)["L1"].actions)

    def step(at: datetime) -> None:
        nonlocal store
        plan = current_plan()
        store = apply(store, diff(store, plan, at))
        assert diff(store, plan, at).empty, "a diff applied once leaves nothing to do"
        keys = [(s.key, s.generation) for s in store.values()]
        assert len(keys) == len(set(keys))
        locks_due = [
            s
            for s in store.values()
            if s.status is ActionStatus.PENDING and s.role is ActionRole.LOCK
        ]
        if door_held_open(store):
            # Whenever roomkey left the door unlocked, a lock is scheduled ...
            assert locks_due
            # ... but never one that locks it now during a planned interval.
            if any(p.interval_start <= at < p.interval_end for p in plan):
                assert all(s.at > at for s in locks_due)

    for advance, rid, change in script:
        # Time passes: due actions run, re-planning in between (reconciliation).
        end = now + timedelta(minutes=advance)
        while now < end:
            now = min(end, now + timedelta(minutes=5))
            store = execute_due(store, now)
            step(now)
        if change is None:
            bookings.pop(rid, None)
        else:
            h, m, minutes, room = change
            bookings[rid] = bk(
                rid, f"{h:02d}:{m:02d}", duration_minutes=minutes, room=room if shared else 1
            )
        step(now)
        store = execute_due(store, now)

    # The day runs out (every planned action comes due), then everything is cancelled:
    # the door must end up locked with nothing left to do.
    while now < utc("14:30"):  # after the latest possible lock (11:40 + 120 + 15 min)
        now += timedelta(minutes=30)
        store = execute_due(store, now)
        step(now)
    bookings.clear()
    step(now)
    store = execute_due(store, now)
    step(now)
    assert not door_held_open(store)
    assert pending(store) == {}
    # An OPEN ran at most once per booking.
    opens = [s.key for s in store.values() if s.status.may_have_acted and s.role is ActionRole.OPEN]
    assert len(opens) == len(set(opens))


def door_held_open(store: Store) -> bool:
    """The last executed bolt (or open-house) action left the door passable."""
    acted = sorted(
        (s for s in store.values() if s.status.may_have_acted),
        key=lambda s: (s.at, s.role.order),
    )
    bolt = [s for s in acted if s.role in (ActionRole.UNLOCK, ActionRole.OPEN, ActionRole.LOCK)]
    house = [s for s in acted if s.role in (ActionRole.OPEN_HOUSE_ON, ActionRole.OPEN_HOUSE_OFF)]
    return bool(bolt and bolt[-1].role.unlocking) or bool(house and house[-1].role.unlocking)
