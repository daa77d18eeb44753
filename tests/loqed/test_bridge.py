"""Bridge client: /status, signed /to_lock, webhook management (sync and async)."""

from __future__ import annotations

import base64
import json
from urllib.parse import unquote

import httpx
import pytest

from roomkey.loqed import (
    Action,
    BoltState,
    InvalidPayloadError,
    InvalidRequestError,
    MaybeDeliveredError,
    NotSentError,
    ServerError,
    UnauthorizedError,
    WebhookTriggers,
)
from roomkey.loqed.signing import decode_command

from .support import (
    BRIDGE_KEY,
    NIGHT_LOCK_B64,
    TS,
    FakeClock,
    Recorder,
    call,
    json_response,
    make_bridge,
)

STATUS = {
    "battery_percentage": 78,
    "battery_type": "NICKEL_METAL_HYDRIDE",
    "battery_type_numeric": 1,
    "battery_voltage": 10.37,
    "bolt_state": "day_lock",
    "bolt_state_numeric": 2,
    "bridge_mac_wifi": "aabbccddeeff",
    "bridge_mac_ble": "a1b2c3d4e5f6",
    "lock_online": 1,
    "webhooks_number": 1,
    "ip_address": "10.0.0.5",
    "up_timestamp": 1699990000,
    "wifi_strength": 73,
    "ble_strength": 60,
}
OK = httpx.Response(200, text="Message resent to the lock")


def _command_param(request: httpx.Request) -> str:
    raw = request.url.raw_path.decode("ascii")
    assert raw.startswith("/to_lock?command_signed_base64=")
    return raw.split("=", 1)[1]


@pytest.mark.parametrize("content_type", ["text/html", "application/json", "text/plain"])
async def test_status_parses_json_whatever_the_content_type(
    flavour: str, content_type: str
) -> None:
    rec = Recorder(
        httpx.Response(200, text=json.dumps(STATUS), headers={"content-type": content_type})
    )
    client = make_bridge(flavour, rec)
    status = await call(client, "status")
    assert status.bolt_state is BoltState.DAY_LOCK
    assert status.battery_percentage == 78
    assert status.lock_online is True
    assert status.ble_strength == 60
    assert status.bridge_mac_wifi == "aabbccddeeff"
    assert status.battery_voltage == pytest.approx(10.37)
    assert status.raw["webhooks_number"] == 1
    assert status.cached is False
    assert rec.requests[0].method == "GET"
    assert rec.requests[0].url.path == "/status"


async def test_status_numbers_as_strings_and_offline_lock(flavour: str) -> None:
    payload = {
        "bolt_state": "",
        "bolt_state_numeric": "3",
        "battery_percentage": "-1",
        "ble_strength": "-1",
        "lock_online": "0",
    }
    client = make_bridge(flavour, Recorder(json_response(payload)))
    status = await call(client, "status")
    assert status.bolt_state is BoltState.NIGHT_LOCK
    assert status.ble_strength == -1
    assert status.online is False


async def test_status_that_is_not_json_is_an_invalid_payload(flavour: str) -> None:
    client = make_bridge(flavour, Recorder(httpx.Response(200, text="<html>oops</html>")))
    with pytest.raises(InvalidPayloadError):
        await call(client, "status")


async def test_status_json_list_is_an_invalid_payload(flavour: str) -> None:
    client = make_bridge(flavour, Recorder(json_response([1, 2])))
    with pytest.raises(InvalidPayloadError):
        await call(client, "status")


@pytest.mark.parametrize(
    ("method", "action"),
    [("open", Action.OPEN), ("day_lock", Action.DAY_LOCK), ("night_lock", Action.NIGHT_LOCK)],
)
async def test_each_command_is_signed_for_its_action(
    flavour: str, method: str, action: Action
) -> None:
    rec = Recorder(OK)
    client = make_bridge(flavour, rec)
    await call(client, method)
    (request,) = rec.requests
    decoded = decode_command(unquote(_command_param(request)))
    assert decoded.action == action
    assert decoded.local_key_id == 1
    assert decoded.timestamp == TS
    assert decoded.length == 53
    assert decoded.verify(b"Hallo wereld")
    assert request.headers["connection"] == "close"
    assert request.content == b""


async def test_command_matches_reference_vector_python_quoting(flavour: str) -> None:
    rec = Recorder(OK)
    client = make_bridge(flavour, rec)
    await call(client, "command", Action.NIGHT_LOCK)
    param = _command_param(rec.requests[0])
    assert param == NIGHT_LOCK_B64.replace("+", "%2B").replace("=", "%3D")
    assert "/" in param
    assert "%2F" not in param


async def test_command_with_encode_slash_turns_slash_into_2f(flavour: str) -> None:
    rec = Recorder(OK)
    client = make_bridge(flavour, rec, encode_slash=True)
    await call(client, "command", "night_lock")
    param = _command_param(rec.requests[0])
    assert "/" not in param
    assert "%2F" in param
    assert unquote(param) == NIGHT_LOCK_B64


async def test_command_accepts_bolt_state_int_and_name(flavour: str) -> None:
    rec = Recorder(OK)
    client = make_bridge(flavour, rec)
    await call(client, "command", BoltState.OPEN)
    await call(client, "command", 2)
    await call(client, "command", "NIGHT_LOCK")
    actions = [decode_command(unquote(_command_param(r))).action for r in rec.requests]
    assert actions == [1, 2, 3]


@pytest.mark.parametrize("bad", [0, 4, "jump", BoltState.UNKNOWN])
async def test_bad_action_is_refused_before_sending(flavour: str, bad: object) -> None:
    rec = Recorder(OK)
    client = make_bridge(flavour, rec)
    with pytest.raises(InvalidRequestError):
        await call(client, "command", bad)
    assert rec.requests == []


async def test_every_attempt_is_signed_fresh_from_the_clock(flavour: str) -> None:
    clock = FakeClock()
    rec = Recorder(OK)
    client = make_bridge(flavour, rec, clock=clock)
    await call(client, "open")
    clock.advance(7)
    await call(client, "open")
    stamps = [decode_command(unquote(_command_param(r))).timestamp for r in rec.requests]
    assert stamps == [TS, TS + 7]
    assert rec.requests[0].url != rec.requests[1].url


async def test_command_without_key_is_refused_before_sending(flavour: str) -> None:
    rec = Recorder(OK)
    client = make_bridge(flavour, rec, key_secret=None, local_key_id=None)
    with pytest.raises(InvalidRequestError):
        await call(client, "open")
    assert rec.requests == []


def test_bad_key_or_key_id_is_refused_at_construction() -> None:
    with pytest.raises(InvalidRequestError):
        make_bridge("sync", Recorder(OK), key_secret="not base64!!")
    with pytest.raises(InvalidRequestError):
        make_bridge("sync", Recorder(OK), local_key_id=255)
    with pytest.raises(InvalidRequestError):
        make_bridge("sync", Recorder(OK), base_url="ftp://x")


async def test_not_sent_command_is_retried_only_when_opted_in_and_re_signed(flavour: str) -> None:
    clock = FakeClock()

    def tick_then_fail(request: httpx.Request) -> httpx.Response:
        clock.advance(2)
        raise httpx.ConnectError("refused")

    rec = Recorder(tick_then_fail, tick_then_fail, OK)
    client = make_bridge(flavour, rec, clock=clock, retries=2)
    await call(client, "open")
    assert len(rec.requests) == 3
    stamps = [decode_command(unquote(_command_param(r))).timestamp for r in rec.requests]
    assert stamps == [TS, TS + 2, TS + 4]

    rec2 = Recorder(httpx.ConnectError("refused"), OK)
    client2 = make_bridge(flavour, rec2)  # retries=0 (default)
    with pytest.raises(NotSentError):
        await call(client2, "open")
    assert len(rec2.requests) == 1


@pytest.mark.parametrize(
    "exc",
    [httpx.ReadTimeout("t"), httpx.RemoteProtocolError("dropped"), httpx.ReadError("reset")],
)
async def test_maybe_delivered_command_is_never_retried(flavour: str, exc: Exception) -> None:
    rec = Recorder(exc, OK)
    client = make_bridge(flavour, rec, retries=5)
    with pytest.raises(MaybeDeliveredError):
        await call(client, "open")
    assert len(rec.requests) == 1


async def test_redirect_from_bridge_is_not_followed(flavour: str) -> None:
    rec = Recorder(httpx.Response(302, headers={"location": "http://evil/"}), OK)
    client = make_bridge(flavour, rec)
    with pytest.raises(UnauthorizedError):
        await call(client, "night_lock")
    assert len(rec.requests) == 1


async def test_bridge_server_error(flavour: str) -> None:
    client = make_bridge(flavour, Recorder(httpx.Response(500)))
    with pytest.raises(ServerError) as info:
        await call(client, "status")
    assert info.value.status == 500


# --------------------------------------------------------------------------- webhooks

HOOKS = [
    {
        "id": 1,
        "url": "http://10.0.0.2:8123/api/webhook/abc",
        "trigger_state_changed_open": 1,
        "trigger_state_changed_latch": 1,
        "trigger_state_changed_night_lock": 1,
        "trigger_state_changed_unknown": 1,
        "trigger_state_goto_open": 1,
        "trigger_state_goto_latch": 1,
        "trigger_state_goto_night_lock": 1,
        "trigger_battery": 1,
        "trigger_online_status": 1,
    },
    {
        "id": "2",
        "url": "http://10.0.0.3/hook",
        "trigger_state_changed_open": "1",
        "trigger_state_changed_latch": "0",
        "trigger_battery": True,
    },
]


async def test_list_webhooks_signs_with_reference_hash(flavour: str) -> None:
    rec = Recorder(json_response(HOOKS))
    client = make_bridge(flavour, rec)
    hooks = await call(client, "list_webhooks")
    request = rec.requests[0]
    assert request.method == "GET"
    assert request.url.path == "/webhooks"
    assert request.headers["TIMESTAMP"] == str(TS)
    assert request.headers["HASH"] == (
        "16b91b7f340c0cd4e72cf5d2405d530b4a7ca7ddc414cfee98887b9518e0598c"
    )
    assert [h.id for h in hooks] == [1, 2]
    assert hooks[0].triggers == WebhookTriggers.ALL
    assert hooks[1].triggers == WebhookTriggers.STATE_CHANGED_OPEN | WebhookTriggers.BATTERY


async def test_create_webhook_reference_hash_and_body(flavour: str) -> None:
    rec = Recorder(OK)
    client = make_bridge(flavour, rec)
    url = "http://10.0.0.5:8099/webhook/lock1"
    await call(client, "create_webhook", url)
    request = rec.requests[0]
    assert request.method == "POST"
    assert request.url.path == "/webhooks"
    assert request.headers["HASH"] == (
        "8af7db84068792277430e940898c4c367655d52e74085b9901bd3e99c1dc41a4"
    )
    body = json.loads(request.content)
    assert body["url"] == url
    assert {k: v for k, v in body.items() if k != "url"} == WebhookTriggers.ALL.to_fields()
    assert set(body.values()) - {url} == {1}


@pytest.mark.parametrize(
    "triggers",
    [
        399,
        WebhookTriggers(399),
        [
            "state_changed_open",
            "TRIGGER_STATE_CHANGED_LATCH",
            "state_changed_night_lock",
            "STATE_CHANGED_UNKNOWN",
            "battery",
            "online",
        ],
    ],
)
async def test_create_webhook_flags_by_int_enum_or_names_match_hash(
    flavour: str, triggers: object
) -> None:
    from roomkey.loqed.signing import decode_key, webhook_create_hash

    rec = Recorder(OK)
    client = make_bridge(flavour, rec)
    await call(client, "create_webhook", "http://h/x", triggers)
    request = rec.requests[0]
    body = json.loads(request.content)
    flags = WebhookTriggers.from_fields(body)
    assert int(flags) == 399
    assert body["trigger_state_goto_open"] == 0
    assert body["trigger_online_status"] == 1
    assert request.headers["HASH"] == webhook_create_hash(
        decode_key(BRIDGE_KEY), TS, "http://h/x", int(flags)
    )


@pytest.mark.parametrize("bad", [512, -1, ["nope"], True, "teleport"])
async def test_create_webhook_bad_triggers_refused_before_sending(
    flavour: str, bad: object
) -> None:
    rec = Recorder(OK)
    client = make_bridge(flavour, rec)
    with pytest.raises(InvalidRequestError):
        await call(client, "create_webhook", "http://h/x", bad)
    assert rec.requests == []


async def test_delete_webhook_reference_hash(flavour: str) -> None:
    rec = Recorder(OK)
    client = make_bridge(flavour, rec)
    await call(client, "delete_webhook", 7)
    request = rec.requests[0]
    assert request.method == "DELETE"
    assert request.url.path == "/webhooks/7"
    assert request.headers["HASH"] == (
        "45cf08fab64cdf2595f7ff647f8893ffb4389846defa8e9e28762938bf97489d"
    )


async def test_webhook_calls_need_bridge_key(flavour: str) -> None:
    rec = Recorder(OK)
    client = make_bridge(flavour, rec, bridge_key=None)
    for name, args in (
        ("list_webhooks", ()),
        ("create_webhook", ("http://h",)),
        ("delete_webhook", (1,)),
    ):
        with pytest.raises(InvalidRequestError):
            await call(client, name, *args)
    assert rec.requests == []


async def test_ensure_webhook_creates_once_then_finds(flavour: str) -> None:
    registered: list[dict[str, object]] = []

    def bridge(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = json.loads(request.content)
            registered.append({"id": 10 + len(registered), **body})
            return httpx.Response(200, text="Message resent to the lock")
        return json_response(registered)

    client = make_bridge(flavour, bridge)
    first = await call(client, "ensure_webhook", "http://h/x", 399)
    second = await call(client, "ensure_webhook", "http://h/x", 399)
    assert first == second
    assert first.id == 10
    assert int(first.triggers) == 399
    assert len(registered) == 1


async def test_verify_webhook_uses_bridge_key_and_clock(flavour: str) -> None:
    body = (
        b'{"requested_state":"NIGHT_LOCK","requested_state_numeric":3,"mac_wifi":"aa",'
        b'"mac_ble":"bb","event_type":"STATE_CHANGED_NIGHT_LOCK","key_local_id":255}'
    )
    client = make_bridge(flavour, Recorder(OK))
    client.verify_webhook(
        body,
        {
            "HASH": "a1caf7ab481834cdcb2f42ffd36e81599091485f39b76f6a88212b443107a4c7",
            "TIMESTAMP": str(TS),
        },
    )
    assert base64.b64decode(BRIDGE_KEY) == b"bonjour monde"


async def test_owned_clients_close_cleanly() -> None:
    from roomkey.loqed import AsyncBridgeClient, BridgeClient

    with BridgeClient("10.0.0.5") as sync_client:
        assert "10.0.0.5" in repr(sync_client)
    async with AsyncBridgeClient("10.0.0.5") as async_client:
        assert "10.0.0.5" in repr(async_client)
