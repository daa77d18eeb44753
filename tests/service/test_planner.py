"""Unit tests of the door planner: windows, filters, merging, keys, modes, DST, shared locks."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from roomkey.service.commands import DoorCommand
from roomkey.service.planner import (
    ActionRole,
    BookingInput,
    IgnoreReason,
    PlannedAction,
    PlannerError,
    RoomPlan,
    action_key,
    booking_window,
    merge_lock_actions,
    plan_room,
)
from roomkey.service.policy import BookingFilter, DoorPolicy, LockAction, UnlockMode
from roomkey.service.slots import (
    LocalTimeKind,
    SlotError,
    classify_local,
    local_to_utc,
    parse_date,
    parse_hour,
    resolve_timezone,
    slot_for,
)

WARSAW = ZoneInfo("Europe/Warsaw")
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DAY = "2026-05-04"  # CEST, UTC+2


def booking(rid: str, hour: str, *, day: str = DAY, room: int = 1, **kw: object) -> BookingInput:
    data: dict[str, object] = {
        "reservation_id": rid,
        "room_id": room,
        "date": day,
        "hour": hour,
        "status": 1,
    }
    data.update(kw)
    return BookingInput.model_validate(data)


def local(day: str, hour: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), time.fromisoformat(hour), WARSAW).astimezone(
        UTC
    )


def plan(
    bookings: list[BookingInput],
    policy: DoorPolicy | None = None,
    locks: tuple[str, ...] = ("L1",),
    room: int = 1,
) -> RoomPlan:
    return plan_room(room, bookings, policy or DoorPolicy(), list(locks), now=NOW)


def by_role(actions: tuple[PlannedAction, ...], role: ActionRole) -> list[PlannedAction]:
    return [a for a in actions if a.role is role]


# --- input model -----------------------------------------------------------------------------


def test_booking_input_accepts_lockme_shapes() -> None:
    b = BookingInput.model_validate(
        {
            "reservation_id": 123,
            "room_id": "5",
            "date": "2026-05-04",
            "hour": "10:30:00",
            "status": "1",
            "source": "web",
            "duration_minutes": 90,
        }
    )
    assert b.reservation_id == "123"
    assert b.room_id == 5
    assert b.date == date(2026, 5, 4)
    assert b.hour == time(10, 30)
    assert b.paid is True
    assert BookingInput.model_validate({**b.model_dump(), "status": "0"}).paid is False
    assert booking("x", "10:30").hour == time(10, 30)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("date", "2026-13-01"),
        ("date", "04.05.2026"),
        ("hour", "25:00"),
        ("hour", "10h30"),
        ("duration_minutes", 0),
        ("reservation_id", ""),
        ("created_at", datetime(2026, 5, 1, 10, 0)),
    ],
)
def test_booking_input_rejects_bad_values_with_the_field_named(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        BookingInput.model_validate(
            {"reservation_id": "r1", "room_id": 1, "date": DAY, "hour": "10:00", field: value}
        )
    assert field in str(info.value)


def test_slot_helpers_reject_bad_input() -> None:
    with pytest.raises(SlotError):
        resolve_timezone("Mars/Olympus")
    with pytest.raises(SlotError):
        slot_for("2026-05-04", "10:00", timedelta(0))
    with pytest.raises(SlotError):
        parse_date(datetime(2026, 5, 4, 10, 0))
    with pytest.raises(SlotError):
        parse_hour(time(10, 0, tzinfo=UTC))
    assert parse_hour(" 07:05 ") == time(7, 5)


# --- windows and filters ---------------------------------------------------------------------


def test_window_is_slot_minus_lead_plus_lag() -> None:
    policy = DoorPolicy(unlock_lead_minutes=10, lock_lag_minutes=15, default_slot_minutes=60)
    w = booking_window(booking("r1", "10:00"), policy)
    start = local(DAY, "10:00")
    assert (w.slot_start, w.slot_end) == (start, start + timedelta(minutes=60))
    assert w.start == start - timedelta(minutes=10)
    assert w.end == start + timedelta(minutes=75)
    w90 = booking_window(booking("r2", "10:00", duration_minutes=90), policy)
    assert w90.slot_end - w90.slot_start == timedelta(minutes=90)


def test_day_lock_plan_for_one_paid_booking() -> None:
    p = plan([booking("r1", "10:00")])
    unlock, lock = p.actions
    assert (unlock.role, unlock.command) == (ActionRole.UNLOCK, DoorCommand.DAY_LOCK)
    assert (lock.role, lock.command) == (ActionRole.LOCK, DoorCommand.NIGHT_LOCK)
    assert unlock.at == local(DAY, "09:50")
    assert lock.at == local(DAY, "11:15")
    assert unlock.key == action_key(1, "L1", ActionRole.UNLOCK, "r1") == "1:L1:unlock:r1"
    assert lock.key == "1:L1:lock:r1"
    assert unlock.reservation_ids == ("r1",)


def test_unpaid_carts_never_open_under_paid_but_do_under_all() -> None:
    cart = booking("cart", "10:00", status=0, source="web")
    assert plan([cart]).actions == ()
    assert plan([cart]).ignored[0].reason is IgnoreReason.UNPAID
    everything = DoorPolicy(bookings=BookingFilter.ALL)
    assert len(plan([cart], everything).actions) == 2


def test_deleted_and_lapsed_never_open() -> None:
    everything = DoorPolicy(bookings=BookingFilter.ALL)
    deleted = booking("d", "10:00", deleted=True)
    lapsed = booking("l", "12:00", status=0, lapsed=True)
    old_cart = booking("c", "14:00", status=0, source="web", created_at=NOW - timedelta(minutes=20))
    fresh_cart = booking(
        "f", "16:00", status=0, source="web", created_at=NOW - timedelta(minutes=19)
    )
    old_panel = booking("p", "18:00", status=0, source="panel", created_at=NOW - timedelta(hours=5))
    p = plan([deleted, lapsed, old_cart, fresh_cart, old_panel], everything)
    reasons = {i.reservation_id: i.reason for i in p.ignored}
    assert reasons == {
        "d": IgnoreReason.DELETED,
        "l": IgnoreReason.LAPSED,
        "c": IgnoreReason.LAPSED,
    }
    assert {w.reservation_id for w in p.windows} == {"f", "p"}
    # A paid booking is never a lapsed cart, whatever its age.
    paid_old = booking("x", "10:00", source="web", created_at=NOW - timedelta(days=3))
    assert plan([paid_old]).windows[0].reservation_id == "x"
    assert plan([booking("y", "10:00", deleted=True)]).actions == ()


def test_booking_of_another_room_is_ignored() -> None:
    p = plan([booking("r1", "10:00", room=2)], room=1)
    assert p.actions == ()
    assert p.ignored[0].reason is IgnoreReason.OTHER_ROOM


def test_planner_input_errors() -> None:
    with pytest.raises(PlannerError, match="twice"):
        plan([booking("r1", "10:00"), booking("r1", "11:00")])
    with pytest.raises(PlannerError, match="duplicate lock"):
        plan([booking("r1", "10:00")], locks=("L1", "L1"))
    with pytest.raises(PlannerError, match="aware"):
        plan_room(1, [], DoorPolicy(), ["L1"], now=datetime(2026, 5, 1))
    with pytest.raises(PlannerError, match="timezone"):
        plan_room(1, [booking("r1", "10:00")], DoorPolicy(), ["L1"], now=NOW, tz="Nowhere/X")


# --- merging ---------------------------------------------------------------------------------


def test_overlapping_bookings_make_one_interval() -> None:
    p = plan([booking("a", "10:00", duration_minutes=150), booking("b", "11:00")])
    assert [a.key for a in p.actions] == ["1:L1:unlock:a", "1:L1:lock:a"]
    assert p.actions[-1].at == local(DAY, "12:45")
    # Equal ends: the lock is anchored on the highest reservation id (deterministic).
    tie = plan([booking("a", "10:00", duration_minutes=120), booking("b", "11:00")])
    assert [a.key for a in tie.actions] == ["1:L1:unlock:a", "1:L1:lock:b"]
    assert p.actions[0].reservation_ids == ("a", "b")


def test_back_to_back_bookings_keep_the_door_unlocked() -> None:
    p = plan([booking("a", "10:00"), booking("b", "11:00")])
    assert [(a.role, a.reservation_id) for a in p.actions] == [
        (ActionRole.UNLOCK, "a"),
        (ActionRole.LOCK, "b"),
    ]


@pytest.mark.parametrize("merge_gap", [0, 1, 30, 45])
def test_merge_gap_boundary(merge_gap: int) -> None:
    policy = DoorPolicy(unlock_lead_minutes=10, lock_lag_minutes=15, merge_gap_minutes=merge_gap)
    first = booking("a", "10:00")  # window ends 11:15
    a_end = booking_window(first, policy).end

    def second_at_gap(gap: int) -> BookingInput:
        start = (a_end + timedelta(minutes=gap) + policy.unlock_lead).astimezone(WARSAW)
        return booking("b", start.strftime("%H:%M"))

    equal = plan([first, second_at_gap(merge_gap)], policy)
    windows = equal.windows
    assert windows[1].start - windows[0].end == timedelta(minutes=merge_gap)
    intervals = equal.lock_plans["L1"].intervals
    # Adjacent windows (gap 0) always merge; otherwise a gap equal to merge_gap does not.
    assert len(intervals) == (1 if merge_gap == 0 else 2)
    if merge_gap > 0:
        below = plan([first, second_at_gap(merge_gap - 1)], policy)
        assert len(below.lock_plans["L1"].intervals) == 1
    above = plan([first, second_at_gap(merge_gap + 1)], policy)
    assert len(above.lock_plans["L1"].intervals) == 2


def test_merging_and_splitting_change_only_the_inner_pair() -> None:
    a, b = booking("a", "10:00"), booking("b", "13:00")
    apart = {x.key for x in plan([a, b]).actions}
    assert apart == {"1:L1:unlock:a", "1:L1:lock:a", "1:L1:unlock:b", "1:L1:lock:b"}
    b_moved = booking("b", "11:00")
    together = {x.key for x in plan([a, b_moved]).actions}
    assert together == {"1:L1:unlock:a", "1:L1:lock:b"}


def test_editing_a_booking_keeps_keys_and_moves_times() -> None:
    before = plan([booking("a", "10:00"), booking("z", "18:00")])
    after = plan([booking("a", "12:30", duration_minutes=30), booking("z", "18:00")])
    assert [x.key for x in before.actions] == [x.key for x in after.actions]
    moved = {x.key: x.at for x in after.actions}
    assert moved["1:L1:unlock:a"] == local(DAY, "12:20")
    assert moved["1:L1:lock:a"] == local(DAY, "13:15")
    # Moving to another date keeps the keys too.
    other_day = plan([booking("a", "10:00", day="2026-05-09"), booking("z", "18:00")])
    assert {x.key for x in other_day.actions} == {x.key for x in before.actions}


def test_plan_is_independent_of_input_order() -> None:
    items = [booking("c", "15:00"), booking("a", "10:00"), booking("b", "10:30")]
    assert plan(items).actions == plan(list(reversed(items))).actions


# --- unlock modes ----------------------------------------------------------------------------


def test_open_house_mode() -> None:
    policy = DoorPolicy(unlock_mode=UnlockMode.OPEN_HOUSE)
    p = plan([booking("a", "10:00"), booking("b", "11:00")], policy)
    assert [(x.role, x.command, x.reservation_id) for x in p.actions] == [
        (ActionRole.OPEN_HOUSE_ON, DoorCommand.OPEN_HOUSE_ON, "a"),
        (ActionRole.OPEN_HOUSE_OFF, DoorCommand.OPEN_HOUSE_OFF, "b"),
        (ActionRole.LOCK, DoorCommand.NIGHT_LOCK, "b"),
    ]
    assert p.actions[1].at == p.actions[2].at


def test_open_mode_one_open_per_booking_at_slot_start() -> None:
    policy = DoorPolicy(unlock_mode=UnlockMode.OPEN, lock_action=LockAction.DAY_LOCK)
    p = plan(
        [booking("a", "10:00"), booking("b", "11:00"), booking("c", "11:00", duration_minutes=30)],
        policy,
    )
    opens = by_role(p.actions, ActionRole.OPEN)
    assert [(o.reservation_id, o.at) for o in opens] == [
        ("a", local(DAY, "10:00")),
        ("b", local(DAY, "11:00")),
    ]
    assert by_role(p.actions, ActionRole.UNLOCK) == []
    (lock,) = by_role(p.actions, ActionRole.LOCK)
    assert lock.command is DoorCommand.DAY_LOCK
    assert lock.at == local(DAY, "12:15")


def test_multi_lock_room_gets_one_set_per_lock() -> None:
    p = plan([booking("a", "10:00")], locks=("front", "back"))
    assert set(p.lock_plans) == {"front", "back"}
    front = [(x.role, x.at) for x in p.lock_plans["front"].actions]
    back = [(x.role, x.at) for x in p.lock_plans["back"].actions]
    assert front == back
    assert {x.key for x in p.actions} == {
        "1:front:unlock:a",
        "1:front:lock:a",
        "1:back:unlock:a",
        "1:back:lock:a",
    }


# --- DST -------------------------------------------------------------------------------------


def test_spring_forward_nonexistent_time_shifts_forward() -> None:
    assert classify_local(date(2026, 3, 29), time(2, 30), WARSAW) is LocalTimeKind.NONEXISTENT
    start = local_to_utc(date(2026, 3, 29), time(2, 30), WARSAW)
    assert start == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert start.astimezone(WARSAW).strftime("%H:%M %Z") == "03:30 CEST"
    w = booking_window(booking("s", "02:30", day="2026-03-29"), DoorPolicy())
    assert w.local_kind is LocalTimeKind.NONEXISTENT
    assert w.slot_end - w.slot_start == timedelta(minutes=60)


def test_autumn_ambiguous_time_uses_first_occurrence() -> None:
    assert classify_local(date(2026, 10, 25), time(2, 30), WARSAW) is LocalTimeKind.AMBIGUOUS
    start = local_to_utc(date(2026, 10, 25), time(2, 30), WARSAW)
    assert start == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert start.astimezone(WARSAW).strftime("%H:%M %Z") == "02:30 CEST"
    assert classify_local(date(2026, 10, 25), time(4, 0), WARSAW) is LocalTimeKind.NORMAL


def test_slot_across_spring_transition_lasts_real_minutes() -> None:
    p = plan([booking("s", "01:30", day="2026-03-29", duration_minutes=120)])
    (w,) = p.windows
    assert w.slot_end - w.slot_start == timedelta(minutes=120)
    local_start, local_end = w.slot_start.astimezone(WARSAW), w.slot_end.astimezone(WARSAW)
    assert (local_start.hour, local_end.hour) == (1, 4)  # three wall-clock hours
    assert p.actions[-1].at == w.slot_end + timedelta(minutes=15)


def test_slot_across_autumn_transition_lasts_real_minutes() -> None:
    p = plan([booking("s", "01:30", day="2026-10-25", duration_minutes=120)])
    (w,) = p.windows
    assert w.slot_end - w.slot_start == timedelta(minutes=120)
    local_start, local_end = w.slot_start.astimezone(WARSAW), w.slot_end.astimezone(WARSAW)
    assert (local_start.strftime("%H:%M %Z"), local_end.strftime("%H:%M %Z")) == (
        "01:30 CEST",
        "02:30 CET",
    )  # one wall-clock hour


def test_dst_night_bookings_merge_by_real_time() -> None:
    # 01:00–02:00 CET then 03:00 CEST on the spring night: zero real minutes apart.
    p = plan([booking("a", "01:00", day="2026-03-29"), booking("b", "03:00", day="2026-03-29")])
    assert len(p.lock_plans["L1"].intervals) == 1


# --- shared locks ----------------------------------------------------------------------------


def test_shared_lock_is_merged_across_rooms() -> None:
    r1 = plan([booking("a", "10:00", room=1)], room=1, locks=("hall", "r1door"))
    r2 = plan([booking("b", "11:20", room=2)], room=2, locks=("hall",))
    # Alone, room 1 would lock the hall at 11:15 although room 2 unlocks it at 11:10.
    assert by_role(r1.lock_plans["hall"].actions, ActionRole.LOCK)[0].at == local(DAY, "11:15")
    merged = merge_lock_actions([r1, r2])
    hall = merged["hall"]
    assert len(hall.intervals) == 1
    assert [(x.key, x.at) for x in hall.actions] == [
        ("1:hall:unlock:a", local(DAY, "09:50")),
        ("2:hall:lock:b", local(DAY, "12:35")),
    ]
    assert hall.actions[0].reservation_ids == ("a", "b")
    # A lock used by one room only is planned exactly as the room planned it.
    assert merged["r1door"].actions == r1.lock_plans["r1door"].actions


def test_shared_lock_mixed_policies() -> None:
    house = DoorPolicy(unlock_mode=UnlockMode.OPEN_HOUSE, lock_action=LockAction.DAY_LOCK)
    r1 = plan_room(1, [booking("a", "10:00", room=1)], house, ["hall"], now=NOW)
    r2 = plan_room(2, [booking("b", "10:30", room=2)], DoorPolicy(), ["hall"], now=NOW)
    hall = merge_lock_actions([r1, r2])["hall"]
    assert [x.command for x in hall.actions] == [
        DoorCommand.OPEN_HOUSE_ON,
        DoorCommand.OPEN_HOUSE_OFF,
        DoorCommand.NIGHT_LOCK,  # the stricter lock action wins
    ]
    with pytest.raises(PlannerError, match="twice"):
        merge_lock_actions([r1, r1])


def test_moving_a_booking_between_rooms_changes_keys() -> None:
    before = plan([booking("a", "10:00", room=1)], room=1)
    moved = booking("a", "10:00", room=2)
    assert plan([moved], room=1).actions == ()
    after = plan([moved], room=2)
    assert {x.key for x in after.actions} == {"2:L1:unlock:a", "2:L1:lock:a"}
    assert not {x.key for x in before.actions} & {x.key for x in after.actions}
