"""Stored-vs-planned diff: what to create, move, supersede, skip or keep on each lock.

The pipeline stores every action it ever scheduled as a :class:`StoredAction` keyed by
``(key, generation)``. ``key`` is the planner's stable key; ``generation`` counts
incarnations of that key (0 first). A new incarnation is created only when an action with
that key already ran (or was superseded) and the plan now wants it at another time — for
example a booking moved later after its door was unlocked: the door is locked now and
unlocked again at the new time. An OPEN never gets a second incarnation once one may have
reached the lock.

Rules, per lock (docs/policies.md has worked examples):

* pending actions are updated in place (same key and generation) when their time or
  command changed; pending actions the plan no longer wants are superseded;
* an action that ran (or is running) is history and is never re-created for the same time;
* *door held open*: if the last action that may have acted on the lock unlocked it, and no
  planned interval covers ``now`` or starts within its merge gap, the door is closed now —
  an existing pending lock (and open-house-off) is moved to ``now``, or one is created. Such
  a closing action is never skipped for lateness: locking late beats never locking;
* a due action past ``max_lateness`` is skipped and reported (stored as skipped so it is
  reported once); an unlock whose interval is already over is skipped too; an unlock is
  not needed while the door is already held open.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from roomkey.service.commands import DoorCommand, should_skip
from roomkey.service.planner import ActionRole, PlannedAction, action_key, action_order

__all__ = [
    "ActionChanges",
    "ActionCreate",
    "ActionRef",
    "ActionSkip",
    "ActionStatus",
    "ActionUpdate",
    "ChangeReason",
    "DiffError",
    "StoredAction",
    "diff_actions",
]


class DiffError(ValueError):
    """Inconsistent diff input (duplicate planned keys, naive times)."""


class ActionStatus(enum.StrEnum):
    """A stored action's status, as the diff needs it."""

    PENDING = "pending"
    """Scheduled, nothing sent: may be moved, superseded or skipped."""
    RUNNING = "running"
    """Its command is in flight (may act on the lock)."""
    DONE = "done"
    """Its command ended and may have acted (confirmed, or failed/expired after an attempt
    may have reached the lock)."""
    NOT_SENT = "not_sent"
    """Its command ended and certainly never reached the lock."""
    SKIPPED = "skipped"
    SUPERSEDED = "superseded"

    @property
    def may_have_acted(self) -> bool:
        return self in (ActionStatus.RUNNING, ActionStatus.DONE)

    @property
    def settled(self) -> bool:
        """Counts as handled when the plan wants the same action at the same time."""
        return self not in (ActionStatus.PENDING, ActionStatus.SUPERSEDED)


@dataclass(frozen=True, slots=True)
class StoredAction:
    key: str
    generation: int
    room_id: int
    lock_id: str
    role: ActionRole
    command: DoorCommand
    at: datetime
    status: ActionStatus
    reservation_id: str

    @property
    def ref(self) -> tuple[str, int]:
        return (self.key, self.generation)


class ChangeReason(enum.StrEnum):
    NEW = "new"
    """Planned and not stored yet."""
    REARM = "rearm"
    """This key already ran or was superseded; the plan wants it again at another time."""
    RESCHEDULED = "rescheduled"
    """The booking's time (or the policy) changed: pending action moved in place."""
    UNCHANGED = "unchanged"
    CLOSE_DOOR = "close_door"
    """The door is held open by us and nothing planned keeps it open: lock now."""
    NOT_PLANNED = "not_planned"
    """The plan no longer has this action (booking deleted, moved, merged, lapsed)."""
    ALREADY_UNLOCKED = "already_unlocked"
    OPEN_ALREADY_SENT = "open_already_sent"
    KEPT_OPEN = "kept_open"
    """A missed lock no longer needed: a planned interval keeps the door open."""
    CLOSED_NOW = "closed_now"
    """A missed lock whose job the close-door action does now."""
    LATE = "late"
    """Due more than max_lateness ago."""
    INTERVAL_OVER = "interval_over"
    """An unlock whose door interval has already ended."""


class ActionCreate(NamedTuple):
    """Insert ``action`` as a pending action with this generation (a named tuple: one per
    new action, so cheap to create)."""

    action: PlannedAction
    generation: int
    reason: ChangeReason


@dataclass(frozen=True, slots=True)
class ActionUpdate:
    """Move a pending stored action to ``at`` (and ``command``)."""

    key: str
    generation: int
    at: datetime
    command: DoorCommand
    previous_at: datetime
    reason: ChangeReason


@dataclass(frozen=True, slots=True)
class ActionSkip:
    """Skip and report. ``action`` is set when the action is new (insert it as skipped);
    None when an existing pending action is marked skipped — storage then also sets its
    time and command to ``at``/``command`` (the planned ones), so the next diff sees it
    as handled."""

    key: str
    generation: int
    at: datetime
    command: DoorCommand
    late_by: timedelta
    reason: ChangeReason
    action: PlannedAction | None = None


@dataclass(frozen=True, slots=True)
class ActionRef:
    key: str
    generation: int
    reason: ChangeReason


@dataclass(frozen=True, slots=True)
class ActionChanges:
    create: tuple[ActionCreate, ...] = ()
    update: tuple[ActionUpdate, ...] = ()
    supersede: tuple[ActionRef, ...] = ()
    skip: tuple[ActionSkip, ...] = ()
    keep: tuple[ActionRef, ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing to write (keeps aside)."""
        return not (self.create or self.update or self.supersede or self.skip)


@dataclass
class _Acc:
    create: list[ActionCreate]
    update: list[ActionUpdate]
    supersede: list[ActionRef]
    skip: list[ActionSkip]
    keep: list[ActionRef]


_BOLT_ROLES = (ActionRole.UNLOCK, ActionRole.OPEN, ActionRole.LOCK)
_HOUSE_ROLES = (ActionRole.OPEN_HOUSE_ON, ActionRole.OPEN_HOUSE_OFF)


def diff_actions(
    stored: Sequence[StoredAction],
    planned: Sequence[PlannedAction],
    *,
    now: datetime,
    max_lateness: timedelta,
    lock_command: DoorCommand = DoorCommand.NIGHT_LOCK,
) -> ActionChanges:
    """The changes that turn ``stored`` into ``planned`` at ``now``.

    Pass every stored action of the locks concerned (all statuses; history decides whether
    a door is held open) and the full plan of those locks (from ``merge_lock_actions``).
    ``lock_command`` is used when a closing lock has to be created from nothing.
    """
    if now.utcoffset() is None:
        raise DiffError("now must be timezone-aware")
    keys = [p.key for p in planned]
    if len(set(keys)) != len(keys):
        raise DiffError("planned actions must have unique keys")
    acc = _Acc([], [], [], [], [])
    stored_by_lock: dict[str, list[StoredAction]] = {}
    for s in stored:
        stored_by_lock.setdefault(s.lock_id, []).append(s)
    planned_by_lock: dict[str, list[PlannedAction]] = {}
    for p in planned:
        planned_by_lock.setdefault(p.lock_id, []).append(p)
    for lock in sorted(stored_by_lock.keys() | planned_by_lock.keys()):
        if lock not in stored_by_lock and all(p.at > now for p in planned_by_lock[lock]):
            # Nothing stored, everything ahead (a new lock plan, e.g. on a resync): every
            # action is created, generation 0 — what _diff_lock concludes, without its work.
            acc.create.extend(
                ActionCreate(p, 0, ChangeReason.NEW)
                for p in sorted(planned_by_lock[lock], key=action_order)
            )
            continue
        _diff_lock(
            stored_by_lock.get(lock, []),
            planned_by_lock.get(lock, []),
            lock_id=lock,
            now=now,
            max_lateness=max_lateness,
            lock_command=lock_command,
            acc=acc,
        )
    return ActionChanges(
        create=tuple(acc.create),
        update=tuple(acc.update),
        supersede=tuple(acc.supersede),
        skip=tuple(acc.skip),
        keep=tuple(acc.keep),
    )


def _last_acted(
    history: Iterable[StoredAction], roles: tuple[ActionRole, ...]
) -> StoredAction | None:
    acted = [s for s in history if s.status.may_have_acted and s.role in roles]
    if not acted:
        return None
    return max(acted, key=lambda s: (s.at, s.role.order, s.generation, s.key))


def _diff_lock(
    stored: list[StoredAction],
    planned: list[PlannedAction],
    *,
    lock_id: str,
    now: datetime,
    max_lateness: timedelta,
    lock_command: DoorCommand,
    acc: _Acc,
) -> None:
    history = [s for s in stored if s.status is not ActionStatus.PENDING]
    pending = [s for s in stored if s.status is ActionStatus.PENDING]
    next_gen: dict[str, int] = {}
    for s in stored:
        next_gen[s.key] = max(next_gen.get(s.key, 0), s.generation + 1)

    last_bolt = _last_acted(history, _BOLT_ROLES)
    last_house = _last_acted(history, _HOUSE_ROLES)
    bolt_open = last_bolt if last_bolt is not None and last_bolt.role.unlocking else None
    house_on = last_house if last_house is not None and last_house.role.unlocking else None
    held = bolt_open or house_on

    need_close = held is not None and not (
        any(p.interval_start <= now < p.interval_end for p in planned)  # covering now
        or any(now < p.interval_start and p.interval_start - now < p.merge_gap for p in planned)
    )

    consumed: set[tuple[str, int]] = set()
    closing_keys: set[str] = set()
    if need_close and held is not None:
        roles: list[tuple[ActionRole, DoorCommand, StoredAction]] = []
        if house_on is not None:
            roles.append((ActionRole.OPEN_HOUSE_OFF, DoorCommand.OPEN_HOUSE_OFF, house_on))
        roles.append((ActionRole.LOCK, lock_command, held))
        for role, command, anchor in roles:
            candidates = [s for s in pending if s.role is role and s.ref not in consumed]
            if candidates:
                closer = min(candidates, key=lambda s: (s.at, s.key, s.generation))
                consumed.add(closer.ref)
                closing_keys.add(closer.key)
                if closer.at > now or should_skip(closer.at, now, max_lateness):
                    acc.update.append(
                        ActionUpdate(
                            closer.key,
                            closer.generation,
                            now,
                            closer.command,
                            closer.at,
                            ChangeReason.CLOSE_DOOR,
                        )
                    )
                else:
                    acc.keep.append(
                        ActionRef(closer.key, closer.generation, ChangeReason.CLOSE_DOOR)
                    )
                continue
            key = action_key(anchor.room_id, lock_id, role, anchor.reservation_id)
            gen = next_gen.get(key, 0)
            next_gen[key] = gen + 1
            closing_keys.add(key)
            action = PlannedAction(
                key=key,
                room_id=anchor.room_id,
                lock_id=lock_id,
                role=role,
                command=command,
                at=now,
                reservation_id=anchor.reservation_id,
                reservation_ids=(anchor.reservation_id,),
                interval_start=anchor.at,
                interval_end=now,
                merge_gap=timedelta(0),
            )
            acc.create.append(ActionCreate(action, gen, ChangeReason.CLOSE_DOOR))

    pool: dict[str, list[StoredAction]] = {}
    for s in pending:
        if s.ref not in consumed:
            pool.setdefault(s.key, []).append(s)
    history_by_key: dict[str, list[StoredAction]] = {}
    for h in history:
        history_by_key.setdefault(h.key, []).append(h)

    for p in sorted(planned, key=action_order):
        match: StoredAction | None = None
        pooled = pool.get(p.key)
        if pooled:
            match = next((s for s in pooled if s.at == p.at), None)
            if match is None:
                match = max(pooled, key=lambda s: s.generation)
            pooled.remove(match)
        same_key = history_by_key.get(p.key)
        if same_key:
            if p.role is ActionRole.OPEN and any(h.status.may_have_acted for h in same_key):
                if match is not None:
                    acc.supersede.append(
                        ActionRef(match.key, match.generation, ChangeReason.OPEN_ALREADY_SENT)
                    )
                continue
            if match is None and any(
                h.status.settled and h.at == p.at and h.command is p.command for h in same_key
            ):
                continue  # already handled at this very time
        rearm = bool(same_key) or p.key in closing_keys

        if p.at > now:
            _schedule(p, match, rearm, next_gen, acc)
            continue

        verdict = _past_verdict(
            p,
            now=now,
            max_lateness=max_lateness,
            bolt_open=bolt_open is not None,
            house_on=house_on is not None,
            need_close=need_close,
        )
        if verdict is None:
            _schedule(p, match, rearm, next_gen, acc)
        elif verdict in (
            ChangeReason.ALREADY_UNLOCKED,
            ChangeReason.KEPT_OPEN,
            ChangeReason.CLOSED_NOW,
        ):
            if match is not None:
                acc.supersede.append(ActionRef(match.key, match.generation, verdict))
        elif match is not None:
            acc.skip.append(
                ActionSkip(match.key, match.generation, p.at, p.command, now - p.at, verdict)
            )
        else:
            gen = next_gen.get(p.key, 0)
            next_gen[p.key] = gen + 1
            acc.skip.append(ActionSkip(p.key, gen, p.at, p.command, now - p.at, verdict, action=p))

    for leftovers in pool.values():
        for s in sorted(leftovers, key=lambda s: (s.key, s.generation)):
            acc.supersede.append(ActionRef(s.key, s.generation, ChangeReason.NOT_PLANNED))


def _schedule(
    p: PlannedAction,
    match: StoredAction | None,
    rearm: bool,
    next_gen: dict[str, int],
    acc: _Acc,
) -> None:
    """Run ``p`` at its planned time: keep, move in place, or create."""
    if match is None:
        gen = next_gen.get(p.key, 0)
        next_gen[p.key] = gen + 1
        reason = ChangeReason.REARM if rearm else ChangeReason.NEW
        acc.create.append(ActionCreate(p, gen, reason))
    elif match.at == p.at and match.command is p.command:
        acc.keep.append(ActionRef(match.key, match.generation, ChangeReason.UNCHANGED))
    else:
        acc.update.append(
            ActionUpdate(
                match.key, match.generation, p.at, p.command, match.at, ChangeReason.RESCHEDULED
            )
        )


def _past_verdict(
    p: PlannedAction,
    *,
    now: datetime,
    max_lateness: timedelta,
    bolt_open: bool,
    house_on: bool,
    need_close: bool,
) -> ChangeReason | None:
    """For an action due at or before ``now``: None to run it, else why not."""
    if p.role.unlocking:
        if (p.role is ActionRole.UNLOCK and bolt_open) or (
            p.role is ActionRole.OPEN_HOUSE_ON and house_on
        ):
            return ChangeReason.ALREADY_UNLOCKED
        if p.interval_end <= now:
            return ChangeReason.INTERVAL_OVER
        return ChangeReason.LATE if should_skip(p.at, now, max_lateness) else None
    if need_close:
        return ChangeReason.CLOSED_NOW
    if bolt_open or house_on:
        return ChangeReason.KEPT_OPEN
    return ChangeReason.LATE if should_skip(p.at, now, max_lateness) else None
