"""The oracle: what should have happened (the planner over the simulator's final bookings)
against what did (the simulated locks' logs, the simulator's read marks, roomkey's database).

Checks, each counted and listed:

* **lost messages** — a Lockme message not marked read, or not applied in roomkey's database;
* **read before durable** — Lockme was told "read" while roomkey had not committed the
  message's effect (recorded by :class:`ReadWatch` at the moment of the ``POST``);
* **duplicated commands** — a lock received a command for one planned action twice, or a
  command no plan asked for (``unexpected``); an OPEN received twice is counted separately;
* **blind retries** — a command attempted again after an attempt that may have left;
* **missing door actions** — a planned action due during the run that the lock never got
  and roomkey never reported (skipped, failed or expired with a reason, or superseded by a
  later action on that lock);
* **plan drift** — future actions in roomkey's plan that differ from the correct plan;
* **mirror drift** — roomkey's reservation mirror differs from Lockme's bookings.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine, make_url

from harness.world import POLICY, World
from roomkey.service.db.models import (
    Command,
    CommandAttempt,
    CommandState,
    DoorAction,
    DoorActionStatus,
    LockmeMessage,
    MessageState,
    Reservation,
)
from roomkey.service.planner import BookingInput, PlannedAction, plan_room
from roomkey.service.policy import DoorPolicy
from roomkey.sim.loqed import Verdict


def sync_engine(url: str) -> Engine:
    """A synchronous engine on roomkey's database (the harness reads it while roomkey runs)."""
    parsed = make_url(url)
    driver = parsed.drivername.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")
    return create_engine(parsed.set(drivername=driver), pool_pre_ping=True)


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


class ReadWatch:
    """Wraps the Lockme simulator's mark-read: at the moment Lockme hears "read", is the
    message's effect already committed in roomkey's database?"""

    def __init__(self, world: World, engine: Engine) -> None:
        self.engine = engine
        self.checked = 0
        self.premature: list[str] = []
        sim = world.lockme
        original = sim.mark_read

        def mark_read(message_id: int | str, *, user_id: int | None = None) -> bool:
            message = sim.message(message_id, user_id=user_id)
            if not message.read and message.action != "test":
                self.checked += 1
                with engine.connect() as conn:
                    applied = conn.execute(
                        select(LockmeMessage.applied_at).where(
                            LockmeMessage.message_id == str(message_id)
                        )
                    ).scalar_one_or_none()
                if applied is None:
                    self.premature.append(str(message_id))
            return original(message_id, user_id=user_id)

        sim.mark_read = mark_read  # type: ignore[method-assign]


@dataclass
class Verdicts:
    messages: int = 0
    messages_read: int = 0
    never_delivered: list[str] = field(default_factory=list)
    """Lockme gave up before any delivery reached roomkey (roomkey cannot know them; the
    reconciliation heals their effect, which the mirror and plan checks verify)."""
    lost_messages: list[str] = field(default_factory=list)
    read_before_durable: list[str] = field(default_factory=list)
    planned_actions_due: int = 0
    executed: int = 0
    reported: Counter[str] = field(default_factory=Counter)
    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    opens_twice: list[str] = field(default_factory=list)
    blind_retries: list[str] = field(default_factory=list)
    commands_per_action_over_one: list[str] = field(default_factory=list)
    commands_received: int = 0
    future_actions_checked: int = 0
    plan_drift: list[str] = field(default_factory=list)
    mirror_checked: int = 0
    mirror_drift: list[str] = field(default_factory=list)
    lateness_seconds: list[float] = field(default_factory=list)

    def violations(self) -> dict[str, list[str]]:
        return {
            name: value
            for name, value in {
                "lost_messages": self.lost_messages,
                "read_before_durable": self.read_before_durable,
                "missing_door_actions": self.missing,
                "duplicated_commands": self.duplicated,
                "unexpected_commands": self.unexpected,
                "opens_twice": self.opens_twice,
                "blind_retries": self.blind_retries,
                "several_commands_for_one_action": self.commands_per_action_over_one,
                "plan_drift": self.plan_drift,
                "mirror_drift": self.mirror_drift,
            }.items()
            if value
        }

    def figures(self) -> dict[str, Any]:
        late = sorted(self.lateness_seconds)
        return {
            "messages_checked": self.messages,
            "messages_read": self.messages_read,
            "messages_never_delivered": len(self.never_delivered),
            "lost_messages": len(self.lost_messages),
            "read_before_durable": len(self.read_before_durable),
            "door_actions_due": self.planned_actions_due,
            "door_actions_executed": self.executed,
            "door_actions_reported": dict(self.reported),
            "missing_door_actions": len(self.missing),
            "commands_received_by_locks": self.commands_received,
            "duplicated_commands": len(self.duplicated),
            "unexpected_commands": len(self.unexpected),
            "opens_twice": len(self.opens_twice),
            "blind_retries": len(self.blind_retries),
            "future_actions_checked": self.future_actions_checked,
            "plan_drift": len(self.plan_drift),
            "reservations_checked": self.mirror_checked,
            "mirror_drift": len(self.mirror_drift),
            "lateness_p50_s": round(late[len(late) // 2], 3) if late else None,
            "lateness_max_s": round(late[-1], 3) if late else None,
        }


def correct_plan(world: World, now: dt.datetime) -> list[PlannedAction]:
    """The plan roomkey should hold: the planner over Lockme's final bookings."""
    actions: list[PlannedAction] = []
    for room in world.rooms:
        bookings = [
            BookingInput(
                reservation_id=str(r.id), room_id=r.roomid, date=r.date, hour=r.hour,
                duration_minutes=r.duration, status=bool(r.status), source=r.source,
            )
            for r in world.lockme.reservations.values()
            if r.roomid == room.room_id
        ]
        policy = DoorPolicy.model_validate({**POLICY, "unlock_mode": room.unlock_mode})
        plan = plan_room(room.room_id, bookings, policy, [room.lock.roomkey_id], now=now)
        actions += plan.actions
    return sorted(actions, key=lambda a: a.sort_key)


def judge(
    world: World,
    engine: Engine,
    *,
    executed_until: float,
    watch: ReadWatch | None = None,
    started_at: float = 0.0,
) -> Verdicts:
    """Compare; ``executed_until`` is the last moment whose door actions must have run."""
    v = Verdicts()
    now = dt.datetime.now(dt.UTC)
    lateness = dt.timedelta(minutes=POLICY["max_lateness_minutes"])
    with engine.connect() as conn:
        rows = {m.message_id: m for m in conn.execute(select(LockmeMessage)).all()}
        actions = {a.key: a for a in conn.execute(select(DoorAction)).all()}
        commands = list(conn.execute(select(Command)).all())
        attempts = list(
            conn.execute(select(CommandAttempt).order_by(CommandAttempt.id)).all()
        )
        mirror = {r.id: r for r in conn.execute(select(Reservation)).all()}

    # -- messages ------------------------------------------------------------------------
    for message in world.lockme.messages():
        if message.action == "test":
            continue
        v.messages += 1
        v.messages_read += bool(message.read)
        row = rows.get(str(message.id))
        delivered = any(
            a.status_code is not None and 200 <= a.status_code < 300 for a in message.attempts
        )
        if row is None and not delivered and not message.read:
            v.never_delivered.append(str(message.id))
            continue
        if not message.read or row is None or row.state != MessageState.ACKED or (
            row.applied_at is None
        ):
            state = "absent" if row is None else f"{row.state}/applied={row.applied_at}"
            v.lost_messages.append(f"{message.id} ({message.action}, read={message.read}, {state})")
    if watch is not None:
        v.read_before_durable = list(watch.premature)

    # -- commands at the locks -------------------------------------------------------------
    plan = correct_plan(world, now)
    by_command: dict[str, list[Any]] = {}
    for command in commands:
        if command.door_action_key:
            by_command.setdefault(command.door_action_key, []).append(command)
    for key, found in by_command.items():
        if len(found) > 1:
            v.commands_per_action_over_one.append(f"{key}: {[c.id for c in found]}")
    per_command_attempts: dict[str, list[Any]] = {}
    for attempt in attempts:
        per_command_attempts.setdefault(attempt.command_id, []).append(attempt)
    for command_id, tries in per_command_attempts.items():
        for earlier, later in itertools.pairwise(tries):
            if earlier.outcome != "not_sent":  # only a request that never left may be retried
                v.blind_retries.append(f"{command_id}: attempt {later.id} after {earlier.id}")
    for room in world.rooms:
        spec = room.lock
        received = [
            r for r in world.loqed.received(spec.loqed_id)
            if r.verdict is Verdict.ACCEPTED and r.key_local_id == spec.local_key_id
            and r.at >= started_at
        ]
        v.commands_received += len(received)
        used = [False] * len(received)
        for action in (a for a in plan if a.lock_id == spec.roomkey_id):
            at = action.at.timestamp()
            if at > executed_until:
                continue
            v.planned_actions_due += 1
            match = None
            for i, got in enumerate(received):
                if used[i] or got.action != action.command.value:
                    continue
                if at - 2.0 <= got.at <= at + lateness.total_seconds() + 5.0:
                    match = i
                    break
            if match is not None:
                used[match] = True
                v.executed += 1
                v.lateness_seconds.append(received[match].at - at)
                continue
            stored = actions.get(action.key)
            status = stored.status if stored is not None else None
            command = next(
                (c for c in by_command.get(action.key, []) if c.state in (
                    CommandState.FAILED, CommandState.EXPIRED, CommandState.SUPERSEDED)),
                None,
            )
            if status == DoorActionStatus.SKIPPED:
                v.reported["skipped"] += 1
            elif command is not None:
                v.reported[f"{command.state.value}:{command.reason or 'superseded'}"] += 1
            else:
                v.missing.append(
                    f"{action.key} {action.command.value} at {action.at.isoformat()} "
                    f"(stored: {status})"
                )
        for i, got in enumerate(received):
            if used[i]:
                continue
            same = [
                a for a in plan if a.lock_id == spec.roomkey_id
                and a.command.value == got.action
                and abs(a.at.timestamp() - got.at) <= lateness.total_seconds() + 5.0
            ]
            label = f"{spec.roomkey_id} {got.action} at {got.at:.3f}"
            (v.duplicated if same else v.unexpected).append(label)
            if got.action == "open" and same:
                v.opens_twice.append(label)

    # -- the stored plan of the future -------------------------------------------------------
    # Compared as (lock, command, time): roomkey may re-key an action it re-created after a
    # supersede (``…~1``), which is the same door action.
    horizon = max(now.timestamp(), executed_until) + 5.0
    kind_of = {"unlock": "day_lock", "lock": "night_lock", "open": "open"}
    want = Counter(
        (a.lock_id, a.command.value, round(a.at.timestamp()))
        for a in plan if a.at.timestamp() > horizon
    )
    have = Counter(
        (row.lock_id, kind_of.get(row.kind.value, row.kind.value),
         round(_utc(row.planned_at).timestamp()))
        for row in actions.values()
        if row.status == DoorActionStatus.PLANNED and _utc(row.planned_at).timestamp() > horizon
    )
    v.future_actions_checked = sum(want.values())
    for item in sorted((want - have) + (have - want)):
        side = "missing from roomkey's plan" if want[item] > have[item] else "not in the plan"
        lock, command, at = item
        v.plan_drift.append(
            f"{lock} {command} at {dt.datetime.fromtimestamp(at, dt.UTC).isoformat()}: {side}"
        )

    # -- the reservation mirror --------------------------------------------------------------
    sim_res = world.lockme.reservations
    for rid, res in sim_res.items():
        v.mirror_checked += 1
        row = mirror.get(rid)
        want_row = (res.roomid, res.date, res.hour, int(res.status))
        have_row = None if row is None or row.deleted else (
            row.room_id, row.date.isoformat(), row.hour.strftime("%H:%M:%S"), int(row.status)
        )
        if want_row != have_row:
            v.mirror_drift.append(f"{rid}: lockme {want_row} roomkey {have_row}")
    for rid, row in mirror.items():
        if not row.deleted and rid not in sim_res:
            v.mirror_drift.append(f"{rid}: deleted at lockme, live in roomkey")
    return v
