"""The door planner: reservations + door policy → door windows → per-lock door actions.

Pure and deterministic: the same bookings, policy, locks and ``now`` always give the same plan
with the same action keys, so storing a plan is an upsert and re-planning updates in place.

Steps (docs/policies.md explains them with examples):

1. Each *counted* booking (not deleted, not a lapsed cart, paid when the policy says PAID)
   becomes a :class:`DoorWindow` ``[slot start − lead, slot end + lag]`` keyed by its
   reservation id.
2. Per lock, windows that overlap, touch, or are less than ``merge_gap`` apart merge into one
   :class:`DoorInterval` (one unlock, one lock). A gap exactly equal to ``merge_gap`` does
   not merge.
3. Each interval yields :class:`PlannedAction` s whose key is
   ``"{room}:{lock}:{role}:{anchor reservation}"``. The unlock-side anchor is the interval's
   first booking (earliest window start), the lock-side anchor its last (latest window end);
   OPEN actions are anchored on their own booking. Editing a booking's time therefore keeps
   its keys (the times change in place); merging two intervals supersedes the inner
   lock/unlock pair and splitting creates it again.

A lock shared by several rooms: :func:`plan_room` plans each room alone;
:func:`merge_lock_actions` re-merges all windows on each lock across rooms, so one room's lock
action never locks a door another room's booking needs unlocked. For a lock used by one room
only its result equals the room plan. The pipeline should store the output of
:func:`merge_lock_actions`.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from operator import attrgetter
from typing import Any, NamedTuple, Protocol
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from roomkey.service.commands import DoorCommand
from roomkey.service.policy import BookingFilter, DoorPolicy, LockAction, UnlockMode
from roomkey.service.slots import (
    DEFAULT_TIMEZONE,
    LocalTimeKind,
    SlotError,
    parse_date,
    parse_hour,
    resolve_timezone,
    slot_for,
)

__all__ = [
    "CART_HOLD",
    "ActionRole",
    "Booking",
    "BookingInput",
    "DoorInterval",
    "DoorWindow",
    "IgnoreReason",
    "IgnoredBooking",
    "LockPlan",
    "PlannedAction",
    "PlannerError",
    "RoomPlan",
    "action_key",
    "action_order",
    "booking_window",
    "ignore_reason",
    "merge_lock_actions",
    "merge_windows",
    "plan_lock",
    "plan_room",
]

CART_HOLD = timedelta(minutes=20)
"""How long Lockme holds an unpaid ``web`` booking (a cart) before it lapses."""


class PlannerError(ValueError):
    """Planner input that cannot be planned (bad slot, wrong room, duplicate lock, …)."""


class ActionRole(enum.StrEnum):
    """What an action does for its interval; part of the action key."""

    UNLOCK = "unlock"
    OPEN_HOUSE_ON = "open_house_on"
    OPEN = "open"
    OPEN_HOUSE_OFF = "open_house_off"
    LOCK = "lock"

    @property
    def unlocking(self) -> bool:
        """True for roles that leave the door passable."""
        return self in (ActionRole.UNLOCK, ActionRole.OPEN_HOUSE_ON, ActionRole.OPEN)

    @property
    def order(self) -> int:
        """Tie-break for actions at the same instant (open house off before the lock)."""
        return _ROLE_ORDER[self]


_ROLE_ORDER = {
    ActionRole.UNLOCK: 0,
    ActionRole.OPEN_HOUSE_ON: 0,
    ActionRole.OPEN: 1,
    ActionRole.OPEN_HOUSE_OFF: 2,
    ActionRole.LOCK: 3,
}

_window_order = attrgetter("start", "room_id", "reservation_id")
"""Same order as :attr:`DoorWindow.sort_key`, without the property call per comparison key."""


class BookingInput(BaseModel):
    """One reservation as the planner sees it (the pipeline adapts Lockme's model).

    ``date``/``hour`` are venue-local (``YYYY-MM-DD`` / ``HH:MM[:SS]`` strings or
    ``date``/``time``); ``status`` is Lockme's paid/confirmed flag (1/0, true/false, "1"/"0").
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    reservation_id: str = Field(min_length=1)
    room_id: int
    date: date
    hour: time
    duration_minutes: int | None = Field(default=None, gt=0, le=7 * 24 * 60)
    status: bool = False
    source: str | None = None
    deleted: bool = False
    lapsed: bool = False
    """Set when the pipeline knows the cart hold ended (no payment came)."""
    created_at: datetime | None = None
    """Creation time (Lockme's ``time``), aware; lets an unpaid ``web`` cart lapse by age."""

    @field_validator("reservation_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("date", mode="before")
    @classmethod
    def _parse_date(cls, value: Any) -> Any:
        if isinstance(value, str | date):
            try:
                return parse_date(value)
            except SlotError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @field_validator("hour", mode="before")
    @classmethod
    def _parse_hour(cls, value: Any) -> Any:
        if isinstance(value, str | time):
            try:
                return parse_hour(value)
            except SlotError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise ValueError("created_at must be timezone-aware")
        return value

    @property
    def paid(self) -> bool:
        return self.status


class Booking(Protocol):
    """What the planner reads of a booking: :class:`BookingInput` (validated input) or any
    object with these attributes holding already valid values (e.g. a mirrored row)."""

    @property
    def reservation_id(self) -> str: ...
    @property
    def room_id(self) -> int: ...
    @property
    def date(self) -> date: ...
    @property
    def hour(self) -> time: ...
    @property
    def duration_minutes(self) -> int | None: ...
    @property
    def status(self) -> bool: ...
    @property
    def source(self) -> str | None: ...
    @property
    def deleted(self) -> bool: ...
    @property
    def lapsed(self) -> bool: ...
    @property
    def created_at(self) -> datetime | None: ...


class IgnoreReason(enum.StrEnum):
    """Why a booking opens no door."""

    DELETED = "deleted"
    LAPSED = "lapsed"
    UNPAID = "unpaid"
    OTHER_ROOM = "other_room"


@dataclass(frozen=True, slots=True)
class IgnoredBooking:
    reservation_id: str
    reason: IgnoreReason


class DoorWindow(NamedTuple):
    """One counted booking's door window ``[start, end]`` (aware UTC).

    The planner's value types (windows, intervals, actions) are named tuples: immutable like
    frozen dataclasses, and several times cheaper to create — a resync makes hundreds of
    thousands of them."""

    reservation_id: str
    room_id: int
    slot_start: datetime
    slot_end: datetime
    start: datetime
    end: datetime
    unlock_mode: UnlockMode
    lock_action: LockAction
    merge_gap: timedelta
    local_kind: LocalTimeKind = LocalTimeKind.NORMAL

    @property
    def sort_key(self) -> tuple[datetime, int, str]:
        return (self.start, self.room_id, self.reservation_id)


class DoorInterval(NamedTuple):
    """Merged windows on one lock: the door is unlocked from ``start`` to ``end``."""

    lock_id: str
    start: datetime
    end: datetime
    windows: tuple[DoorWindow, ...]
    merge_gap: timedelta

    @property
    def first(self) -> DoorWindow:
        """The unlock-side anchor: earliest window start (ties: room, reservation id)."""
        if len(self.windows) == 1:
            return self.windows[0]
        return min(self.windows, key=lambda w: w.sort_key)

    @property
    def last(self) -> DoorWindow:
        """The lock-side anchor: latest window end (ties: highest room, reservation id)."""
        if len(self.windows) == 1:
            return self.windows[0]
        return max(self.windows, key=lambda w: (w.end, w.room_id, w.reservation_id))

    @property
    def reservation_ids(self) -> tuple[str, ...]:
        return tuple(w.reservation_id for w in _by_start(self.windows))


class PlannedAction(NamedTuple):
    """A door action to run at ``at`` (aware UTC); ``key`` is stable across re-plans."""

    key: str
    room_id: int
    lock_id: str
    role: ActionRole
    command: DoorCommand
    at: datetime
    reservation_id: str
    """The anchor booking the key is derived from."""
    reservation_ids: tuple[str, ...]
    """Every booking of the interval (to link lock events to reservations)."""
    interval_start: datetime
    interval_end: datetime
    merge_gap: timedelta

    @property
    def sort_key(self) -> tuple[datetime, int, str]:
        return (self.at, self.role.order, self.key)


@dataclass(frozen=True, slots=True)
class LockPlan:
    lock_id: str
    intervals: tuple[DoorInterval, ...]
    actions: tuple[PlannedAction, ...]


@dataclass(frozen=True, slots=True)
class RoomPlan:
    """The door plan of one room: its counted windows and, per lock, intervals and actions."""

    room_id: int
    windows: tuple[DoorWindow, ...]
    ignored: tuple[IgnoredBooking, ...]
    locks: tuple[str, ...]
    lock_plans: Mapping[str, LockPlan] = field(default_factory=dict)

    @property
    def actions(self) -> tuple[PlannedAction, ...]:
        """All actions of the room, in execution order."""
        every = [a for lp in self.lock_plans.values() for a in lp.actions]
        return tuple(sorted(every, key=lambda a: a.sort_key))


def action_key(room_id: int, lock_id: str, role: ActionRole, reservation_id: str) -> str:
    """The stable key of an action: ``"{room}:{lock}:{role}:{reservation}"``."""
    return f"{room_id}:{lock_id}:{role.value}:{reservation_id}"


def ignore_reason(
    booking: Booking, policy: DoorPolicy, *, room_id: int, now: datetime
) -> IgnoreReason | None:
    """Why ``booking`` opens no door in ``room_id`` (None: it counts)."""
    if booking.deleted:
        return IgnoreReason.DELETED
    if booking.room_id != room_id:
        return IgnoreReason.OTHER_ROOM
    if booking.lapsed or _cart_lapsed(booking, now):
        return IgnoreReason.LAPSED
    if policy.bookings is BookingFilter.PAID and not booking.status:
        return IgnoreReason.UNPAID
    return None


def _cart_lapsed(booking: Booking, now: datetime) -> bool:
    return (
        not booking.status
        and booking.source == "web"
        and booking.created_at is not None
        and now >= booking.created_at + CART_HOLD
    )


def booking_window(
    booking: Booking, policy: DoorPolicy, tz: str | ZoneInfo = DEFAULT_TIMEZONE
) -> DoorWindow:
    """The door window of one booking (whether or not it counts)."""
    return _window(booking, _WindowRule.of(policy), tz)


@dataclass(frozen=True, slots=True)
class _WindowRule:
    """What a room's policy contributes to each of its windows, computed once per plan."""

    lead: timedelta
    lag: timedelta
    default_slot: timedelta
    unlock_mode: UnlockMode
    lock_action: LockAction
    merge_gap: timedelta

    @classmethod
    def of(cls, policy: DoorPolicy) -> _WindowRule:
        return cls(
            policy.unlock_lead,
            policy.lock_lag,
            policy.default_slot,
            policy.unlock_mode,
            policy.lock_action,
            policy.merge_gap,
        )


_MINUTES: dict[int, timedelta] = {}


def _duration(minutes: int) -> timedelta:
    found = _MINUTES.get(minutes)
    if found is None:
        found = timedelta(minutes=minutes)
        if len(_MINUTES) < 4096:
            _MINUTES[minutes] = found
    return found


def _window(booking: Booking, rule: _WindowRule, zone: str | ZoneInfo) -> DoorWindow:
    minutes = booking.duration_minutes
    duration = rule.default_slot if minutes is None else _duration(minutes)
    try:
        slot = slot_for(booking.date, booking.hour, duration, zone)
    except SlotError as exc:
        raise PlannerError(f"reservation {booking.reservation_id}: {exc}") from exc
    return DoorWindow(
        booking.reservation_id,
        booking.room_id,
        slot.start,
        slot.end,
        slot.start - rule.lead,
        slot.end + rule.lag,
        rule.unlock_mode,
        rule.lock_action,
        rule.merge_gap,
        slot.local_kind,
    )


def _by_start(windows: Sequence[DoorWindow]) -> Sequence[DoorWindow]:
    """``windows`` ordered by :attr:`DoorWindow.sort_key` (no sort for one window)."""
    if len(windows) == 1:
        return windows
    return sorted(windows, key=_window_order)


def merge_windows(lock_id: str, windows: Iterable[DoorWindow]) -> tuple[DoorInterval, ...]:
    """Merge windows on one lock into disjoint intervals.

    Sorted by start, a window joins the current interval when it overlaps or touches it, or
    when the gap is strictly less than the larger merge gap involved (for one room: the
    room's ``merge_gap``; across rooms sharing a lock: if either room would keep the door open).
    """
    ordered = sorted(windows, key=_window_order)
    if not ordered:
        return ()
    intervals: list[DoorInterval] = []
    group = [ordered[0]]
    end, gap = ordered[0].end, ordered[0].merge_gap
    for window in ordered[1:]:
        start, window_gap = window.start, window.merge_gap
        if start <= end or start - end < (gap if gap >= window_gap else window_gap):
            group.append(window)
            if window.end > end:
                end = window.end
            if window_gap > gap:
                gap = window_gap
            continue
        intervals.append(DoorInterval(lock_id, group[0].start, end, tuple(group), gap))
        group, end, gap = [window], window.end, window_gap
    intervals.append(DoorInterval(lock_id, group[0].start, end, tuple(group), gap))
    return tuple(intervals)


def _interval_actions(interval: DoorInterval) -> list[PlannedAction]:
    """The actions of one interval (modes of all its windows combined, see docs/policies.md)."""
    lock = interval.lock_id
    windows = interval.windows
    if len(windows) == 1:  # the common case, without the general bookkeeping
        first = last = windows[0]
        ordered: Sequence[DoorWindow] = windows
        ids: tuple[str, ...] = (first.reservation_id,)
        modes: Collection[UnlockMode] = (first.unlock_mode,)
        strict = first.lock_action is LockAction.NIGHT_LOCK
    else:
        first, last = interval.first, interval.last
        ordered = _by_start(windows)
        ids = tuple(w.reservation_id for w in ordered)
        modes = {w.unlock_mode for w in windows}
        strict = any(w.lock_action is LockAction.NIGHT_LOCK for w in windows)
    open_house = UnlockMode.OPEN_HOUSE in modes
    start, end, gap = interval.start, interval.end, interval.merge_gap

    def make(
        role: ActionRole, command: DoorCommand, at: datetime, anchor: DoorWindow
    ) -> PlannedAction:
        return PlannedAction(
            f"{anchor.room_id}:{lock}:{role.value}:{anchor.reservation_id}",  # action_key
            anchor.room_id,
            lock,
            role,
            command,
            at,
            anchor.reservation_id,
            ids,
            start,
            end,
            gap,
        )

    actions: list[PlannedAction] = []
    if open_house:
        actions.append(make(ActionRole.OPEN_HOUSE_ON, DoorCommand.OPEN_HOUSE_ON, start, first))
    elif UnlockMode.DAY_LOCK in modes:
        actions.append(make(ActionRole.UNLOCK, DoorCommand.DAY_LOCK, start, first))
    if UnlockMode.OPEN in modes:
        opens: dict[datetime, DoorWindow] = {}
        for window in ordered:
            if window.unlock_mode is UnlockMode.OPEN:
                # Bookings starting at the same instant share one OPEN (never pull twice at once).
                opens.setdefault(window.slot_start, window)
        for at, window in opens.items():
            actions.append(make(ActionRole.OPEN, DoorCommand.OPEN, at, window))
    if open_house:
        actions.append(make(ActionRole.OPEN_HOUSE_OFF, DoorCommand.OPEN_HOUSE_OFF, end, last))
    lock_command = DoorCommand.NIGHT_LOCK if strict else DoorCommand.DAY_LOCK
    actions.append(make(ActionRole.LOCK, lock_command, end, last))
    return actions


def action_order(action: PlannedAction) -> tuple[datetime, int, str]:
    """:attr:`PlannedAction.sort_key` as a sort key function (without two property calls)."""
    return (action.at, _ROLE_ORDER[action.role], action.key)


def plan_lock(lock_id: str, windows: Iterable[DoorWindow]) -> LockPlan:
    """Intervals and actions of one lock from the windows that need it."""
    intervals = merge_windows(lock_id, windows)
    actions = [a for interval in intervals for a in _interval_actions(interval)]
    return LockPlan(
        lock_id=lock_id,
        intervals=intervals,
        actions=tuple(sorted(actions, key=action_order)),
    )


def plan_room(
    room_id: int,
    bookings: Iterable[Booking],
    policy: DoorPolicy,
    locks: Sequence[str],
    *,
    now: datetime,
    tz: str | ZoneInfo = DEFAULT_TIMEZONE,
    with_lock_plans: bool = True,
) -> RoomPlan:
    """Plan one room's doors from its bookings (pure; ``now`` only decides cart lapses).

    ``bookings`` may contain bookings of other rooms (e.g. one just moved away): they are
    reported as ``other_room`` and plan nothing here. Two inputs for one reservation id are
    an error: the pipeline passes the latest version of each reservation.
    ``with_lock_plans=False`` leaves ``lock_plans`` empty (windows only), for a caller that
    plans the locks with :func:`merge_lock_actions` anyway.
    """
    if now.utcoffset() is None:
        raise PlannerError("now must be timezone-aware")
    if len(set(locks)) != len(locks):
        raise PlannerError(f"room {room_id}: duplicate lock ids in {list(locks)}")
    try:
        zone: str | ZoneInfo = resolve_timezone(tz)
    except SlotError:
        zone = tz  # reported per booking, as booking_window does
    rule = _WindowRule.of(policy)
    seen: set[str] = set()
    windows: list[DoorWindow] = []
    ignored: list[IgnoredBooking] = []
    for booking in bookings:
        rid = booking.reservation_id
        if rid in seen:
            raise PlannerError(f"reservation {rid} given twice")
        seen.add(rid)
        # A paid, live booking of this room always counts (see ignore_reason); others ask.
        if booking.deleted or booking.room_id != room_id or booking.lapsed or not booking.status:
            reason = ignore_reason(booking, policy, room_id=room_id, now=now)
            if reason is not None:
                ignored.append(IgnoredBooking(rid, reason))
                continue
        windows.append(_window(booking, rule, zone))
    windows.sort(key=_window_order)
    return RoomPlan(
        room_id=room_id,
        windows=tuple(windows),
        ignored=tuple(sorted(ignored, key=lambda i: i.reservation_id)),
        locks=tuple(locks),
        lock_plans={lock: plan_lock(lock, windows) for lock in locks} if with_lock_plans else {},
    )


def merge_lock_actions(plans: Iterable[RoomPlan]) -> dict[str, LockPlan]:
    """Per lock, the plan over every room using it (windows re-merged across rooms).

    Pass the plans of all rooms that share any of the locks involved. For a lock used by a
    single room the result equals that room's own lock plan (same keys and times).
    """
    by_lock: dict[str, list[DoorWindow]] = {}
    rooms: set[int] = set()
    for plan in plans:
        if plan.room_id in rooms:
            raise PlannerError(f"room {plan.room_id} planned twice")
        rooms.add(plan.room_id)
        for lock in plan.locks:
            by_lock.setdefault(lock, []).extend(plan.windows)
    return {lock: plan_lock(lock, windows) for lock, windows in sorted(by_lock.items())}
