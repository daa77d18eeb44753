"""Alerts an operator must see: motor stall, lock offline, low battery, failed or unconfirmed
commands, and door actions skipped because they were too late.

* Lock alerts follow the lock (:func:`lock_alert_changes`): a stall opens on ``MOTOR_STALL``
  and resolves when the bolt reaches a known state; offline opens when the lock reports
  losing its bridge and resolves when it is back (or moves); low battery opens below the
  threshold and resolves only ``hysteresis`` points above it, so a wobbling reading does
  not flap.
* Command alerts open when a command ends badly (one open alert per lock and kind, its
  ``count`` bumped on repeats) and resolve when a later command to that lock is confirmed.
* Skipped actions get one alert each (they stay open until acknowledged).
* ``event_apply_failed`` opens when a lock's received events keep failing to apply (they are
  kept and retried) and resolves once they applied.

:func:`apply_alert_batch` stores the lock-alert changes of a whole batch of events with one
look-up of the lock's open alerts: a resolve of an alert that is not open costs nothing.

One open alert per ``dedupe_key`` (``"{kind}:{lock_id}"``, or ``"action_skipped:{key}"``),
enforced by the database across replicas.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roomkey.loqed import BoltState, EventKind
from roomkey.service.db.alerts import open_alert_if_new, resolve_alerts
from roomkey.service.db.models import Alert
from roomkey.service.lock_state import EventFacts, LockSnapshot

__all__ = [
    "DEFAULT_HYSTERESIS",
    "DEFAULT_LOW_BATTERY",
    "RESOLVER",
    "AlertChange",
    "AlertKind",
    "apply_alert_batch",
    "dedupe_key",
    "lock_alert_changes",
    "raise_alert",
    "resolve_alert",
]

DEFAULT_LOW_BATTERY = 20
"""Percent below which a lock's battery is reported."""
DEFAULT_HYSTERESIS = 5
RESOLVER = "roomkey"
"""``acknowledged_by`` of alerts roomkey resolves itself."""


class AlertKind(enum.StrEnum):
    """The closed list of alert kinds."""

    MOTOR_STALL = "motor_stall"
    LOCK_OFFLINE = "lock_offline"
    LOW_BATTERY = "low_battery"
    COMMAND_FAILED = "command_failed"
    COMMAND_UNCONFIRMED = "command_unconfirmed"
    ACTION_SKIPPED = "action_skipped"
    EVENT_APPLY_FAILED = "event_apply_failed"


@dataclass(frozen=True, slots=True)
class AlertChange:
    """Open (``resolve=False``) or resolve the lock's alert of ``kind``."""

    kind: AlertKind
    resolve: bool
    message: str


def lock_alert_changes(
    before: LockSnapshot,
    after: LockSnapshot,
    event: EventFacts,
    *,
    low_battery: int = DEFAULT_LOW_BATTERY,
    hysteresis: int = DEFAULT_HYSTERESIS,
) -> list[AlertChange]:
    """Alerts to open or resolve after ``event`` moved a lock from ``before`` to ``after``."""
    changes: list[AlertChange] = []
    if event.kind is EventKind.MOTOR_STALL:
        changes.append(
            AlertChange(AlertKind.MOTOR_STALL, False, "motor stalled; the bolt state is unknown")
        )
    elif (
        event.kind is EventKind.STATE_CHANGED
        and after.bolt_state is not None
        and after.bolt_state is not BoltState.UNKNOWN
    ):
        changes.append(
            AlertChange(AlertKind.MOTOR_STALL, True, f"bolt reached {after.bolt_state.value}")
        )

    if after.online is False and before.online is not False:
        changes.append(AlertChange(AlertKind.LOCK_OFFLINE, False, "lock lost its bridge"))
    elif after.online is True and before.online is False:
        changes.append(AlertChange(AlertKind.LOCK_OFFLINE, True, "lock back online"))

    pct = after.battery_percentage
    if event.kind is EventKind.BATTERY and pct is not None:
        if pct < low_battery:
            message = f"battery at {pct}% (below {low_battery}%)"
            changes.append(AlertChange(AlertKind.LOW_BATTERY, False, message))
        elif pct >= low_battery + hysteresis:
            changes.append(AlertChange(AlertKind.LOW_BATTERY, True, f"battery at {pct}%"))
    return changes


def dedupe_key(kind: AlertKind, subject: str) -> str:
    """The identity of an open alert: kind plus its lock id (or door action key)."""
    return f"{kind.value}:{subject}"[:256]


async def raise_alert(
    session: AsyncSession,
    kind: AlertKind,
    *,
    subject: str,
    message: str,
    now: datetime,
    lock_id: str | None = None,
    room_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> Alert | None:
    """Open an alert (None when one with the same kind and subject is already open)."""
    return await open_alert_if_new(
        session,
        kind=kind.value,
        dedupe_key=dedupe_key(kind, subject),
        message=message,
        now=now,
        lock_id=lock_id,
        room_id=room_id,
        details=details,
    )


async def resolve_alert(
    session: AsyncSession, kind: AlertKind, *, subject: str, now: datetime
) -> int:
    """Close the open alert of ``kind`` for ``subject`` (0 when none was open)."""
    return await resolve_alerts(session, dedupe_key(kind, subject), by=RESOLVER, now=now)


async def apply_alert_batch(
    session: AsyncSession,
    changes: Sequence[tuple[str, AlertChange, datetime]],
    *,
    maybe_open: Collection[str] | None = None,
) -> None:
    """Store the ``(lock_id, change, at)`` of a batch of events, in order.

    Stores what :func:`lock_alert_changes` decided, per event; but the open alerts of every lock
    in the batch are read with one query, so resolving an alert that is not open (every
    ``state_changed`` resolves ``motor_stall``) sends no statement. ``maybe_open``: the only
    locks that can have open alerts (the caller knows; no query when none of them changes).
    """
    if not changes:
        return
    keys = {
        dedupe_key(change.kind, lock_id)
        for lock_id, change, _ in changes
        if maybe_open is None or lock_id in maybe_open
    }
    open_keys: set[str] = set()
    if keys:
        stmt = select(Alert.dedupe_key).where(
            Alert.dedupe_key.in_(sorted(keys)), Alert.acknowledged_at.is_(None)
        )
        open_keys = set((await session.execute(stmt)).scalars())
    for lock_id, change, at in changes:
        key = dedupe_key(change.kind, lock_id)
        if change.resolve:
            if key in open_keys:
                await resolve_alert(session, change.kind, subject=lock_id, now=at)
                open_keys.discard(key)
        else:
            await raise_alert(
                session,
                change.kind,
                subject=lock_id,
                message=change.message,
                now=at,
                lock_id=lock_id,
            )
            open_keys.add(key)
