"""The simulated bridge: /status, /to_lock verification, the lock model, webhooks."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from test_loqed_support import (
    T0,
    Receiver,
    command_url,
    create_webhook,
    delete_webhook,
    list_headers,
    payload,
)

from roomkey.loqed.signing import decode_key, encode_command_param, sign_command
from roomkey.sim.clock import SimClock
from roomkey.sim.loqed import (
    BoltState,
    LockTimings,
    LoqedSimulator,
    SimConfig,
    SimKey,
    Verdict,
)

# the reference vector's keys (§2.3): its commands contain both "+" and "/"
KEY_SECRET = "SGFsbG8gd2VyZWxk"
BRIDGE_KEY = "Ym9uam91ciBtb25kZQ=="
LOCK_ID = "Yq1gK4oeE9KWe0ByxjX2"


@pytest.fixture
def sim(clock: SimClock, delivery_client: httpx.AsyncClient) -> LoqedSimulator:
    sim = LoqedSimulator(clock, delivery_client=delivery_client)
    sim.add_bridge("b1", bridge_key=BRIDGE_KEY, mac_wifi="aabbccddeeff", mac_ble="112233445566")
    sim.add_lock("b1", lock_id=LOCK_ID, numeric_id=6148, name="Room 1")
    sim.add_key(LOCK_ID, local_id=1, name="roomkey", secret=KEY_SECRET)
    return sim


@pytest.fixture
async def client(sim: LoqedSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(sim.app), base_url="http://bridge"
    ) as c:
        yield c
    await sim.aclose()


def key1(sim: LoqedSimulator) -> SimKey:
    return sim.locks[LOCK_ID].keys[1]


async def test_status_legacy_is_json_with_text_html(client: httpx.AsyncClient) -> None:
    r = await client.get("/status")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    data = json.loads(r.text)
    assert data["bolt_state"] == "night_lock"
    assert data["bolt_state_numeric"] == 3
    assert data["bridge_mac_wifi"] == "aabbccddeeff"
    assert data["lock_online"] == 1
    assert data["ble_strength"] >= 0


async def test_status_new_gateway_is_application_json(
    sim: LoqedSimulator, client: httpx.AsyncClient
) -> None:
    sim.bridges["b1"].gateway = "new"
    r = await client.get("/bridges/b1/status")
    assert r.headers["content-type"] == "application/json"
    assert r.json()["bridge_mac_ble"] == "112233445566"


async def test_accepted_command_sends_go_to_then_state_changed(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock, receiver: Receiver
) -> None:
    sim.add_bridge_webhook("b1", "http://hooks/loqed")
    r = await client.get(command_url(key1(sim), 2, ts=clock.time()))
    assert (r.status_code, r.text) == (200, "Message resent to the lock")
    assert sim.received(LOCK_ID)[-1].verdict is Verdict.ACCEPTED
    await clock.advance(0.3)
    assert receiver.calls == []
    await clock.advance(20)
    assert receiver.event_types() == [
        "GO_TO_STATE_MANUAL_LOCK_REMOTE_LATCH",
        "STATE_CHANGED_LATCH",
    ]
    go_to, done = receiver.calls
    assert 0.4 <= go_to.at - T0 <= 6.0
    assert 4.0 <= done.at - T0 <= 16.0
    assert payload(go_to.body) == {
        "go_to_state": "DAY_LOCK",
        "event_type": "GO_TO_STATE_MANUAL_LOCK_REMOTE_LATCH",
        "mac_wifi": "aabbccddeeff",
        "mac_ble": "112233445566",
        "key_local_id": 1,
    }
    assert list(payload(done.body)) == [
        "requested_state", "requested_state_numeric", "mac_wifi", "mac_ble", "event_type",
        "key_local_id",
    ]
    assert b" " not in done.body
    assert sim.locks[LOCK_ID].bolt_state is BoltState.DAY_LOCK
    assert (await client.get("/status")).json()["bolt_state"] == "day_lock"


async def test_legacy_webhook_headers_and_hash(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock, receiver: Receiver
) -> None:
    sim.add_bridge_webhook("b1", "http://hooks/loqed")
    await client.get(command_url(key1(sim), 3, ts=clock.time()))
    await clock.advance(10)
    call = receiver.calls[0]
    assert call.headers["user-agent"] == "ESP32 HTTP Client/1.0"
    assert call.headers["accept"] == "text/html"
    assert call.headers["accept-encoding"] == "identity"
    assert call.headers["connection"] == "keep-alive"
    assert call.headers["content-type"] == "application/json"
    ts = int(call.headers["timestamp"])
    assert abs(ts - call.at) <= 1
    want = hashlib.sha256(call.body + ts.to_bytes(8, "big") + decode_key(BRIDGE_KEY)).hexdigest()
    assert call.headers["hash"] == want


async def test_reference_webhook_vector_body_is_reproduced(sim: LoqedSimulator) -> None:
    from roomkey.sim.loqed.payloads import bridge_body, state_event

    lock = sim.locks[LOCK_ID]
    body = bridge_body(state_event(BoltState.NIGHT_LOCK), lock, mac_wifi="aa", mac_ble="bb")
    assert body == (
        b'{"requested_state":"NIGHT_LOCK","requested_state_numeric":3,"mac_wifi":"aa",'
        b'"mac_ble":"bb","event_type":"STATE_CHANGED_NIGHT_LOCK","key_local_id":255}'
    )


@pytest.mark.parametrize("style", ["python", "slash_encoded", "raw_plus"])
async def test_every_percent_encoding_of_the_command_is_accepted(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock, style: str
) -> None:
    signed = sign_command(KEY_SECRET, action=3, local_key_id=1, clock=clock.time)
    assert "+" in signed
    assert "/" in signed
    if style == "raw_plus":  # '+' sent unescaped must not become a space
        param = signed.replace("=", "%3D")
    else:
        param = encode_command_param(signed, encode_slash=style == "slash_encoded")
    await client.get(f"/to_lock?command_signed_base64={param}")
    assert sim.received(LOCK_ID)[-1].verdict is Verdict.ACCEPTED


async def test_rejected_commands_still_get_200_and_do_nothing(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock, receiver: Receiver
) -> None:
    sim.add_bridge_webhook("b1", "http://hooks/loqed")
    key = key1(sim)
    wrong = SimKey(LOCK_ID, 1, base64.b64encode(b"not the key").decode())
    ghost = SimKey(LOCK_ID, 9, KEY_SECRET)
    now = clock.time()
    urls = {
        Verdict.BAD_SIGNATURE: command_url(wrong, 2, ts=now),
        Verdict.UNKNOWN_KEY: command_url(ghost, 2, ts=now),
        Verdict.STALE: command_url(key, 2, ts=now - 60),
        Verdict.FUTURE: command_url(key, 2, ts=now + 120),
        Verdict.MALFORMED: "/to_lock?command_signed_base64=AAAA",
    }
    for verdict, url in urls.items():
        r = await client.get(url)
        assert (r.status_code, r.text) == (200, "Message resent to the lock")
        assert sim.received(LOCK_ID)[-1].verdict is verdict
    assert (await client.get("/to_lock")).status_code == 200
    assert sim.received(LOCK_ID)[-1].verdict is Verdict.MALFORMED
    await clock.advance(30)
    assert receiver.calls == []
    assert sim.locks[LOCK_ID].bolt_state is BoltState.NIGHT_LOCK


async def test_59_seconds_old_is_fresh_and_replay_is_refused(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock
) -> None:
    url = command_url(key1(sim), 2, ts=clock.time() - 59)
    await client.get(url)
    await client.get(url)
    verdicts = [r.verdict for r in sim.received(LOCK_ID)]
    assert verdicts == [Verdict.ACCEPTED, Verdict.REPLAY]


async def test_staleness_limit_is_configurable(
    clock: SimClock, delivery_client: httpx.AsyncClient
) -> None:
    sim = LoqedSimulator(clock, delivery_client=delivery_client,
                         config=SimConfig(max_command_age=10))
    sim.add_bridge("b1")
    lock = sim.add_lock("b1")
    key = sim.add_key(lock.lock_id)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(sim.app),
                                 base_url="http://b") as c:
        await c.get(command_url(key, 1, ts=clock.time() - 10))
    assert sim.received()[-1].verdict is Verdict.STALE


async def test_command_for_current_state_gives_only_go_to(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock, receiver: Receiver
) -> None:
    sim.add_bridge_webhook("b1", "http://hooks/loqed")
    await client.get(command_url(key1(sim), 3, ts=clock.time()))
    await clock.advance(60)
    assert receiver.event_types() == ["GO_TO_STATE_MANUAL_LOCK_REMOTE_NIGHT_LOCK"]


async def test_open_relatches_by_itself_with_key_255(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock, receiver: Receiver
) -> None:
    sim.add_bridge_webhook("b1", "http://hooks/loqed")
    await client.get(command_url(key1(sim), 1, ts=clock.time()))
    await clock.advance(60)
    assert receiver.event_types() == [
        "GO_TO_STATE_INSTANTOPEN_OPEN", "STATE_CHANGED_OPEN", "STATE_CHANGED_LATCH",
    ]
    opened, relatched = receiver.calls[1], receiver.calls[2]
    assert payload(relatched.body)["key_local_id"] == 255
    assert payload(opened.body)["key_local_id"] == 1
    assert 2.0 <= relatched.at - opened.at <= 4.0
    assert sim.locks[LOCK_ID].bolt_state is BoltState.DAY_LOCK


async def test_motor_stall_then_unknown(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock, receiver: Receiver
) -> None:
    sim.add_bridge_webhook("b1", "http://hooks/loqed")
    sim.inject_stall(LOCK_ID)
    await client.get(command_url(key1(sim), 2, ts=clock.time()))
    await clock.advance(30)
    assert receiver.event_types()[-2:] == ["MOTOR_STALL", "STATE_CHANGED_UNKNOWN"]
    assert payload(receiver.calls[-2].body)["requested_state"] == "UNKNOWN"
    assert (await client.get("/status")).json()["bolt_state"] == "unknown"


async def test_webhook_crud_with_hash_checks(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock
) -> None:
    ts = int(clock.time())
    url = "http://10.0.0.5:8099/webhook/lock1"
    r = await create_webhook(client, BRIDGE_KEY, url, 399, ts=ts)
    assert r.status_code == 200
    assert "id" not in r.text  # the real bridge does not return the new id
    # lower-case header names are accepted too (HTTP headers are case-insensitive)
    listed = await client.get("/webhooks", headers=list_headers(BRIDGE_KEY, ts, upper=False))
    assert listed.status_code == 200
    hooks = json.loads(listed.text)
    assert hooks == [{
        "id": 1, "url": url,
        "trigger_state_changed_open": 1, "trigger_state_changed_latch": 1,
        "trigger_state_changed_night_lock": 1, "trigger_state_changed_unknown": 1,
        "trigger_state_goto_open": 0, "trigger_state_goto_latch": 0,
        "trigger_state_goto_night_lock": 0, "trigger_battery": 1, "trigger_online_status": 1,
    }]
    assert (await client.get("/status")).json()["webhooks_number"] == 1
    r = await delete_webhook(client, BRIDGE_KEY, 1, ts=ts)
    assert r.status_code == 200
    assert sim.bridges["b1"].webhooks == []


async def test_webhook_calls_with_bad_hash_are_refused(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock
) -> None:
    ts = int(clock.time())
    bad = {"TIMESTAMP": str(ts), "HASH": "0" * 64}
    assert (await client.get("/webhooks", headers=bad)).status_code == 401
    assert (await client.get("/webhooks")).status_code == 401
    assert (await client.get("/webhooks", headers={"TIMESTAMP": "x", "HASH": "y"})).status_code \
        == 401
    # flags in the hash must match the body's trigger fields
    r = await create_webhook(client, BRIDGE_KEY, "http://x/y", 511, ts=ts)
    assert r.status_code == 200
    body = {"url": "http://x/z", "trigger_battery": 1}
    from roomkey.loqed.signing import webhook_create_hash

    headers = {"TIMESTAMP": str(ts),
               "HASH": webhook_create_hash(decode_key(BRIDGE_KEY), ts, "http://x/z", 511)}
    assert (await client.post("/webhooks", json=body, headers=headers)).status_code == 401
    assert (await client.post("/webhooks", content=b"{not json", headers=headers)).status_code \
        == 400
    assert len(sim.bridges["b1"].webhooks) == 1
    assert (await delete_webhook(client, BRIDGE_KEY, 77, ts=ts)).status_code == 404


async def test_trigger_bitmap_filters_and_delivery_is_in_registration_order(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock, receiver: Receiver
) -> None:
    sim.add_bridge_webhook("b1", "http://hooks/first", flags=0b1111)  # reached states only
    sim.add_bridge_webhook("b1", "http://hooks/second", flags=511)
    await client.get(command_url(key1(sim), 2, ts=clock.time()))
    await clock.advance(30)
    paths = [(c.path, payload(c.body)["event_type"]) for c in receiver.calls]
    assert paths == [
        ("/second", "GO_TO_STATE_MANUAL_LOCK_REMOTE_LATCH"),
        ("/first", "STATE_CHANGED_LATCH"),
        ("/second", "STATE_CHANGED_LATCH"),
    ]


async def test_placeholders_and_basic_auth_from_userinfo(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock, receiver: Receiver
) -> None:
    sim.add_bridge_webhook("b1", "http://user:p%40ss@hooks/h?s=[requested_state]&e=[event_type]",
                           flags=0b111)
    await client.get(command_url(key1(sim), 2, ts=clock.time()))
    await clock.advance(30)
    (call,) = receiver.calls
    assert call.query == "s=DAY_LOCK&e=STATE_CHANGED_LATCH"
    assert call.headers["authorization"] == "Basic " + base64.b64encode(b"user:p@ss").decode()
    record = sim.deliveries("bridge")[-1]
    assert "p%40ss" not in record.url
    assert "***" in record.url
    assert "authorization" not in {k.lower() for k in record.headers}


async def test_new_gateway_sends_no_timestamp(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock, receiver: Receiver
) -> None:
    sim.bridges["b1"].gateway = "new"
    sim.add_bridge_webhook("b1", "http://hooks/h")
    await client.get(command_url(key1(sim), 2, ts=clock.time()))
    await clock.advance(30)
    assert receiver.calls
    for call in receiver.calls:
        assert "timestamp" not in call.headers
        assert "hash" not in call.headers
        assert call.headers["user-agent"] != "ESP32 HTTP Client/1.0"


async def test_bridge_clock_skew_shows_in_timestamp_and_staleness(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock, receiver: Receiver
) -> None:
    sim.bridges["b1"].clock_skew = -30.0
    sim.add_bridge_webhook("b1", "http://hooks/h")
    await client.get(command_url(key1(sim), 2, ts=clock.time()))
    await clock.advance(30)
    call = receiver.calls[0]
    assert int(call.headers["timestamp"]) == pytest.approx(call.at - 30, abs=1)
    # for a bridge whose clock runs 30 s ahead, a command signed 40 s ago is 70 s old
    sim.bridges["b1"].clock_skew = 30.0
    await client.get(command_url(key1(sim), 3, ts=clock.time() - 40))
    assert sim.received(LOCK_ID)[-1].verdict is Verdict.STALE


async def test_offline_lock_ignores_commands_and_reports(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock, receiver: Receiver
) -> None:
    sim.add_bridge_webhook("b1", "http://hooks/h")
    await sim.set_online(LOCK_ID, False)
    await clock.advance(2)
    body = payload(receiver.calls[-1].body)
    assert list(body) == ["wifi_strength", "ble_strength", "mac_wifi", "mac_ble"]
    assert body["ble_strength"] == -1
    status = (await client.get("/status")).json()
    assert (status["ble_strength"], status["lock_online"]) == (-1, 0)
    await client.get(command_url(key1(sim), 2, ts=clock.time()))
    assert sim.received(LOCK_ID)[-1].verdict is Verdict.OFFLINE
    await sim.set_online(LOCK_ID, True)
    await sim.battery_report(LOCK_ID, percentage=55, battery_type="ALKALINE")
    await clock.advance(30)
    battery = payload(receiver.calls[-1].body)
    assert battery == {"battery_type": "ALKALINE", "battery_percentage": 55,
                       "mac_wifi": "aabbccddeeff", "mac_ble": "112233445566"}
    assert sim.locks[LOCK_ID].bolt_state is BoltState.NIGHT_LOCK


async def test_manual_knob_and_keypad(
    sim: LoqedSimulator, clock: SimClock, receiver: Receiver
) -> None:
    sim.add_bridge_webhook("b1", "http://hooks/h")
    sim.manual(LOCK_ID, "knob", "day_lock")
    await clock.advance(5)
    assert receiver.event_types() == ["STATE_CHANGED_LATCH"]
    assert payload(receiver.calls[0].body)["key_local_id"] == 255
    sim.manual(LOCK_ID, "keypad")
    await clock.advance(30)
    assert receiver.event_types()[1:] == [
        "GO_TO_STATE_MANUAL_UNLOCK_VIA_OUTSIDE_MODULE_PIN", "STATE_CHANGED_OPEN",
        "STATE_CHANGED_LATCH",
    ]


async def test_status_lags_until_webhooks_are_delivered(
    clock: SimClock, delivery_client: httpx.AsyncClient
) -> None:
    timings = LockTimings(go_to=(1, 1), state_changed=(5, 5), bridge_lag=(0.5, 0.5))
    sim = LoqedSimulator(clock, delivery_client=delivery_client, config=SimConfig(timings=timings))
    sim.add_bridge("b1")
    lock = sim.add_lock("b1")
    key = sim.add_key(lock.lock_id)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(sim.app),
                                 base_url="http://b") as c:
        await c.get(command_url(key, 2, ts=clock.time()))
        await clock.advance(5.2)
        assert lock.bolt_state is BoltState.DAY_LOCK
        assert (await c.get("/status")).json()["bolt_state"] == "night_lock"
        await clock.advance(0.5)
        assert (await c.get("/status")).json()["bolt_state"] == "day_lock"


async def test_several_bridges_are_addressed_by_prefix(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock
) -> None:
    sim.add_bridge("b2", gateway="new")
    lock2 = sim.add_lock("b2", name="Room 2", bolt_state="open")
    key2 = sim.add_key(lock2.lock_id, local_id=4)
    assert (await client.get("/bridges/b2/status")).json()["bolt_state"] == "open"
    assert (await client.get("/bridges/nope/status")).status_code == 404
    await client.get(command_url(key2, 3, ts=clock.time(), prefix="/bridges/b2"))
    assert sim.received(lock2.lock_id)[-1].verdict is Verdict.ACCEPTED
    # b1's key does not work on b2's lock
    await client.get(command_url(key1(sim), 3, ts=clock.time(), prefix="/bridges/b2"))
    assert sim.received(lock2.lock_id)[-1].verdict is Verdict.UNKNOWN_KEY
    ts = int(clock.time())
    r = await create_webhook(client, sim.bridges["b2"].bridge_key, "http://h/2", ts=ts,
                             prefix="/bridges/b2")
    assert r.status_code == 200
    assert len(sim.bridges["b2"].webhooks) == 1
    assert sim.bridges["b1"].webhooks == []


async def test_open_while_open_still_relatches(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock, receiver: Receiver
) -> None:
    sim.config.timings.relatch_after = 5.0
    sim.add_bridge_webhook("b1", "http://hooks/h")
    await client.get(command_url(key1(sim), 1, ts=clock.time()))
    while sim.locks[LOCK_ID].bolt_state is not BoltState.OPEN:
        await clock.advance(0.1)
    await client.get(command_url(key1(sim), 1, ts=clock.time()))
    await clock.advance(30)
    assert receiver.event_types() == [
        "GO_TO_STATE_INSTANTOPEN_OPEN", "STATE_CHANGED_OPEN", "GO_TO_STATE_INSTANTOPEN_OPEN",
        "STATE_CHANGED_LATCH",
    ]
    assert sim.locks[LOCK_ID].bolt_state is BoltState.DAY_LOCK


async def test_a_newer_command_replaces_an_unfinished_movement(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock, receiver: Receiver
) -> None:
    sim.add_bridge_webhook("b1", "http://hooks/h")
    await client.get(command_url(key1(sim), 2, ts=clock.time()))
    await clock.advance(3.0)
    await client.get(command_url(key1(sim), 1, ts=clock.time()))
    await clock.advance(60)
    # the first movement's STATE_CHANGED_LATCH never comes; the latch seen is the re-latch
    assert receiver.event_types() == [
        "GO_TO_STATE_MANUAL_LOCK_REMOTE_LATCH", "GO_TO_STATE_INSTANTOPEN_OPEN",
        "STATE_CHANGED_OPEN", "STATE_CHANGED_LATCH",
    ]
    assert payload(receiver.calls[-1].body)["key_local_id"] == 255
    assert [r.verdict for r in sim.received(LOCK_ID)] == [Verdict.ACCEPTED] * 2


async def test_warped_clock_delivers_in_the_background(
    receiver: Receiver, delivery_client: httpx.AsyncClient
) -> None:
    import asyncio

    clock = SimClock(start=T0, warp=2000)
    sim = LoqedSimulator(clock, delivery_client=delivery_client)
    sim.add_bridge("b1")
    lock = sim.add_lock("b1", lock_id=LOCK_ID)
    key = sim.add_key(LOCK_ID, local_id=1)
    sim.add_bridge_webhook("b1", "http://hooks/h")
    await clock.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(sim.app),
                                     base_url="http://b") as c:
            await c.get(command_url(key, 2, ts=clock.time()))
        async with asyncio.timeout(5):
            while lock.bolt_state is not BoltState.DAY_LOCK or len(receiver.calls) < 2:
                await asyncio.sleep(0.005)
                await sim.settle()
    finally:
        await clock.stop()
        await sim.aclose()
    assert receiver.event_types() == ["GO_TO_STATE_MANUAL_LOCK_REMOTE_LATCH",
                                      "STATE_CHANGED_LATCH"]


async def test_optional_remote_suffix_and_management_skew_check(
    sim: LoqedSimulator, client: httpx.AsyncClient, clock: SimClock, receiver: Receiver
) -> None:
    sim.config.remote_state_suffix = True
    sim.config.webhook_mgmt_max_skew = 30
    ts = int(clock.time())
    assert (await client.get("/webhooks", headers=list_headers(BRIDGE_KEY, ts - 31))).status_code \
        == 401
    assert (await client.get("/webhooks", headers=list_headers(BRIDGE_KEY, ts - 29))).status_code \
        == 200
    sim.add_bridge_webhook("b1", "http://hooks/h")
    await client.get(command_url(key1(sim), 2, ts=clock.time()))
    await clock.advance(30)
    assert receiver.event_types()[-1] == "STATE_CHANGED_LATCH_REMOTE"
    assert payload(receiver.calls[-1].body)["requested_state"] == "DAY_LOCK"


async def test_an_offline_lock_reports_nothing_but_its_connection(
    sim: LoqedSimulator, clock: SimClock, receiver: Receiver
) -> None:
    sim.add_bridge_webhook("b1", "http://hooks/h")
    await sim.set_online(LOCK_ID, False)
    await sim.battery_report(LOCK_ID, percentage=40)
    await clock.advance(5)
    assert [sorted(payload(c.body)) for c in receiver.calls] == [
        ["ble_strength", "mac_ble", "mac_wifi", "wifi_strength"]]
    await sim.set_online(LOCK_ID, True, ble_strength=20)
    await clock.advance(5)
    assert payload(receiver.calls[-1].body)["ble_strength"] == 20
