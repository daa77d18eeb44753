"""The simulated cloud: Integrations API, app.loqed.com, cloud webhooks, limits, auth."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from test_loqed_support import Receiver, command_url, payload

from roomkey.loqed.signing import encode_command_param, sign_command
from roomkey.sim.clock import SimClock
from roomkey.sim.loqed import (
    BoltState,
    CloudConfig,
    LoqedSimulator,
    SimApiToken,
    SimConfig,
    SimKey,
    StatusLimit,
    Verdict,
)

LOCK_ID = "Yq1gK4oeE9KWe0ByxjX2"
API_KEY_GONE = {"message": "No query results for model [App\\Models\\ApiKey]."}


@pytest.fixture
def sim(clock: SimClock, delivery_client: httpx.AsyncClient) -> LoqedSimulator:
    sim = LoqedSimulator(clock, delivery_client=delivery_client)
    sim.add_bridge("b1", mac_wifi="aabbccddeeff")
    sim.add_lock("b1", lock_id=LOCK_ID, numeric_id=6148, name="Room 1")
    sim.add_key(LOCK_ID, local_id=1, name="roomkey")
    return sim


@pytest.fixture
def token(sim: LoqedSimulator) -> SimApiToken:
    return sim.add_api_token([LOCK_ID])


@pytest.fixture
async def client(sim: LoqedSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(sim.app), base_url="http://cloud"
    ) as c:
        yield c
    await sim.aclose()


def bearer(token: SimApiToken) -> dict[str, str]:
    return {"Authorization": f"Bearer {token.token}", "Accept": "application/json"}


async def test_list_locks_has_documented_and_undocumented_fields(
    sim: LoqedSimulator, client: httpx.AsyncClient, token: SimApiToken
) -> None:
    r = await client.get("/api/locks/", headers=bearer(token))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-ratelimit-limit"] == "60"
    assert r.headers["x-ratelimit-remaining"] == "59"
    (lock,) = r.json()["data"]
    assert lock["id"] == LOCK_ID
    assert lock["name"] == "Room 1"
    assert lock["bolt_state"] == "night_lock"
    assert lock["battery_type"] == "nickel_metal_hydride"
    assert lock["supported_lock_states"] == ["open", "day_lock", "night_lock"]
    assert lock["bridge_key"] == sim.bridges["b1"].bridge_key
    assert lock["bridge_hostname"] == "LOQED-aabbccddeeff.local"
    assert lock["bridge_mac_wifi"] == ""
    # the token's own key slot, not the roomkey key
    assert lock["local_id"] == token.key_ids[LOCK_ID] != 1
    assert lock["key_secret"] == sim.locks[LOCK_ID].keys[lock["local_id"]].secret
    for name in ("party_mode", "guest_access_mode", "twist_assist", "touch_to_connect",
                 "lock_direction", "mortise_lock_type", "online", "bridge_ip", "backend_key",
                 "bridge_webhook_count", "model_name", "battery_percentage"):
        assert name in lock


async def test_token_key_slot_signs_bridge_commands(
    sim: LoqedSimulator, client: httpx.AsyncClient, token: SimApiToken, clock: SimClock
) -> None:
    lock = (await client.get("/api/locks", headers=bearer(token))).json()["data"][0]
    key = SimKey(LOCK_ID, lock["local_id"], lock["key_secret"])
    await client.get(command_url(key, 2, ts=clock.time()))
    assert sim.received(LOCK_ID)[-1].verdict is Verdict.ACCEPTED


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                     {"Authorization": "Basic abc"}])
async def test_bad_token_redirects_to_html_login(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    r = await client.get("/api/locks/", headers=headers)
    assert r.status_code == 302
    assert r.headers["location"].endswith("/login")
    assert r.text.lstrip().startswith("<")
    page = await client.get(r.headers["location"])
    assert page.status_code == 200
    found = re.search(r'data-page="([^"]+)"', page.text)
    assert found is not None
    assert json.loads(html.unescape(found.group(1)))["component"] == "Auth/Login"


async def test_revoked_and_expired_tokens_redirect(
    sim: LoqedSimulator, client: httpx.AsyncClient, token: SimApiToken, clock: SimClock
) -> None:
    token.revoked = True
    assert (await client.get("/api/locks/", headers=bearer(token))).status_code == 302
    short = sim.add_api_token([LOCK_ID], expires_in=100)
    assert (await client.get("/api/locks/", headers=bearer(short))).status_code == 200
    await clock.advance(101)
    assert (await client.get("/api/locks/", headers=bearer(short))).status_code == 302


@pytest.mark.parametrize("state", ["day_lock", "DAY_LOCK", "Day_Lock"])
async def test_bolt_state_any_case_is_204_and_moves_with_token_key(
    sim: LoqedSimulator, client: httpx.AsyncClient, token: SimApiToken, clock: SimClock,
    receiver: Receiver, state: str,
) -> None:
    sim.add_bridge_webhook("b1", "http://hooks/h")
    r = await client.get(f"/api/locks/{LOCK_ID}/bolt_state/{state}", headers=bearer(token))
    assert r.status_code == 204
    assert r.content == b""
    assert sim.locks[LOCK_ID].bolt_state is BoltState.NIGHT_LOCK  # accepted, not done
    await clock.advance(30)
    assert sim.locks[LOCK_ID].bolt_state is BoltState.DAY_LOCK
    keys = {payload(c.body)["key_local_id"] for c in receiver.calls}
    assert keys == {token.key_ids[LOCK_ID]}
    entry = sim.received(LOCK_ID)[-1]
    assert (entry.via, entry.verdict, entry.action) == ("cloud", Verdict.ACCEPTED, "day_lock")


async def test_bad_state_and_foreign_lock(
    sim: LoqedSimulator, client: httpx.AsyncClient, token: SimApiToken
) -> None:
    r = await client.get(f"/api/locks/{LOCK_ID}/bolt_state/unknown", headers=bearer(token))
    assert r.status_code == 422
    r = await client.get("/api/locks/OTHERLOCK/bolt_state/open", headers=bearer(token))
    assert r.status_code == 404


async def test_deleted_key_gives_api_key_404_on_commands_but_reads_work(
    sim: LoqedSimulator, client: httpx.AsyncClient, token: SimApiToken, clock: SimClock
) -> None:
    sim.delete_key(LOCK_ID, token.key_ids[LOCK_ID])
    r = await client.get(f"/api/locks/{LOCK_ID}/bolt_state/open", headers=bearer(token))
    assert r.status_code == 404
    assert r.json() == API_KEY_GONE
    assert sim.received(LOCK_ID)[-1].verdict is Verdict.UNKNOWN_KEY
    r = await client.get("/api/locks/", headers=bearer(token))
    assert r.status_code == 200
    assert r.json()["data"][0]["key_secret"] is None
    await clock.advance(30)
    assert sim.locks[LOCK_ID].bolt_state is BoltState.NIGHT_LOCK


async def test_status_reads_are_limited_12_per_12h_with_a_12h_block(
    sim: LoqedSimulator, client: httpx.AsyncClient, token: SimApiToken, clock: SimClock
) -> None:
    for _ in range(12):
        assert (await client.get("/api/locks/", headers=bearer(token))).status_code == 200
        await clock.advance(60)
    blocked = await client.get("/api/locks/", headers=bearer(token))
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) == 12 * 3600
    # commands are not status reads
    r = await client.get(f"/api/locks/{LOCK_ID}/bolt_state/open", headers=bearer(token))
    assert r.status_code == 204
    await clock.advance(11 * 3600)
    assert (await client.get("/api/locks/", headers=bearer(token))).status_code == 429
    await clock.advance(3600 + 1)
    assert (await client.get("/api/locks/", headers=bearer(token))).status_code == 200


async def test_status_limit_is_configurable_per_endpoint(
    clock: SimClock, delivery_client: httpx.AsyncClient
) -> None:
    cloud = CloudConfig(status_limits={"api_locks": None, "app_status": StatusLimit(limit=2)})
    sim = LoqedSimulator(clock, delivery_client=delivery_client, config=SimConfig(cloud=cloud))
    sim.add_bridge("b1")
    lock = sim.add_lock("b1")
    token = sim.add_api_token([lock.lock_id])
    app_key = sim.add_app_api_key(lock.lock_id)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(sim.app),
                                 base_url="http://c") as c:
        for _ in range(20):
            assert (await c.get("/api/locks", headers=bearer(token))).status_code == 200
        status_url = app_key.urls("/API")["status"]
        codes = [(await c.get(status_url)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


async def test_per_minute_throttle(
    sim: LoqedSimulator, client: httpx.AsyncClient, token: SimApiToken, clock: SimClock
) -> None:
    for i in range(60):
        r = await client.get(f"/api/locks/{LOCK_ID}/keys", headers=bearer(token))
        assert r.headers["x-ratelimit-remaining"] == str(59 - i)
    r = await client.get(f"/api/locks/{LOCK_ID}/keys", headers=bearer(token))
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0
    await clock.advance(61)
    assert (await client.get(f"/api/locks/{LOCK_ID}/keys", headers=bearer(token))).is_success


async def test_settings_and_keys(
    sim: LoqedSimulator, client: httpx.AsyncClient, token: SimApiToken
) -> None:
    url = f"/api/locks/{LOCK_ID}/setting"
    r = await client.post(url, json={"setting_name": "twist_assist", "setting_value": 1},
                          headers=bearer(token))
    assert r.status_code == 204
    assert sim.locks[LOCK_ID].settings["twist_assist"] == 1
    for bad in ({"setting_name": "twist_assist", "setting_value": 2**31},
                {"setting_name": "party", "setting_value": 1},
                {"setting_name": "hold_to_lock", "setting_value": "1"}):
        assert (await client.post(url, json=bad, headers=bearer(token))).status_code == 422
    r = await client.post(url, content=b"[oops", headers=bearer(token))
    assert r.status_code == 422
    lock = (await client.get("/api/locks/", headers=bearer(token))).json()["data"][0]
    assert lock["twist_assist"] is True
    keys = (await client.get(f"/api/locks/{LOCK_ID}/keys", headers=bearer(token))).json()["data"]
    assert {"name": "roomkey", "administrator_name": "Admin"} in keys


async def test_cloud_webhook_crud(
    sim: LoqedSimulator, client: httpx.AsyncClient, token: SimApiToken
) -> None:
    base = f"/api/locks/{LOCK_ID}/webhooks"
    one = await client.post(base, json={"url": "http://hooks/a", "info": True},
                            headers=bearer(token))
    many = await client.post(f"{base}/many", json={"url": "http://hooks/b", "info": True,
                                                   "guest_access_mode": True},
                             headers=bearer(token))
    assert one.status_code == many.status_code == 201
    ids = [one.json()["data"]["id"], many.json()["data"]["id"]]
    listed = (await client.get(base, headers=bearer(token))).json()["data"]
    assert [h["id"] for h in listed] == ids
    bad = await client.post(base, json={"url": "ftp:/x"}, headers=bearer(token))
    assert bad.status_code == 422
    assert (await client.delete(f"{base}/{ids[0]}", headers=bearer(token))).status_code == 204
    assert (await client.delete(f"{base}/{ids[0]}", headers=bearer(token))).status_code == 404
    assert [h.id for h in sim.cloud_webhooks] == [ids[1]]


async def test_cloud_copy_arrives_before_bridge_copy_in_observed_shape(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock, receiver: Receiver
) -> None:
    sim.add_bridge_webhook("b1", "http://hooks/bridge")
    sim.add_cloud_webhook(LOCK_ID, "http://hooks/cloud")
    key = sim.locks[LOCK_ID].keys[1]
    key.account_email = "ops@example.com"
    await client.get(command_url(key, 2, ts=clock.time()))
    await clock.advance(30)
    by_type: dict[str, list[tuple[str, float]]] = {}
    for call in receiver.calls:
        by_type.setdefault(payload(call.body)["event_type"], []).append((call.path, call.at))
    for copies in by_type.values():
        (cloud_path, cloud_at), (bridge_path, bridge_at) = copies
        assert (cloud_path, bridge_path) == ("/cloud", "/bridge")
        assert 0.1 <= bridge_at - cloud_at <= 0.8
    cloud_calls = [c for c in receiver.calls if c.path == "/cloud"]
    assert "hash" not in cloud_calls[0].headers
    assert cloud_calls[0].headers["user-agent"].startswith("Java/1.8.0_")
    body = payload(cloud_calls[-1].body)
    assert body["lock_id"] == "6148"
    assert body["key_local_id"] == "1"
    assert body["key_account_email"] == "ops@example.com"
    assert body["value3"] == "ops@example.com"
    assert "LockID: 6148" in body["value1"]


async def test_documented_cloud_shape_and_duplicates(
    clock: SimClock, delivery_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    cloud = CloudConfig(webhook_shape="documented", duplicate_probability=1.0)
    sim = LoqedSimulator(clock, delivery_client=delivery_client, config=SimConfig(cloud=cloud))
    sim.add_bridge("b1")
    lock = sim.add_lock("b1", lock_id=LOCK_ID)
    sim.add_cloud_webhook(LOCK_ID, "http://hooks/cloud")
    sim.manual(LOCK_ID, "knob", "open")
    await clock.advance(2)
    first = payload(receiver.calls[0].body)
    assert first["lock_id"] == LOCK_ID
    assert first["key_local_id"] is None
    assert "key_account_e-mail" in first
    assert first["event_type"] == "STATE_CHANGED_OPEN"
    await clock.advance(10)
    opens = [c for c in receiver.calls if payload(c.body)["event_type"] == "STATE_CHANGED_OPEN"]
    assert len(opens) == 2
    assert opens[1].at - opens[0].at == pytest.approx(4.0)
    dup = [d.duplicate for d in sim.deliveries("cloud") if d.event_type == "STATE_CHANGED_OPEN"]
    assert dup == [False, True]
    assert lock.bolt_state is BoltState.DAY_LOCK


async def test_app_api_status_and_signed_commands(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock
) -> None:
    app_key = sim.add_app_api_key(LOCK_ID)
    urls = app_key.urls("http://cloud/API")
    r = await client.get(urls["status"])
    assert r.status_code == 200
    data = json.loads(r.text)
    assert data["id"] == LOCK_ID
    assert data["bolt_state"] == "night_lock"
    assert data["bolt_state_numeric"] == 3
    assert data["battery_type_numeric"] == 1
    for short, action in ((True, 2), (False, 3)):
        signed = sign_command(app_key.secret, action=action, local_key_id=app_key.local_id,
                              clock=clock.time, with_message_id=not short)
        assert len(signed) == (60 if short else 72)
        r = await client.get(
            f"/API/lock_command.php?api_token={app_key.api_token}&lock_id={LOCK_ID}"
            f"&command_signed_base64={encode_command_param(signed, encode_slash=True)}"
        )
        assert r.status_code == 200
        entry = sim.received(LOCK_ID)[-1]
        assert (entry.via, entry.verdict, entry.length) == (
            "app_api", Verdict.ACCEPTED, 45 if short else 53)
        await clock.advance(1)
    await client.get(urls["open"])
    assert sim.received(LOCK_ID)[-1].action == "open"
    await clock.advance(30)
    assert sim.locks[LOCK_ID].bolt_state is BoltState.DAY_LOCK  # opened, then re-latched


async def test_app_api_rejects_bad_token_and_bridge_refuses_short_commands(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock
) -> None:
    app_key = sim.add_app_api_key(LOCK_ID)
    r = await client.get(f"/API/lock_status.php?api_token=wrong&lock_id={LOCK_ID}")
    assert r.status_code == 401
    r = await client.get(f"/API/lock_status.php?api_token={app_key.api_token}&lock_id=OTHER")
    assert r.status_code == 401
    short = sign_command(app_key.secret, action=1, local_key_id=app_key.local_id,
                         clock=clock.time, with_message_id=False)
    await client.get("/to_lock?command_signed_base64=" + encode_command_param(short))
    assert sim.received(LOCK_ID)[-1].verdict is Verdict.MALFORMED
