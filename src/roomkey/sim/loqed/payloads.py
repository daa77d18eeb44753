"""Event payloads exactly as the bridge and the cloud send them.

Bridge bodies are compact JSON with keys in the order seen on real hardware (reference
§3.4). Cloud bodies come in the *documented* shape (``key_account_e-mail``, alphanumeric
``lock_id``, numbers) or the *observed* one (``key_account_email``, numeric ``lock_id``,
numbers as strings, ``""`` for no key, IFTTT-style ``value1..3``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from roomkey.sim.loqed.model import NO_KEY, BoltState, SimKey, SimLock

__all__ = [
    "TRIGGER_FIELDS",
    "EventKind",
    "SimEvent",
    "bridge_body",
    "cloud_body",
    "flags_from_fields",
    "go_to_event",
    "state_event",
    "trigger_bit",
]

EventKind = Literal["state", "go_to", "battery", "online", "raw"]

TRIGGER_FIELDS = (
    "trigger_state_changed_open",
    "trigger_state_changed_latch",
    "trigger_state_changed_night_lock",
    "trigger_state_changed_unknown",
    "trigger_state_goto_open",
    "trigger_state_goto_latch",
    "trigger_state_goto_night_lock",
    "trigger_battery",
    "trigger_online_status",
)

_STATE_EVENT = {
    BoltState.OPEN: "STATE_CHANGED_OPEN",
    BoltState.DAY_LOCK: "STATE_CHANGED_LATCH",
    BoltState.NIGHT_LOCK: "STATE_CHANGED_NIGHT_LOCK",
    BoltState.UNKNOWN: "STATE_CHANGED_UNKNOWN",
}
_STATE_BIT = {
    BoltState.OPEN: 0, BoltState.DAY_LOCK: 1, BoltState.NIGHT_LOCK: 2, BoltState.UNKNOWN: 3
}
_GOTO_BIT = {BoltState.OPEN: 4, BoltState.DAY_LOCK: 5, BoltState.NIGHT_LOCK: 6}


@dataclass(frozen=True, slots=True)
class SimEvent:
    """Something the lock reports. ``state`` is the reached state or the go-to target."""

    kind: EventKind
    event_type: str | None = None
    state: BoltState | None = None
    key_local_id: int = NO_KEY
    raw: dict[str, Any] | None = None
    bit: int | None = None  # trigger bit of a raw event (None: every webhook)


def state_event(state: BoltState, key_local_id: int = NO_KEY, *, remote: bool = False) -> SimEvent:
    """``STATE_CHANGED_*`` (``_REMOTE`` suffix when asked) for a reached state."""
    name = _STATE_EVENT[state]
    if remote and state is not BoltState.UNKNOWN:
        name += "_REMOTE"
    return SimEvent("state", name, state, key_local_id)


def go_to_event(event_type: str, target: BoltState, key_local_id: int = NO_KEY) -> SimEvent:
    return SimEvent("go_to", event_type, target, key_local_id)


def trigger_bit(event: SimEvent) -> int | None:
    """The webhook trigger bit that selects ``event`` (None: sent to every webhook)."""
    if event.kind == "state" and event.state is not None:
        return _STATE_BIT[event.state]
    if event.kind == "go_to" and event.state is not None:
        return _GOTO_BIT.get(event.state)
    if event.kind == "battery":
        return 7
    if event.kind == "online":
        return 8
    return event.bit


def flags_from_fields(body: dict[str, Any]) -> int:
    """Bitmap from the nine ``trigger_*`` fields (0/1, bools or numeric strings)."""
    flags = 0
    for bit, name in enumerate(TRIGGER_FIELDS):
        value = body.get(name, 0)
        if isinstance(value, str):
            value = value.strip()
            on = value not in ("", "0", "false", "False")
        else:
            on = bool(value)
        if on:
            flags |= 1 << bit
    return flags


def _bridge_dict(event: SimEvent, lock: SimLock, mac_wifi: str, mac_ble: str) -> dict[str, Any]:
    if event.kind == "raw":
        return dict(event.raw or {})
    if event.kind == "state":
        state = event.state or BoltState.UNKNOWN
        return {
            "requested_state": state.wire,
            "requested_state_numeric": state.numeric,
            "mac_wifi": mac_wifi,
            "mac_ble": mac_ble,
            "event_type": event.event_type,
            "key_local_id": event.key_local_id,
        }
    if event.kind == "go_to":
        return {
            "go_to_state": (event.state or BoltState.UNKNOWN).wire,
            "event_type": event.event_type,
            "mac_wifi": mac_wifi,
            "mac_ble": mac_ble,
            "key_local_id": event.key_local_id,
        }
    if event.kind == "battery":
        return {
            "battery_type": lock.battery_type,
            "battery_percentage": lock.battery_percentage,
            "mac_wifi": mac_wifi,
            "mac_ble": mac_ble,
        }
    return {
        "wifi_strength": lock.wifi_strength,
        "ble_strength": lock.ble_strength if lock.online else -1,
        "mac_wifi": mac_wifi,
        "mac_ble": mac_ble,
    }


def bridge_body(event: SimEvent, lock: SimLock, *, mac_wifi: str, mac_ble: str) -> bytes:
    """The raw bytes the bridge POSTs: compact JSON, observed key order."""
    data = _bridge_dict(event, lock, mac_wifi, mac_ble)
    return json.dumps(data, separators=(",", ":")).encode("utf-8")


def cloud_body(
    event: SimEvent,
    lock: SimLock,
    key: SimKey | None,
    *,
    shape: Literal["documented", "observed"],
) -> dict[str, Any]:
    """The JSON object the LOQED backend POSTs to a cloud webhook (unsigned)."""
    observed = shape == "observed"
    lock_ref: Any = str(lock.numeric_id) if observed else lock.lock_id

    def num(value: int) -> Any:
        return str(value) if observed else value

    if event.kind == "raw":
        return dict(event.raw or {})
    if event.kind == "battery":
        return {"battery_percentage": num(lock.battery_percentage), "lock_id": lock_ref}
    if event.kind == "online":
        return {"online": num(1 if lock.online else 0), "lock_id": lock_ref}
    has_key = event.key_local_id != NO_KEY
    if observed:
        key_id: Any = str(event.key_local_id) if has_key else ""
    else:
        key_id = event.key_local_id if has_key else None
    state = (event.state or BoltState.UNKNOWN).wire
    data: dict[str, Any] = (
        {"requested_state": state} if event.kind == "state" else {"go_to_state": state}
    )
    data["event_type"] = event.event_type
    data["lock_id"] = lock_ref
    data["key_local_id"] = key_id
    data["key_name_user"] = key.name if key else ""
    data["key_name_admin"] = key.admin_name if key else ""
    data["key_account_email" if observed else "key_account_e-mail"] = (
        key.account_email if key else ""
    )
    data["key_account_name"] = key.account_name if key else ""
    if observed:
        data["value1"] = f"{event.event_type} LockID: {lock.numeric_id}"
        data["value2"] = (key.name if key else "") or ""
        data["value3"] = key.account_email if key else ""
    return data
