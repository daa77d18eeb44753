"""Lock events from the bridge and the cloud: one lenient parser and the bridge HASH check.

:func:`parse_event` accepts every payload family (state reached, going to a state, motor stall,
battery, online/signal) in the documented and the observed shapes: numbers as strings,
``key_account_email`` or ``key_account_e-mail``, ``key_local_id`` as 255/""/null/absent (all
meaning "no key"), missing ``go_to_state``, IFTTT-style ``value1..3``, numeric or alphanumeric
``lock_id``. Unknown ``event_type`` values are kept with ``kind=unknown``. It raises
:class:`~roomkey.loqed.errors.InvalidPayloadError` and nothing else.

:func:`verify_bridge_webhook` checks a delivery from the bridge (see its docstring for the
policy on the new gateway's missing ``TIMESTAMP``).
"""

from __future__ import annotations

import enum
import hmac
import json
import logging
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import (
    BadSignatureError,
    InvalidPayloadError,
    InvalidRequestError,
    MissingTimestampError,
    StaleTimestampError,
)
from .models import BoltState, as_bool, as_int, as_str, parse_bolt_state
from .signing import CommandFormatError, decode_key, webhook_payload_hash

__all__ = [
    "NO_KEY_ID",
    "EventKind",
    "EventSource",
    "LockEvent",
    "parse_event",
    "verify_bridge_webhook",
]

log = logging.getLogger(__name__)

NO_KEY_ID = 255
"""``key_local_id`` the bridge uses for "no key" (knob, button, automatic re-latch)."""


class EventKind(enum.StrEnum):
    """What an event says. Compares equal to its string value."""

    STATE_CHANGED = "state_changed"
    GO_TO_STATE = "go_to_state"
    MOTOR_STALL = "motor_stall"
    BATTERY = "battery"
    ONLINE = "online"
    UNKNOWN = "unknown"


class EventSource(enum.StrEnum):
    """Where an event came from."""

    BRIDGE = "bridge"
    CLOUD = "cloud"


class LockEvent(BaseModel):
    """One parsed lock event. ``raw`` keeps the payload exactly as decoded.

    ``bolt_state`` is the reached state for ``state_changed`` (and ``unknown`` for a motor
    stall), the target for ``go_to_state``, None otherwise. ``event_type`` is the payload's own
    name; families without one get ``BATTERY`` or ``ONLINE_STATUS`` (or ``""``).
    """

    model_config = ConfigDict(frozen=True)

    event_type: str
    kind: EventKind
    bolt_state: BoltState | None = None
    key_local_id: int | None = None
    lock_id: str | None = None
    mac_wifi: str | None = None
    mac_ble: str | None = None
    battery_percentage: int | None = None
    battery_type: str | None = None
    ble_strength: int | None = None
    wifi_strength: int | None = None
    online: bool | None = None
    key_name_user: str | None = None
    key_name_admin: str | None = None
    key_account_email: str | None = None
    key_account_name: str | None = None
    value1: str | None = None
    value2: str | None = None
    value3: str | None = None
    source: EventSource = EventSource.BRIDGE
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @property
    def remote(self) -> bool:
        """True for events caused by a remote command (``…_REMOTE…`` event types)."""
        return "REMOTE" in self.event_type.upper()


# --------------------------------------------------------------------------- parsing

_SUFFIXES: tuple[tuple[str, BoltState], ...] = (
    ("_NIGHT_LOCK", BoltState.NIGHT_LOCK),
    ("_NIGHTLOCK", BoltState.NIGHT_LOCK),
    ("_LATCH", BoltState.DAY_LOCK),
    ("_DAY_LOCK", BoltState.DAY_LOCK),
    ("_OPEN", BoltState.OPEN),
    ("_UNKNOWN", BoltState.UNKNOWN),
    ("_LOCK", BoltState.NIGHT_LOCK),
)
_LOCK_ID_IN_TEXT = re.compile(r"LockID:\s*([0-9]+)", re.IGNORECASE)


# Catalogue names whose target the suffix rule cannot tell (reference §3.4).
_KNOWN_TARGETS = {
    "GO_TO_STATE_MANUAL_UNLOCK_VIA_OUTSIDE_MODULE_PIN": BoltState.OPEN,
    "GO_TO_STATE_MANUAL_UNLOCK_VIA_OUTSIDE_MODULE_BUTTON": BoltState.OPEN,
}


def _state_from_suffix(name: str) -> BoltState | None:
    if name in _KNOWN_TARGETS:
        return _KNOWN_TARGETS[name]
    stem = name.upper().removesuffix("_REMOTE")
    for suffix, state in _SUFFIXES:
        if stem.endswith(suffix):
            return state
    return None


def _decode(payload: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(payload, Mapping):
        data: Any = payload
    else:
        if isinstance(payload, bytes | bytearray | memoryview):
            try:
                text = bytes(payload).decode("utf-8-sig")
            except UnicodeDecodeError:
                raise InvalidPayloadError("event body is not UTF-8") from None
        elif isinstance(payload, str):
            text = payload
        else:
            raise InvalidPayloadError("event payload must be bytes, str or a mapping")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise InvalidPayloadError("event body is not valid JSON") from None
    if not isinstance(data, Mapping):
        raise InvalidPayloadError("event body is not a JSON object")
    if not all(isinstance(k, str) for k in data):
        raise InvalidPayloadError("event keys must be strings")
    return dict(data)


def _key_id(value: Any) -> int | None:
    number = as_int(value)
    if number is None or not 0 <= number < NO_KEY_ID:
        return None
    return number


def _classify(event_type: str, raw: Mapping[str, Any]) -> tuple[str, EventKind, BoltState | None]:
    name = event_type.strip().upper()
    if name == "MOTOR_STALL":
        return event_type, EventKind.MOTOR_STALL, BoltState.UNKNOWN
    if name.startswith("STATE_CHANGED"):
        state = _state_from_suffix(name) or parse_bolt_state(raw.get("requested_state"))
        if state is None:
            state = parse_bolt_state(raw.get("requested_state_numeric"))
        return event_type, EventKind.STATE_CHANGED, state
    if name.startswith(("GO_TO_STATE", "GOTO_STATE")):
        state = _state_from_suffix(name) or parse_bolt_state(raw.get("go_to_state"))
        if state is None:
            state = parse_bolt_state(raw.get("go_to_state_numeric"))
        return event_type, EventKind.GO_TO_STATE, state
    if name:
        return event_type, EventKind.UNKNOWN, None
    # No event_type: infer the family from its fields.
    if "battery_percentage" in raw or "battery_type" in raw:
        return "BATTERY", EventKind.BATTERY, None
    if "online" in raw or "ble_strength" in raw or "wifi_strength" in raw:
        return "ONLINE_STATUS", EventKind.ONLINE, None
    return "", EventKind.UNKNOWN, None


def parse_event(
    payload: bytes | str | Mapping[str, Any],
    *,
    source: EventSource | Literal["bridge", "cloud"] = EventSource.BRIDGE,
) -> LockEvent:
    """Parse a bridge or cloud webhook body (raw bytes, text or decoded mapping).

    Raises :class:`InvalidPayloadError` (only) when the payload is not a JSON object with
    string keys or ``event_type`` is not a string. Malformed individual fields become None and
    stay visible in ``raw``.
    """
    try:
        src = EventSource(source)
    except ValueError:
        raise InvalidPayloadError("source must be 'bridge' or 'cloud'") from None
    raw = _decode(payload)
    event_type_value = raw.get("event_type")
    if event_type_value is None:
        event_type_value = ""
    if not isinstance(event_type_value, str):
        raise InvalidPayloadError("event_type is not a string")
    event_type, kind, state = _classify(event_type_value, raw)

    ble = as_int(raw.get("ble_strength"))
    online = as_bool(raw.get("online"))
    if online is None and kind is EventKind.ONLINE and ble is not None:
        online = ble != -1
    lock_id = as_str(raw.get("lock_id"))
    if lock_id is None:
        for field in ("value1", "value2", "value3"):
            text = raw.get(field)
            match = _LOCK_ID_IN_TEXT.search(text) if isinstance(text, str) else None
            if match:
                lock_id = match.group(1)
                break
    email = raw.get("key_account_email")
    if email is None or email == "":
        email = raw.get("key_account_e-mail")
    return LockEvent(
        event_type=event_type,
        kind=kind,
        bolt_state=state,
        key_local_id=_key_id(raw.get("key_local_id")),
        lock_id=lock_id,
        mac_wifi=as_str(raw.get("mac_wifi")),
        mac_ble=as_str(raw.get("mac_ble")),
        battery_percentage=as_int(raw.get("battery_percentage")),
        battery_type=as_str(raw.get("battery_type")),
        ble_strength=ble,
        wifi_strength=as_int(raw.get("wifi_strength")),
        online=online,
        key_name_user=as_str(raw.get("key_name_user")),
        key_name_admin=as_str(raw.get("key_name_admin")),
        key_account_email=as_str(email),
        key_account_name=as_str(raw.get("key_account_name")),
        value1=as_str(raw.get("value1")),
        value2=as_str(raw.get("value2")),
        value3=as_str(raw.get("value3")),
        source=src,
        raw=raw,
    )


# --------------------------------------------------------------------------- verification

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_DIGITS = re.compile(r"[0-9]{1,19}")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == wanted:
            return value if isinstance(value, str) else None
    return None


def verify_bridge_webhook(
    raw_body: bytes,
    headers: Mapping[str, str],
    *,
    bridge_key: str,
    now: float,
    max_skew: float | None = 10.0,
    accept_missing_timestamp: bool = False,
) -> None:
    """Check a webhook the bridge sent; return None when it is acceptable.

    ``HASH`` must equal ``hex(SHA-256(raw_body ‖ u64be(TIMESTAMP) ‖ bridge_key))``; it is
    compared in constant time over the **raw** bytes received (never re-serialised JSON).
    Then ``|now − TIMESTAMP|`` must not exceed ``max_skew`` seconds (None disables the check).
    Header names are matched case-insensitively.

    Missing-``TIMESTAMP`` policy (new Shelly-based gateway, whose signing scheme is not
    public): by default the delivery is rejected with :class:`MissingTimestampError`. With
    ``accept_missing_timestamp=True`` a delivery without ``TIMESTAMP`` is accepted
    **unverified** (its ``HASH``, if any, cannot be checked) — opt in only when the network
    path is trusted (LAN, IP allow-list, secret in the webhook URL). Deliveries that do carry
    ``TIMESTAMP`` are always fully verified.

    Raises :class:`BadSignatureError`, :class:`StaleTimestampError` or
    :class:`MissingTimestampError` (all :class:`WebhookVerificationError`);
    :class:`InvalidRequestError` if ``bridge_key`` itself is not valid base64.
    """
    try:
        key = decode_key(bridge_key)
    except CommandFormatError:
        raise InvalidRequestError("bridge_key is not valid base64") from None
    timestamp_text = _header(headers, "TIMESTAMP")
    hash_text = _header(headers, "HASH")
    if timestamp_text is None:
        if accept_missing_timestamp:
            log.info("accepting a bridge webhook without TIMESTAMP (unverified, by policy)")
            return
        raise MissingTimestampError(
            "bridge webhook has no TIMESTAMP header (new gateway?); "
            "pass accept_missing_timestamp=True to accept such deliveries unverified"
        )
    if hash_text is None:
        raise BadSignatureError("bridge webhook has no HASH header")
    stripped = timestamp_text.strip()
    if not _DIGITS.fullmatch(stripped) or int(stripped) > 0xFFFFFFFFFFFFFFFF:
        raise BadSignatureError("TIMESTAMP header is not a Unix time in seconds")
    timestamp = int(stripped)
    given = hash_text.strip()
    if not _HEX64.fullmatch(given):
        raise BadSignatureError("HASH header is not 64 hex digits")
    expected = webhook_payload_hash(key, timestamp, bytes(raw_body))
    if not hmac.compare_digest(expected.encode("ascii"), given.lower().encode("ascii")):
        raise BadSignatureError("HASH does not match the body")
    if max_skew is not None and abs(now - timestamp) > max_skew:
        raise StaleTimestampError(
            f"TIMESTAMP is {now - timestamp:.0f} s away from our clock (max {max_skew:g} s)"
        )
