"""The current state of each lock, folded from its events.

:func:`apply_event` is the pure rule; the ``locks`` row holds the result. Only lock events move
it: a status poll never overrides newer webhook state (go-loqed's rule).

* ``state_changed`` sets the bolt state (the *reached* state);
* ``motor_stall`` sets the bolt state to ``unknown``;
* ``go_to_state`` changes nothing but proves the lock is online;
* ``battery`` sets percentage/type; ``online`` sets online and signal strengths (a BLE
  strength of -1 means the lock lost its bridge);
* state, go-to and stall events prove the lock is online.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from roomkey.loqed import BoltState, EventKind, parse_bolt_state
from roomkey.service.db.models import Lock

__all__ = ["EventFacts", "LockSnapshot", "apply_event", "snapshot_of"]

_MOVEMENT = (EventKind.STATE_CHANGED, EventKind.MOTOR_STALL, EventKind.GO_TO_STATE)


class EventFacts(Protocol):
    """What the state rule reads of an event: a parsed :class:`roomkey.loqed.LockEvent`, or
    the light record the applier rebuilds from a stored receipt."""

    @property
    def event_type(self) -> str: ...
    @property
    def kind(self) -> EventKind: ...
    @property
    def bolt_state(self) -> BoltState | None: ...
    @property
    def key_local_id(self) -> int | None: ...
    @property
    def battery_percentage(self) -> int | None: ...
    @property
    def battery_type(self) -> str | None: ...
    @property
    def ble_strength(self) -> int | None: ...
    @property
    def wifi_strength(self) -> int | None: ...
    @property
    def online(self) -> bool | None: ...


@dataclass(frozen=True, slots=True)
class LockSnapshot:
    """What we know about a lock right now."""

    bolt_state: BoltState | None = None
    battery_percentage: int | None = None
    battery_type: str | None = None
    online: bool | None = None
    ble_strength: int | None = None
    wifi_strength: int | None = None


def apply_event(snapshot: LockSnapshot, event: EventFacts) -> LockSnapshot:
    """The snapshot after ``event`` (one new snapshot, built once)."""
    bolt_state = snapshot.bolt_state
    battery_percentage = snapshot.battery_percentage
    battery_type = snapshot.battery_type
    online = snapshot.online
    kind = event.kind
    if kind is EventKind.STATE_CHANGED:
        bolt_state = event.bolt_state or BoltState.UNKNOWN
    elif kind is EventKind.MOTOR_STALL:
        bolt_state = BoltState.UNKNOWN
    elif kind is EventKind.BATTERY:
        if event.battery_percentage is not None and 0 <= event.battery_percentage <= 100:
            battery_percentage = event.battery_percentage
        if event.battery_type is not None:
            battery_type = event.battery_type[:32]
    ble = event.ble_strength
    ble_strength = snapshot.ble_strength if ble is None else ble
    wifi_strength = snapshot.wifi_strength if event.wifi_strength is None else event.wifi_strength
    if kind in _MOVEMENT:
        online = True
    elif kind is EventKind.ONLINE:
        reported = event.online
        if reported is None and ble is not None:
            reported = ble >= 0
        if reported is not None:
            online = reported
    new = LockSnapshot(
        bolt_state=bolt_state,
        battery_percentage=battery_percentage,
        battery_type=battery_type,
        online=online,
        ble_strength=ble_strength,
        wifi_strength=wifi_strength,
    )
    return new


def snapshot_of(lock: Lock) -> LockSnapshot:
    """The stored state of a lock row."""
    return LockSnapshot(
        bolt_state=parse_bolt_state(lock.bolt_state) if lock.bolt_state else None,
        battery_percentage=lock.battery_percentage,
        battery_type=lock.battery_type,
        online=lock.online,
        ble_strength=lock.ble_strength,
        wifi_strength=lock.wifi_strength,
    )
