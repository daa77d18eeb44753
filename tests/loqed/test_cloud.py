"""Integrations API client (sync and async): every call and every error branch."""

from __future__ import annotations

import json
from email.utils import formatdate

import httpx
import pytest

from roomkey.loqed import (
    ApiError,
    BoltState,
    CloudWebhook,
    InvalidPayloadError,
    InvalidRequestError,
    KeyRevokedError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    UnauthorizedError,
)

from .support import LOCK_ID, TOKEN, TS, Recorder, call, json_response, make_cloud

LOCK = {
    "id": LOCK_ID,
    "name": "MyLock",
    "model_name": "Touch Smart Lock",
    "battery_percentage": "64",
    "battery_type": "nickel_metal_hydride",
    "bolt_state": "day_lock",
    "party_mode": False,
    "guest_access_mode": 1,
    "twist_assist": "0",
    "touch_to_connect": True,
    "lock_direction": "clockwise",
    "mortise_lock_type": "cylinder_operated_no_handle_on_the_outside",
    "supported_lock_states": ["open", "day_lock", "night_lock"],
    "online": True,
    "bridge_ip": "192.168.12.34",
    "bridge_hostname": "LOQED-aabbccddeeff.local",
    "bridge_mac_wifi": "",
    "bridge_webhook_count": 1,
    "local_id": "4",
    "key_secret": "SGFsbG8gd2VyZWxk",
    "bridge_key": "Ym9uam91ciBtb25kZQ==",
    "backend_key": "YmFja2VuZCBrZXk=",
    "some_future_field": {"x": 1},
}
LOGIN_HTML = (
    '<!DOCTYPE html><html><head></head><body><div id="app" '
    'data-page="{&quot;component&quot;:&quot;Auth/Login&quot;}"></div></body></html>'
)
API_KEY_404 = {"message": "No query results for model [App\\Models\\ApiKey]."}


async def test_list_locks_parses_documented_and_undocumented_fields(flavour: str) -> None:
    rec = Recorder(json_response({"data": [LOCK]}))
    client = make_cloud(flavour, rec)
    (lock,) = await call(client, "list_locks")
    request = rec.requests[0]
    assert request.method == "GET"
    assert request.url.path == "/api/locks/"
    assert request.url.host == "integrations.production.loqed.com"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["accept"] == "application/json"
    assert lock.id == LOCK_ID
    assert lock.battery_percentage == 64
    assert lock.bolt_state is BoltState.DAY_LOCK
    assert lock.guest_access_mode is True
    assert lock.open_house_mode is True
    assert lock.twist_assist is False
    assert lock.bridge_ip == "192.168.12.34"
    assert lock.bridge_mac_wifi is None
    assert lock.local_id == 4
    assert lock.key_secret is not None
    assert lock.key_secret.get_secret_value() == LOCK["key_secret"]
    assert lock.bridge_key is not None
    assert lock.bridge_key.get_secret_value() == LOCK["bridge_key"]
    assert lock.backend_key is not None
    assert lock.model_extra == {"some_future_field": {"x": 1}}
    for secret in (LOCK["key_secret"], LOCK["bridge_key"], LOCK["backend_key"]):
        assert str(secret) not in repr(lock)
        assert str(secret) not in str(lock)


async def test_list_locks_empty_account(flavour: str) -> None:
    client = make_cloud(flavour, Recorder(json_response({"data": []})))
    assert await call(client, "list_locks") == []


async def test_list_locks_bad_shapes(flavour: str) -> None:
    client = make_cloud(flavour, Recorder(json_response({"data": [{"name": "no id"}]})))
    with pytest.raises(InvalidPayloadError):
        await call(client, "list_locks")
    client = make_cloud(flavour, Recorder(json_response({"data": "nope"})))
    with pytest.raises(InvalidPayloadError):
        await call(client, "list_locks")
    client = make_cloud(flavour, Recorder(httpx.Response(200, text="{not json")))
    with pytest.raises(InvalidPayloadError):
        await call(client, "list_locks")


@pytest.mark.parametrize(
    ("state", "segment"),
    [
        ("open", "open"),
        ("DAY_LOCK", "day_lock"),
        ("Night_Lock", "night_lock"),
        (BoltState.NIGHT_LOCK, "night_lock"),
        ("latch", "day_lock"),
    ],
)
async def test_set_bolt_state_any_case_204_is_accepted(
    flavour: str, state: object, segment: str
) -> None:
    rec = Recorder(httpx.Response(204))
    client = make_cloud(flavour, rec)
    assert await call(client, "set_bolt_state", LOCK_ID, state) is None
    request = rec.requests[0]
    assert request.method == "GET"
    assert request.url.path == f"/api/locks/{LOCK_ID}/bolt_state/{segment}"


async def test_set_bolt_state_upper_case_option(flavour: str) -> None:
    rec = Recorder(httpx.Response(200))
    client = make_cloud(flavour, rec, bolt_state_case="upper")
    await call(client, "set_bolt_state", LOCK_ID, "night_lock")
    assert rec.requests[0].url.path.endswith("/bolt_state/NIGHT_LOCK")


@pytest.mark.parametrize("state", ["unknown", "sideways", ""])
async def test_set_bolt_state_refuses_bad_state_before_sending(flavour: str, state: str) -> None:
    rec = Recorder(httpx.Response(204))
    client = make_cloud(flavour, rec)
    with pytest.raises(InvalidRequestError):
        await call(client, "set_bolt_state", LOCK_ID, state)
    assert rec.requests == []


async def test_lock_id_is_escaped_in_paths(flavour: str) -> None:
    rec = Recorder(httpx.Response(204))
    client = make_cloud(flavour, rec)
    await call(client, "set_bolt_state", "../../admin", "open")
    assert rec.requests[0].url.raw_path.startswith(b"/api/locks/..%2F..%2Fadmin/")


@pytest.mark.parametrize(
    "name", ["open_house_mode", "twist_assist", "touch_to_connect", "touch_to_lock", "hold_to_lock"]
)
async def test_change_setting_whitelist(flavour: str, name: str) -> None:
    rec = Recorder(httpx.Response(204))
    client = make_cloud(flavour, rec)
    await call(client, "change_setting", LOCK_ID, name, 1)
    request = rec.requests[0]
    assert request.method == "POST"
    assert request.url.path == f"/api/locks/{LOCK_ID}/setting"
    assert json.loads(request.content) == {"setting_name": name, "setting_value": 1}


@pytest.mark.parametrize("value", [2**31 - 1, -(2**31), True])
async def test_change_setting_int32_edges_are_sent(flavour: str, value: int) -> None:
    rec = Recorder(httpx.Response(204))
    client = make_cloud(flavour, rec)
    await call(client, "change_setting", LOCK_ID, "twist_assist", value)
    assert json.loads(rec.requests[0].content)["setting_value"] == int(value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("party_mode", 1),
        ("open_house_mode", 2**31),
        ("open_house_mode", -(2**31) - 1),
        ("open_house_mode", 1.0),
        ("open_house_mode", "1"),
    ],
)
async def test_change_setting_refused_before_sending(
    flavour: str, name: str, value: object
) -> None:
    rec = Recorder(httpx.Response(204))
    client = make_cloud(flavour, rec)
    with pytest.raises(InvalidRequestError):
        await call(client, "change_setting", LOCK_ID, name, value)
    assert rec.requests == []


async def test_list_keys(flavour: str) -> None:
    keys = {
        "data": [
            {"name": "roomkey", "administrator_name": "Ada", "local_id": "3"},
            {"name": "Phone", "administrator_name": ""},
        ]
    }
    rec = Recorder(json_response(keys))
    client = make_cloud(flavour, rec)
    result = await call(client, "list_keys", LOCK_ID)
    assert rec.requests[0].url.path == f"/api/locks/{LOCK_ID}/keys"
    assert [k.name for k in result] == ["roomkey", "Phone"]
    assert result[0].local_id == 3
    assert result[1].administrator_name is None


async def test_cloud_webhooks_list_create_delete(flavour: str) -> None:
    rec = Recorder(
        json_response({"data": [{"id": 5, "url": "https://me.example/hook?s=topsecret"}]}),
        json_response({"data": {"id": 6}}),
        json_response({"data": {"id": "7"}}),
        httpx.Response(204),
    )
    client = make_cloud(flavour, rec)
    (hook,) = await call(client, "list_webhooks", LOCK_ID)
    assert hook.id == "5"
    assert hook.url == "https://me.example/hook?s=topsecret"
    assert "topsecret" not in repr(hook)

    created = await call(client, "create_webhook", LOCK_ID, "https://me.example/a")
    assert isinstance(created, CloudWebhook)
    assert created.id == "6"
    assert created.url == "https://me.example/a"
    many = rec.requests[1]
    assert many.method == "POST"
    assert many.url.path == f"/api/locks/{LOCK_ID}/webhooks/many"
    assert json.loads(many.content) == {
        "url": "https://me.example/a",
        "info": True,
        "guest_access_mode": True,
    }

    plain = await call(
        client, "create_webhook", LOCK_ID, "https://me.example/b", many=False, info=False
    )
    assert isinstance(plain, CloudWebhook)
    assert plain.id == "7"
    assert rec.requests[2].url.path == f"/api/locks/{LOCK_ID}/webhooks"
    assert json.loads(rec.requests[2].content) == {"url": "https://me.example/b", "info": False}

    await call(client, "delete_webhook", LOCK_ID, 6)
    assert rec.requests[3].method == "DELETE"
    assert rec.requests[3].url.path == f"/api/locks/{LOCK_ID}/webhooks/6"


async def test_create_webhook_without_object_returns_text(flavour: str) -> None:
    client = make_cloud(flavour, Recorder(httpx.Response(201, text="created")))
    assert await call(client, "create_webhook", LOCK_ID, "https://x/y") == "created"
    client = make_cloud(flavour, Recorder(httpx.Response(204)))
    assert await call(client, "create_webhook", LOCK_ID, "https://x/y") == ""


# --------------------------------------------------------------------------- error mapping


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_any_redirect_is_unauthorized_and_not_followed(flavour: str, status: int) -> None:
    rec = Recorder(
        httpx.Response(
            status, headers={"location": "https://integrations.production.loqed.com/login"}
        ),
        httpx.Response(200, text=LOGIN_HTML),
    )
    client = make_cloud(flavour, rec)
    with pytest.raises(UnauthorizedError) as info:
        await call(client, "list_locks")
    assert info.value.status == status
    assert len(rec.requests) == 1


async def test_html_login_page_with_200_is_unauthorized(flavour: str) -> None:
    client = make_cloud(flavour, Recorder(httpx.Response(200, text="\n  " + LOGIN_HTML)))
    with pytest.raises(UnauthorizedError):
        await call(client, "list_locks")
    client = make_cloud(flavour, Recorder(httpx.Response(200, text=LOGIN_HTML)))
    with pytest.raises(UnauthorizedError):
        await call(client, "set_bolt_state", LOCK_ID, "open")


@pytest.mark.parametrize("status", [401, 403])
async def test_401_403_unauthorized(flavour: str, status: int) -> None:
    client = make_cloud(flavour, Recorder(json_response({"message": "Unauthenticated."}, status)))
    with pytest.raises(UnauthorizedError) as info:
        await call(client, "list_keys", LOCK_ID)
    assert info.value.status == status


async def test_api_key_404_is_key_revoked(flavour: str) -> None:
    client = make_cloud(flavour, Recorder(json_response(API_KEY_404, 404)))
    with pytest.raises(KeyRevokedError) as info:
        await call(client, "set_bolt_state", LOCK_ID, "night_lock")
    assert info.value.status == 404


async def test_other_404_is_not_found(flavour: str) -> None:
    client = make_cloud(flavour, Recorder(json_response({"message": "Not Found"}, 404)))
    with pytest.raises(NotFoundError) as info:
        await call(client, "set_bolt_state", "nope", "open")
    assert not isinstance(info.value, KeyRevokedError)


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after": "30"}, 30.0),
        ({"retry-after": formatdate(TS + 7220, usegmt=True)}, 7220.0),
        (
            {
                "x-ratelimit-limit": "60",
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": str(TS + 42),
            },
            42.0,
        ),
        ({"x-ratelimit-reset": "15"}, 15.0),
        ({"x-ratelimit-limit": "60", "x-ratelimit-remaining": "0"}, 60.0),
        ({}, None),
    ],
)
async def test_429_is_rate_limited_with_wait(
    flavour: str, headers: dict[str, str], wait: float | None
) -> None:
    client = make_cloud(flavour, Recorder(httpx.Response(429, headers=headers)))
    with pytest.raises(RateLimitedError) as info:
        await call(client, "list_locks")
    assert info.value.retry_after == (pytest.approx(wait) if wait is not None else None)
    assert info.value.status == 429


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_server_error(flavour: str, status: int) -> None:
    client = make_cloud(flavour, Recorder(httpx.Response(status)))
    with pytest.raises(ServerError):
        await call(client, "list_webhooks", LOCK_ID)


async def test_other_4xx_is_api_error(flavour: str) -> None:
    client = make_cloud(flavour, Recorder(json_response({"message": "bad"}, 422)))
    with pytest.raises(ApiError) as info:
        await call(client, "change_setting", LOCK_ID, "twist_assist", 1)
    assert type(info.value) is ApiError
    assert info.value.status == 422


def test_empty_token_is_refused() -> None:
    with pytest.raises(InvalidRequestError):
        make_cloud("sync", Recorder(httpx.Response(204)), token=" ")


async def test_custom_base_url_and_locks_path(flavour: str) -> None:
    rec = Recorder(json_response([LOCK]))  # a bare list is tolerated too
    client = make_cloud(flavour, rec, base_url="http://127.0.0.1:9/", locks_path="/api/locks")
    (lock,) = await call(client, "list_locks")
    assert lock.id == LOCK_ID
    assert str(rec.requests[0].url) == "http://127.0.0.1:9/api/locks"
