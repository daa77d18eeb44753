"""Property tests: signing round trips and parsers that never fail untyped."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomkey.loqed import (
    InvalidPayloadError,
    LockEvent,
    WebhookTriggers,
    WebhookVerificationError,
    parse_event,
    verify_bridge_webhook,
)
from roomkey.loqed.models import CloudKey, CloudLock, CloudWebhook, LockStatus, as_str
from roomkey.loqed.signing import (
    build_command,
    decode_command,
    decode_key,
    encode_command_param,
    sign_command,
    webhook_payload_hash,
)

from .support import BRIDGE_KEY

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
EVENT_KEYS = [
    "event_type",
    "requested_state",
    "requested_state_numeric",
    "go_to_state",
    "go_to_state_numeric",
    "key_local_id",
    "mac_wifi",
    "mac_ble",
    "battery_percentage",
    "battery_type",
    "ble_strength",
    "wifi_strength",
    "online",
    "lock_id",
    "key_name_user",
    "key_name_admin",
    "key_account_email",
    "key_account_e-mail",
    "key_account_name",
    "value1",
    "value2",
    "value3",
]
event_like = st.dictionaries(
    st.sampled_from(EVENT_KEYS) | st.text(max_size=12),
    json_values
    | st.sampled_from(
        [
            "STATE_CHANGED_OPEN",
            "GO_TO_STATE_X_LOCK",
            "MOTOR_STALL",
            "255",
            "",
            "OPEN",
            "-1",
            "1e999",
            "NaN",
        ]
    ),
    max_size=8,
)


@SETTINGS
@given(
    key=st.binary(min_size=1, max_size=64),
    key_id=st.integers(min_value=0, max_value=255),
    timestamp=st.integers(min_value=0, max_value=2**64 - 1),
    action=st.integers(min_value=0, max_value=255),
    with_message_id=st.booleans(),
    encode_slash=st.booleans(),
)
def test_sign_decode_round_trip(
    key: bytes,
    key_id: int,
    timestamp: int,
    action: int,
    with_message_id: bool,
    encode_slash: bool,
) -> None:
    raw = build_command(
        key,
        action=action,
        local_key_id=key_id,
        timestamp=timestamp,
        with_message_id=with_message_id,
    )
    b64 = base64.b64encode(raw).decode()
    param = encode_command_param(b64, encode_slash=encode_slash)
    assert "+" not in param
    assert "=" not in param
    assert ("/" in param) is ("/" in b64 and not encode_slash)
    from urllib.parse import unquote

    decoded = decode_command(unquote(param), allow_short=True)
    assert decoded.length == (53 if with_message_id else 45)
    assert (decoded.timestamp, decoded.local_key_id, decoded.action) == (timestamp, key_id, action)
    assert (decoded.protocol, decoded.command_type, decoded.device_id) == (2, 7, 1)
    assert decoded.verify(key)
    assert not decoded.verify(key + b"x")


@SETTINGS
@given(
    key=st.binary(min_size=1, max_size=48),
    key_id=st.integers(min_value=0, max_value=254),
    now=st.floats(min_value=0, max_value=4e9),
    action=st.sampled_from([1, 2, 3]),
)
def test_sign_command_uses_the_clock(key: bytes, key_id: int, now: float, action: int) -> None:
    signed = sign_command(
        base64.b64encode(key).decode(), action=action, local_key_id=key_id, clock=lambda: now
    )
    decoded = decode_command(signed)
    assert decoded.timestamp == int(now)
    assert decoded.verify(key)


@SETTINGS
@given(json_values)
def test_parse_event_on_arbitrary_json(value: Any) -> None:
    text = json.dumps(value)
    try:
        event = parse_event(text)
    except InvalidPayloadError:
        return
    assert isinstance(event, LockEvent)
    assert isinstance(value, dict)


@SETTINGS
@given(event_like)
def test_parse_event_on_event_like_objects(value: dict[str, Any]) -> None:
    for payload in (value, json.dumps(value).encode()):
        try:
            event = parse_event(payload, source="cloud")
        except InvalidPayloadError:
            assert not isinstance(value.get("event_type", ""), str | None)
            continue
        assert isinstance(event, LockEvent)
        assert event.key_local_id is None or 0 <= event.key_local_id < 255


@SETTINGS
@given(st.binary(max_size=200))
def test_parse_event_on_arbitrary_bytes(data: bytes) -> None:
    try:
        event = parse_event(data)
    except InvalidPayloadError:
        return
    assert isinstance(event, LockEvent)


@SETTINGS
@given(json_values)
def test_status_parser_never_fails_untyped(value: Any) -> None:
    try:
        status = LockStatus.from_payload(value)
    except InvalidPayloadError:
        assert not isinstance(value, dict)
        return
    assert status.raw == value


LOCK_KEYS = [
    "id",
    "name",
    "battery_percentage",
    "bolt_state",
    "online",
    "local_id",
    "key_secret",
    "bridge_key",
    "supported_lock_states",
    "guest_access_mode",
    "bridge_ip",
    "bridge_mac_wifi",
]


@SETTINGS
@given(st.dictionaries(st.sampled_from(LOCK_KEYS) | st.text(max_size=8), json_values, max_size=8))
def test_cloud_models_never_fail_untyped(value: dict[str, Any]) -> None:
    for model in (CloudLock, CloudKey, CloudWebhook):
        try:
            parsed = model.from_payload(value)
        except InvalidPayloadError:
            # only a missing/unusable id may reject a lock or webhook
            assert model is not CloudKey
            assert as_str(value.get("id")) is None
            continue
        assert isinstance(parsed, model)
        repr(parsed)


header_names = st.sampled_from(["HASH", "hash", "Hash", "TIMESTAMP", "timestamp", "X"]) | st.text(
    max_size=10
)


@SETTINGS
@given(
    body=st.binary(max_size=100),
    headers=st.dictionaries(header_names, st.text(max_size=80), max_size=4),
    now=st.floats(min_value=-1e12, max_value=1e12),
    accept=st.booleans(),
)
def test_verify_on_arbitrary_headers_raises_only_verification_errors(
    body: bytes, headers: dict[str, str], now: float, accept: bool
) -> None:
    try:
        verify_bridge_webhook(
            body, headers, bridge_key=BRIDGE_KEY, now=now, accept_missing_timestamp=accept
        )
    except WebhookVerificationError:
        return
    # Accepted only via the explicit opt-in for a missing TIMESTAMP.
    assert accept
    assert not any(k.lower() == "timestamp" for k in headers)


@SETTINGS
@given(
    body=st.binary(max_size=200),
    timestamp=st.integers(min_value=0, max_value=2**40),
    skew=st.integers(min_value=-10, max_value=10),
)
def test_verify_accepts_every_correctly_signed_body(body: bytes, timestamp: int, skew: int) -> None:
    digest = webhook_payload_hash(decode_key(BRIDGE_KEY), timestamp, body)
    verify_bridge_webhook(
        body,
        {"HASH": digest, "TIMESTAMP": str(timestamp)},
        bridge_key=BRIDGE_KEY,
        now=timestamp + skew,
    )


@SETTINGS
@given(st.integers(min_value=0, max_value=511))
def test_trigger_bitmap_round_trip(bits: int) -> None:
    flags = WebhookTriggers.coerce(bits)
    assert int(WebhookTriggers.from_fields(flags.to_fields())) == bits
    names = [f for f, v in flags.to_fields().items() if v]
    assert int(WebhookTriggers.coerce(names)) == bits
