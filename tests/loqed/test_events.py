"""Event parser on every payload family and shape, and bridge webhook verification."""

from __future__ import annotations

import json
from typing import Any

import pytest

from roomkey.loqed import (
    BadSignatureError,
    BoltState,
    EventKind,
    EventSource,
    InvalidPayloadError,
    InvalidRequestError,
    MissingTimestampError,
    StaleTimestampError,
    parse_event,
    verify_bridge_webhook,
)
from roomkey.loqed.signing import decode_key, webhook_payload_hash

from .support import BRIDGE_KEY, TS

# ---------------------------------------------------------------- bridge families (reference §3.4)

STATE_REACHED = (
    b'{"requested_state":"NIGHT_LOCK","requested_state_numeric":3,"mac_wifi":"aa",'
    b'"mac_ble":"bb","event_type":"STATE_CHANGED_NIGHT_LOCK","key_local_id":255}'
)
VECTOR_HASH = "a1caf7ab481834cdcb2f42ffd36e81599091485f39b76f6a88212b443107a4c7"


def test_state_reached_bridge_shape() -> None:
    event = parse_event(STATE_REACHED)
    assert event.kind is EventKind.STATE_CHANGED
    assert event.kind == "state_changed"
    assert event.bolt_state is BoltState.NIGHT_LOCK
    assert event.key_local_id is None  # 255 = no key
    assert event.mac_wifi == "aa"
    assert event.mac_ble == "bb"
    assert event.source is EventSource.BRIDGE
    assert event.raw["requested_state_numeric"] == 3


def test_go_to_state_without_go_to_state_field() -> None:
    body = {
        "event_type": "GO_TO_STATE_MANUAL_LOCK_REMOTE_NIGHT_LOCK",
        "mac_wifi": "aa",
        "mac_ble": "bb",
        "key_local_id": 1,
    }
    event = parse_event(body)
    assert event.kind is EventKind.GO_TO_STATE
    assert event.bolt_state is BoltState.NIGHT_LOCK
    assert event.key_local_id == 1
    assert event.remote is True


def test_go_to_state_with_field_and_numeric_from_ha_fixture() -> None:
    body = {
        "go_to_state": "DAY_LOCK",
        "go_to_state_numeric": 2,
        "event_type": "GO_TO_STATE_MANUAL_LOCK_REMOTE_LATCH",
        "mac_wifi": "aa",
        "mac_ble": "bb",
        "key_local_id": "4",
    }
    event = parse_event(json.dumps(body))
    assert (event.kind, event.bolt_state, event.key_local_id) == (
        EventKind.GO_TO_STATE,
        BoltState.DAY_LOCK,
        4,
    )


# every catalogue name with the state the reference gives for it
CATALOGUE = [
    ("STATE_CHANGED_OPEN", EventKind.STATE_CHANGED, BoltState.OPEN),
    ("STATE_CHANGED_LATCH", EventKind.STATE_CHANGED, BoltState.DAY_LOCK),
    ("STATE_CHANGED_NIGHT_LOCK", EventKind.STATE_CHANGED, BoltState.NIGHT_LOCK),
    ("STATE_CHANGED_UNKNOWN", EventKind.STATE_CHANGED, BoltState.UNKNOWN),
    ("MOTOR_STALL", EventKind.MOTOR_STALL, BoltState.UNKNOWN),
    ("STATE_CHANGED_OPEN_REMOTE", EventKind.STATE_CHANGED, BoltState.OPEN),
    ("STATE_CHANGED_LATCH_REMOTE", EventKind.STATE_CHANGED, BoltState.DAY_LOCK),
    ("STATE_CHANGED_NIGHT_LOCK_REMOTE", EventKind.STATE_CHANGED, BoltState.NIGHT_LOCK),
    ("GO_TO_STATE_TOUCH_TO_LOCK", EventKind.GO_TO_STATE, BoltState.NIGHT_LOCK),
    ("GO_TO_STATE_INSTANTOPEN_OPEN", EventKind.GO_TO_STATE, BoltState.OPEN),
    ("GO_TO_STATE_INSTANTOPEN_LATCH", EventKind.GO_TO_STATE, BoltState.DAY_LOCK),
    ("GO_TO_STATE_MANUAL_UNLOCK_BLE_OPEN", EventKind.GO_TO_STATE, BoltState.OPEN),
    ("GO_TO_STATE_MANUAL_LOCK_BLE_LATCH", EventKind.GO_TO_STATE, BoltState.DAY_LOCK),
    ("GO_TO_STATE_MANUAL_LOCK_BLE_NIGHT_LOCK", EventKind.GO_TO_STATE, BoltState.NIGHT_LOCK),
    ("GO_TO_STATE_TWIST_ASSIST_OPEN", EventKind.GO_TO_STATE, BoltState.OPEN),
    ("GO_TO_STATE_TWIST_ASSIST_LATCH", EventKind.GO_TO_STATE, BoltState.DAY_LOCK),
    ("GO_TO_STATE_TWIST_ASSIST_LOCK", EventKind.GO_TO_STATE, BoltState.NIGHT_LOCK),
    ("GO_TO_STATE_MANUAL_UNLOCK_VIA_OUTSIDE_MODULE_PIN", EventKind.GO_TO_STATE, BoltState.OPEN),
    ("GO_TO_STATE_MANUAL_UNLOCK_VIA_OUTSIDE_MODULE_BUTTON", EventKind.GO_TO_STATE, BoltState.OPEN),
    ("GO_TO_STATE_MANUAL_LOCK_REMOTE_NIGHT_LOCK", EventKind.GO_TO_STATE, BoltState.NIGHT_LOCK),
    ("GO_TO_STATE_MANUAL_LOCK_REMOTE_LATCH", EventKind.GO_TO_STATE, BoltState.DAY_LOCK),
    ("GO_TO_STATE_MANUAL_UNLOCK_REMOTE_OPEN", EventKind.GO_TO_STATE, BoltState.OPEN),
]


@pytest.mark.parametrize(("event_type", "kind", "state"), CATALOGUE)
def test_catalogue_state_is_derived_from_event_type(
    event_type: str, kind: EventKind, state: BoltState
) -> None:
    event = parse_event({"event_type": event_type, "mac_wifi": "aa", "mac_ble": "bb"})
    assert event.kind is kind
    assert event.bolt_state is state
    assert event.event_type == event_type


def test_event_type_wins_over_contradicting_field() -> None:
    event = parse_event({"event_type": "STATE_CHANGED_OPEN", "requested_state": "NIGHT_LOCK"})
    assert event.bolt_state is BoltState.OPEN


def test_suffixless_go_to_falls_back_to_go_to_state_field() -> None:
    event = parse_event({"event_type": "GO_TO_STATE_SOMETHING_NEW", "go_to_state": "OPEN"})
    assert (event.kind, event.bolt_state) == (EventKind.GO_TO_STATE, BoltState.OPEN)
    event = parse_event({"event_type": "GO_TO_STATE_SOMETHING_NEW"})
    assert (event.kind, event.bolt_state) == (EventKind.GO_TO_STATE, None)


def test_unknown_event_type_is_kept() -> None:
    event = parse_event({"event_type": "DOORBELL_PRESSED", "mac_wifi": "aa", "key_local_id": 3})
    assert event.kind is EventKind.UNKNOWN
    assert event.event_type == "DOORBELL_PRESSED"
    assert event.bolt_state is None
    assert event.key_local_id == 3
    assert event.raw == {"event_type": "DOORBELL_PRESSED", "mac_wifi": "aa", "key_local_id": 3}


def test_battery_family() -> None:
    event = parse_event(
        b'{"battery_type":"UNKNOWN","battery_percentage":"100","mac_wifi":"aa","mac_ble":"bb"}'
    )
    assert event.kind is EventKind.BATTERY
    assert event.event_type == "BATTERY"
    assert event.battery_percentage == 100
    assert event.battery_type == "UNKNOWN"
    assert event.bolt_state is None


@pytest.mark.parametrize(("ble", "online"), [(-1, False), ("-1", False), (60, True)])
def test_online_family_from_signal(ble: Any, online: bool) -> None:
    event = parse_event(
        {"wifi_strength": 73, "ble_strength": ble, "mac_wifi": "aa", "mac_ble": "bb"}
    )
    assert event.kind is EventKind.ONLINE
    assert event.event_type == "ONLINE_STATUS"
    assert event.online is online
    assert event.wifi_strength == 73


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (255, None),
        ("255", None),
        ("", None),
        (None, None),
        ("1", 1),
        (0, 0),
        (250, 250),
        (1.0, 1),
        ("x", None),
        (-3, None),
        (300, None),
        (True, None),
    ],
)
def test_key_local_id_shapes(value: Any, expected: int | None) -> None:
    event = parse_event({"event_type": "STATE_CHANGED_LATCH", "key_local_id": value})
    assert event.key_local_id == expected


def test_key_local_id_absent() -> None:
    assert parse_event({"event_type": "STATE_CHANGED_LATCH"}).key_local_id is None


# ---------------------------------------------------------------- cloud shapes (reference §4.3)


def test_cloud_documented_shape() -> None:
    body = {
        "requested_state": "OPEN",
        "event_type": "STATE_CHANGED_OPEN",
        "lock_id": "Yq1gK4oeE9KWe0ByxjX2",
        "key_local_id": None,
        "key_name_user": "Guest",
        "key_name_admin": "Front desk",
        "key_account_e-mail": "guest@example.com",
        "key_account_name": "Guest Person",
    }
    event = parse_event(body, source="cloud")
    assert event.source is EventSource.CLOUD
    assert event.lock_id == "Yq1gK4oeE9KWe0ByxjX2"
    assert event.key_account_email == "guest@example.com"
    assert (event.key_name_user, event.key_name_admin, event.key_account_name) == (
        "Guest",
        "Front desk",
        "Guest Person",
    )
    assert event.key_local_id is None


def test_cloud_observed_shape() -> None:
    body = {
        "event_type": "GO_TO_STATE_MANUAL_UNLOCK_REMOTE_OPEN",
        "go_to_state": "OPEN",
        "lock_id": 6148,
        "key_local_id": "",
        "key_account_email": "ops@example.com",
        "value1": "LockID: 6148",
        "value2": "roomkey",
        "value3": "ops@example.com",
    }
    event = parse_event(json.dumps(body).encode(), source=EventSource.CLOUD)
    assert event.lock_id == "6148"
    assert event.key_local_id is None
    assert event.key_account_email == "ops@example.com"
    assert (event.value1, event.value2, event.value3) == (
        "LockID: 6148",
        "roomkey",
        "ops@example.com",
    )
    assert event.bolt_state is BoltState.OPEN


def test_cloud_lock_id_from_value1_when_missing() -> None:
    event = parse_event(
        {"event_type": "STATE_CHANGED_LATCH", "value1": "LockID: 77"}, source="cloud"
    )
    assert event.lock_id == "77"


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"ble_strength": "20", "wifi_strength": "90", "lock_id": 6148}, EventKind.ONLINE),
        ({"battery_percentage": "55", "lock_id": 6148}, EventKind.BATTERY),
        ({"online": 0, "lock_id": 6148}, EventKind.ONLINE),
        ({"online": "1", "lock_id": 6148}, EventKind.ONLINE),
    ],
)
def test_cloud_signal_battery_online(body: dict[str, Any], kind: EventKind) -> None:
    event = parse_event(body, source="cloud")
    assert event.kind is kind
    assert event.lock_id == "6148"
    if "online" in body:
        assert event.online is bool(int(body["online"]))


def test_empty_object_is_an_unknown_event() -> None:
    event = parse_event(b"{}")
    assert (event.kind, event.event_type, event.raw) == (EventKind.UNKNOWN, "", {})


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[1,2]",
        b'"text"',
        b"\xff\xfe\x00",
        b"[" * 5000 + b"]" * 5000,
        b'{"event_type": 5}',
        b'{"event_type": ["x"]}',
        "null",
    ],
)
def test_invalid_payloads(payload: bytes | str) -> None:
    with pytest.raises(InvalidPayloadError):
        parse_event(payload)


def test_invalid_source_and_non_string_keys() -> None:
    with pytest.raises(InvalidPayloadError):
        parse_event({}, source="carrier-pigeon")  # type: ignore[arg-type]
    with pytest.raises(InvalidPayloadError):
        parse_event({1: "x"})  # type: ignore[dict-item]


# ---------------------------------------------------------------- verification


def _headers(ts: int = TS, body: bytes = STATE_REACHED) -> dict[str, str]:
    return {"HASH": webhook_payload_hash(decode_key(BRIDGE_KEY), ts, body), "TIMESTAMP": str(ts)}


def test_verify_reference_vector() -> None:
    verify_bridge_webhook(
        STATE_REACHED,
        {"HASH": VECTOR_HASH, "TIMESTAMP": str(TS)},
        bridge_key=BRIDGE_KEY,
        now=TS,
    )


def test_header_names_any_case_and_upper_hex() -> None:
    verify_bridge_webhook(
        STATE_REACHED,
        {"hash": VECTOR_HASH.upper(), "Timestamp": f" {TS} "},
        bridge_key=BRIDGE_KEY,
        now=TS + 3,
    )


def test_reserialised_json_fails() -> None:
    reserialised = json.dumps(json.loads(STATE_REACHED)).encode()
    assert reserialised != STATE_REACHED
    with pytest.raises(BadSignatureError):
        verify_bridge_webhook(reserialised, _headers(), bridge_key=BRIDGE_KEY, now=TS)


def test_wrong_key_fails() -> None:
    with pytest.raises(BadSignatureError):
        verify_bridge_webhook(STATE_REACHED, _headers(), bridge_key="b3RoZXIga2V5", now=TS)


@pytest.mark.parametrize(("offset", "ok"), [(10, True), (-10, True), (11, False), (-11, False)])
def test_skew_default_ten_seconds(offset: int, ok: bool) -> None:
    if ok:
        verify_bridge_webhook(STATE_REACHED, _headers(), bridge_key=BRIDGE_KEY, now=TS + offset)
    else:
        with pytest.raises(StaleTimestampError):
            verify_bridge_webhook(STATE_REACHED, _headers(), bridge_key=BRIDGE_KEY, now=TS + offset)


def test_skew_configurable_and_disabled() -> None:
    verify_bridge_webhook(
        STATE_REACHED, _headers(), bridge_key=BRIDGE_KEY, now=TS + 15, max_skew=20
    )
    verify_bridge_webhook(
        STATE_REACHED, _headers(), bridge_key=BRIDGE_KEY, now=TS + 10**6, max_skew=None
    )


def test_hash_checked_before_timestamp() -> None:
    headers = _headers()
    headers["HASH"] = "0" * 64
    with pytest.raises(BadSignatureError):
        verify_bridge_webhook(STATE_REACHED, headers, bridge_key=BRIDGE_KEY, now=TS + 999)


def test_missing_timestamp_rejected_by_default() -> None:
    with pytest.raises(MissingTimestampError) as info:
        verify_bridge_webhook(STATE_REACHED, {"HASH": VECTOR_HASH}, bridge_key=BRIDGE_KEY, now=TS)
    assert "accept_missing_timestamp" in str(info.value)
    with pytest.raises(MissingTimestampError):
        verify_bridge_webhook(STATE_REACHED, {}, bridge_key=BRIDGE_KEY, now=TS)


def test_missing_timestamp_opt_in_accepts() -> None:
    verify_bridge_webhook(
        STATE_REACHED,
        {"HASH": "whatever"},
        bridge_key=BRIDGE_KEY,
        now=TS,
        accept_missing_timestamp=True,
    )
    verify_bridge_webhook(
        STATE_REACHED, {}, bridge_key=BRIDGE_KEY, now=TS, accept_missing_timestamp=True
    )


def test_opt_in_still_verifies_when_timestamp_present() -> None:
    with pytest.raises(BadSignatureError):
        verify_bridge_webhook(
            STATE_REACHED,
            {"TIMESTAMP": str(TS), "HASH": "0" * 64},
            bridge_key=BRIDGE_KEY,
            now=TS,
            accept_missing_timestamp=True,
        )


@pytest.mark.parametrize(
    "headers",
    [
        {"TIMESTAMP": str(TS)},
        {"TIMESTAMP": "abc", "HASH": VECTOR_HASH},
        {"TIMESTAMP": "-5", "HASH": VECTOR_HASH},
        {"TIMESTAMP": "١٧٠٠٠٠٠٠٠٠", "HASH": VECTOR_HASH},
        {"TIMESTAMP": "99999999999999999999", "HASH": VECTOR_HASH},
        {"TIMESTAMP": str(TS), "HASH": "xyz"},
        {"TIMESTAMP": str(TS), "HASH": VECTOR_HASH + "00"},
    ],
)
def test_malformed_headers_are_bad_signatures(headers: dict[str, str]) -> None:
    with pytest.raises(BadSignatureError):
        verify_bridge_webhook(STATE_REACHED, headers, bridge_key=BRIDGE_KEY, now=TS)


def test_invalid_bridge_key_is_a_configuration_error() -> None:
    with pytest.raises(InvalidRequestError):
        verify_bridge_webhook(STATE_REACHED, _headers(), bridge_key="%%%", now=TS)


def test_numbers_outside_32_bits_are_treated_as_garbage() -> None:
    # A malformed payload must never carry a number too large to store (seen by the
    # reliability suite: ble_strength 4e216 reached SQLite and overflowed).
    from roomkey.loqed import parse_event

    event = parse_event(
        b'{"event_type":"ONLINE","ble_strength":4.008539844577849e+216,'
        b'"wifi_strength":"99999999999","battery_percentage":2147483648,"key_local_id":-1}'
    )
    assert event.ble_strength is None
    assert event.wifi_strength is None
    assert event.battery_percentage is None
