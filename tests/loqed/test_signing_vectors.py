"""Every worked vector of the LOQED reference (sections 2.3, 3.3, 3.4)."""

from __future__ import annotations

import base64

import pytest

from roomkey.loqed import signing
from roomkey.loqed.signing import Action

KEY_SECRET = "SGFsbG8gd2VyZWxk"  # "Hallo wereld"
BRIDGE_KEY = base64.b64decode("Ym9uam91ciBtb25kZQ==")  # "bonjour monde"
TS = 1_700_000_000


def clock() -> float:
    return float(TS)


def test_mac_vector() -> None:
    mac = signing.command_mac(b"Hallo wereld", timestamp=TS, local_key_id=1, action=3)
    assert mac.hex() == "513c18dece9d2d8537689687d6cfbea9292ef071116cbee10298b36263d729fa"


def test_night_lock_command_vector() -> None:
    cmd = signing.sign_command(KEY_SECRET, action=Action.NIGHT_LOCK, local_key_id=1, clock=clock)
    assert cmd == "AAAAAAAAAAACBwAAAABlU/EAUTwY3s6dLYU3aJaH1s++qSku8HERbL7hApizYmPXKfoBAQM="
    assert len(base64.b64decode(cmd)) == 53


@pytest.mark.parametrize(
    ("action", "prefix"),
    [
        (Action.OPEN, "AAAAAAAAAAACBwAAAABlU/EARYhOAuwx"),
        (Action.DAY_LOCK, "AAAAAAAAAAACBwAAAABlU/EAoZ0RimZk"),
    ],
)
def test_open_and_day_lock_prefixes(action: Action, prefix: str) -> None:
    cmd = signing.sign_command(KEY_SECRET, action=action, local_key_id=1, clock=clock)
    assert cmd.startswith(prefix)


def test_short_variant_vector() -> None:
    cmd = signing.sign_command(
        KEY_SECRET, action=Action.NIGHT_LOCK, local_key_id=1, clock=clock, with_message_id=False
    )
    assert cmd == "AgcAAAAAZVPxAFE8GN7OnS2FN2iWh9bPvqkpLvBxEWy+4QKYs2Jj1yn6AQED"


def test_percent_encoding_both_styles() -> None:
    cmd = "AAAAAAAAAAACBwAAAABlU/EAUTwY3s6dLYU3aJaH1s++qSku8HERbL7hApizYmPXKfoBAQM="
    py_style = signing.encode_command_param(cmd)
    assert "AAAABlU/EAUTwY3s6dLYU3aJaH1s%2B%2BqSku8H" in py_style
    assert py_style.endswith("AQM%3D")
    full = signing.encode_command_param(cmd, encode_slash=True)
    assert "/" not in full
    assert "%2F" in full


def test_webhook_management_hash_vectors() -> None:
    assert (
        signing.webhook_list_hash(BRIDGE_KEY, TS)
        == "16b91b7f340c0cd4e72cf5d2405d530b4a7ca7ddc414cfee98887b9518e0598c"
    )
    assert (
        signing.webhook_create_hash(BRIDGE_KEY, TS, "http://10.0.0.5:8099/webhook/lock1", 511)
        == "8af7db84068792277430e940898c4c367655d52e74085b9901bd3e99c1dc41a4"
    )
    assert (
        signing.webhook_delete_hash(BRIDGE_KEY, TS, 7)
        == "45cf08fab64cdf2595f7ff647f8893ffb4389846defa8e9e28762938bf97489d"
    )


def test_webhook_payload_hash_vector() -> None:
    body = (
        b'{"requested_state":"NIGHT_LOCK","requested_state_numeric":3,"mac_wifi":"aa",'
        b'"mac_ble":"bb","event_type":"STATE_CHANGED_NIGHT_LOCK","key_local_id":255}'
    )
    assert (
        signing.webhook_payload_hash(BRIDGE_KEY, TS, body)
        == "a1caf7ab481834cdcb2f42ffd36e81599091485f39b76f6a88212b443107a4c7"
    )


def test_decode_round_trip_and_verify() -> None:
    cmd = signing.sign_command(KEY_SECRET, action=Action.OPEN, local_key_id=9, clock=clock)
    decoded = signing.decode_command(cmd)
    assert decoded.timestamp == TS
    assert decoded.local_key_id == 9
    assert decoded.action == 1
    assert decoded.verify(b"Hallo wereld")
    assert not decoded.verify(b"wrong key")


def test_decode_short_only_when_allowed() -> None:
    short = signing.sign_command(
        KEY_SECRET, action=Action.OPEN, local_key_id=1, clock=clock, with_message_id=False
    )
    with pytest.raises(signing.CommandFormatError):
        signing.decode_command(short)
    assert signing.decode_command(short, allow_short=True).length == 45


def test_bad_key_error_never_echoes_secret() -> None:
    with pytest.raises(signing.CommandFormatError) as info:
        signing.decode_key("not base64 !!! secret-material")
    assert "secret-material" not in str(info.value)
