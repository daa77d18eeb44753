"""LOQED webhook intake: verification, typed errors, duplicates, state, links to commands and
reservations — through roomkey's real app, fed by the real LOQED simulator."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine
from test_executor_harness import CLOUD_SECRET, LOCK, LOQED_ID, ROOM, World, make_world

from roomkey.service.crypto import SecretBox
from roomkey.service.db.models import CommandState, DoorActionKind
from roomkey.service.db.plans import WindowSpec, replace_door_windows
from roomkey.service.db.reservations import ReservationData, upsert_reservation
from roomkey.service.hooks_loqed import register_webhooks, webhook_urls

BRIDGE_URL = f"/hooks/loqed/bridge/{LOCK}"
CLOUD_URL = f"/hooks/loqed/cloud/{CLOUD_SECRET}"
GO_TO = {
    "go_to_state": "DAY_LOCK",
    "event_type": "GO_TO_STATE_MANUAL_LOCK_REMOTE_LATCH",
    "mac_wifi": "aa",
    "mac_ble": "bb",
    "key_local_id": 9,
}


@pytest.fixture
async def world(engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path) -> AsyncIterator[World]:
    w = await make_world(engine, secret_box, tmp_path, cloud_webhook=True)
    try:
        yield w
    finally:
        await w.close()


def _error_type(response: Any) -> str:
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["message"], str)
    return str(body["error"]["type"])


# -- bridge verification ---------------------------------------------------------------------


async def test_a_correctly_signed_bridge_webhook_is_stored(world: World) -> None:
    client = world.receiver()
    body, headers = world.signed_bridge_post(GO_TO)
    response = await client.post(BRIDGE_URL, content=body, headers=headers)
    assert response.status_code == 200
    assert response.json()["status"] == "stored"
    (event,) = await world.events()
    assert event.lock_id == LOCK
    assert event.source.value == "bridge"
    assert event.kind == "go_to_state"
    assert event.key_local_id == 9
    assert event.occurred_at is not None


async def test_bad_hash_is_401(world: World) -> None:
    client = world.receiver()
    body, headers = world.signed_bridge_post(GO_TO)
    tampered = body.replace(b"DAY_LOCK", b"NIGHT_LOCK", 1)
    response = await client.post(BRIDGE_URL, content=tampered, headers=headers)
    assert response.status_code == 401
    assert _error_type(response) == "bad_signature"
    assert await world.events() == []


async def test_stale_timestamp_is_401(world: World) -> None:
    client = world.receiver()
    body, headers = world.signed_bridge_post(GO_TO, timestamp=int(world.clock.time()) - 60)
    response = await client.post(BRIDGE_URL, content=body, headers=headers)
    assert response.status_code == 401
    assert _error_type(response) == "stale_timestamp"
    assert await world.events() == []


async def test_missing_timestamp_is_rejected_by_default_policy(world: World) -> None:
    world.sim.bridge("b1").gateway = "new"  # the new gateway sends no TIMESTAMP
    client = world.receiver()
    body, headers = world.signed_bridge_post(GO_TO)
    del headers["TIMESTAMP"]
    response = await client.post(BRIDGE_URL, content=body, headers=headers)
    assert response.status_code == 400
    assert _error_type(response) == "missing_timestamp"
    # Deliveries from the simulator's new-gateway bridge are refused the same way.
    world.sim.manual(LOQED_ID, "knob", "day_lock")
    await world.advance(3)
    assert [d.status for d in world.sim.deliveries("bridge")] == [400]
    # Only the (unsigned, URL-secret) cloud copy of the event got in.
    assert [e.source.value for e in await world.events()] == ["cloud"]


async def test_missing_timestamp_is_accepted_when_configured(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    w = await make_world(
        engine, secret_box, tmp_path, extra_loqed="accept_missing_timestamp = true"
    )
    try:
        w.sim.bridge("b1").gateway = "new"
        w.sim.manual(LOQED_ID, "knob", "day_lock")
        await w.advance(3)
        assert [d.status for d in w.sim.deliveries("bridge")] == [200]
        (event,) = await w.events()
        assert event.bolt_state == "day_lock"
        assert event.occurred_at is None
    finally:
        await w.close()


async def test_unknown_lock_and_oversized_bodies_get_typed_errors(world: World) -> None:
    client = world.receiver()
    body, headers = world.signed_bridge_post(GO_TO)
    response = await client.post("/hooks/loqed/bridge/nope", content=body, headers=headers)
    assert response.status_code == 404
    assert _error_type(response) == "not_found"
    big = b"{" + b" " * (70 * 1024) + b"}"
    response = await client.post(BRIDGE_URL, content=big, headers=headers)
    assert response.status_code == 413
    assert _error_type(response) == "payload_too_large"


async def test_signed_but_malformed_json_is_400(world: World) -> None:
    client = world.receiver()
    for payload in (b"not json", b"[1, 2]", b'{"event_type": 5}', b"\xff\xfe"):
        body, headers = world.signed_bridge_post(payload)
        response = await client.post(BRIDGE_URL, content=body, headers=headers)
        assert response.status_code == 400, payload
        assert _error_type(response) == "invalid_payload"
    assert await world.events() == []


_FIXTURE_REUSE = [HealthCheck.function_scoped_fixture]
_header_values = st.one_of(
    st.none(),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.just("a" * 64),
)


@settings(max_examples=40, deadline=None, suppress_health_check=_FIXTURE_REUSE)
@given(
    body=st.binary(max_size=300),
    hash_value=_header_values,
    timestamp=_header_values,
    sign=st.booleans(),
)
async def test_bridge_receiver_never_answers_500(
    world: World, body: bytes, hash_value: str | None, timestamp: str | None, sign: bool
) -> None:
    client = world.receiver()
    if sign:
        body, headers = world.signed_bridge_post(body)
    else:
        headers = {}
        if hash_value is not None:
            headers["HASH"] = hash_value
        if timestamp is not None:
            headers["TIMESTAMP"] = timestamp
    response = await client.post(BRIDGE_URL, content=body, headers=headers)
    assert response.status_code in (200, 400, 401), response.text
    if response.status_code != 200:
        assert _error_type(response)
    else:
        assert sign


# -- cloud -----------------------------------------------------------------------------------


async def test_cloud_webhook_with_a_wrong_secret_is_404(world: World) -> None:
    client = world.receiver()
    response = await client.post("/hooks/loqed/cloud/wrong-secret", json=GO_TO)
    assert response.status_code == 404
    assert _error_type(response) == "not_found"
    response = await client.post(f"{CLOUD_URL}?lock=nope", json=GO_TO)
    assert response.status_code == 404
    assert _error_type(response) == "unknown_lock"
    response = await client.post(CLOUD_URL, content=b"{nope")
    assert response.status_code == 400
    assert _error_type(response) == "invalid_payload"
    assert await world.events() == []


async def test_cloud_events_find_their_lock_by_hint_loqed_id_or_learned_numeric_id(
    world: World,
) -> None:
    client = world.receiver()
    event = {
        "event_type": "STATE_CHANGED_LATCH",
        "requested_state": "DAY_LOCK",
        "key_local_id": "",
        "lock_id": "6148",
    }
    assert (await client.post(CLOUD_URL, json=event)).json()["lock"] is None  # not yet known
    first = await client.post(f"{CLOUD_URL}?lock={LOCK}", json={**event, "key_local_id": "3"})
    assert first.json()["lock"] == LOCK
    later = await client.post(CLOUD_URL, json={**event, "event_type": "STATE_CHANGED_OPEN"})
    assert later.json()["lock"] == LOCK  # numeric id learned from the hinted delivery
    by_id = await client.post(
        CLOUD_URL, json={**event, "lock_id": LOQED_ID, "event_type": "STATE_CHANGED_NIGHT_LOCK"}
    )
    assert by_id.json()["lock"] == LOCK
    assert [e.lock_id for e in await world.events()] == [None, LOCK, LOCK, LOCK]


@settings(max_examples=40, deadline=None, suppress_health_check=_FIXTURE_REUSE)
@given(
    payload=st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.text(max_size=12),
            st.recursive(
                st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3)
                ),
                max_leaves=8,
            ),
            max_size=6,
        ).map(lambda d: json.dumps(d).encode()),
    ),
    hint=st.sampled_from([None, LOCK]),
)
async def test_cloud_receiver_never_answers_500(
    world: World, payload: bytes, hint: str | None
) -> None:
    client = world.receiver()
    url = CLOUD_URL if hint is None else f"{CLOUD_URL}?lock={hint}"
    response = await client.post(url, content=payload)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert _error_type(response) == "invalid_payload"


# -- duplicates, state, links -------------------------------------------------------------


async def test_bridge_and_cloud_copies_and_cloud_redeliveries_are_stored_once(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    w = await make_world(engine, secret_box, tmp_path, cloud_webhook=True)
    try:
        # Every cloud event is delivered twice, 4 s apart, as LOQED's backend does.
        w.sim.config.cloud.duplicate_probability = 1.0
        await w.plan((DoorActionKind.UNLOCK, 0.0))
        await w.executor.run_once()
        await w.advance(20)
        deliveries = w.sim.deliveries()
        channels = sorted({d.channel for d in deliveries})
        assert channels == ["bridge", "cloud"]
        assert all(d.status == 200 for d in deliveries)
        events = await w.events()
        types = [e.event_type for e in events]
        # each distinct event once: GO_TO then STATE_CHANGED, whatever copy came first
        assert types == ["GO_TO_STATE_MANUAL_LOCK_REMOTE_LATCH", "STATE_CHANGED_LATCH"]
        assert len(deliveries) >= 3 * len(events)  # bridge copy + two cloud copies each
        (command,) = await w.commands()
        assert command.state is CommandState.CONFIRMED
        assert {e.command_id for e in events} == {command.id}
    finally:
        await w.close()


async def test_equal_events_far_apart_or_with_another_between_are_both_kept(world: World) -> None:
    client = world.receiver()
    latch = {
        "event_type": "STATE_CHANGED_LATCH",
        "requested_state": "DAY_LOCK",
        "key_local_id": 255,
        "mac_wifi": "aa",
        "mac_ble": "bb",
    }
    opened = {**latch, "event_type": "STATE_CHANGED_OPEN", "requested_state": "OPEN"}
    for payload, wait in ((latch, 1), (opened, 1), (latch, 1), (latch, 11), (latch, 1)):
        body, headers = world.signed_bridge_post(payload)
        await client.post(BRIDGE_URL, content=body, headers=headers)
        await world.advance(wait)
    kinds = [e.event_type for e in await world.events()]
    # the 5th copy is a duplicate of the 4th (1 s apart); the 4th is 11 s after the 3rd
    assert kinds == [
        "STATE_CHANGED_LATCH",
        "STATE_CHANGED_OPEN",
        "STATE_CHANGED_LATCH",
        "STATE_CHANGED_LATCH",
    ]


async def test_events_update_the_lock_state_and_drop_pii(world: World) -> None:
    world.sim.add_key(
        LOQED_ID,
        local_id=7,
        name="Anna Kowalska",
        account_email="anna@example.com",
        account_name="Anna",
    )
    world.sim.manual(LOQED_ID, "ble", "day_lock", key_local_id=7)
    await world.advance(5)
    lock = await world.lock_row()
    assert lock.bolt_state == "day_lock"
    events = await world.events()
    assert events
    text = json.dumps([e.raw for e in events])
    assert "anna@example.com" not in text
    assert "Anna Kowalska" not in text
    assert any(e.source.value == "cloud" for e in events) or any(
        e.source.value == "bridge" for e in events
    )


async def test_events_link_to_the_reservation_active_at_that_door(world: World) -> None:
    now = world.now()
    async with world.service.session_factory() as session, session.begin():
        res = ReservationData(
            id=555001,
            room_id=ROOM,
            date=now.date(),
            hour=now.time().replace(microsecond=0),
            start_at=now - dt.timedelta(minutes=5),
            end_at=now + dt.timedelta(minutes=55),
            status=1,
            source="web",
            extid=None,
            data={},
        )
        await upsert_reservation(session, res, now=now)
        await replace_door_windows(
            session,
            ROOM,
            [WindowSpec(555001, ROOM, now - dt.timedelta(minutes=15), now + dt.timedelta(hours=1))],
            now=now,
        )
    await world.plan((DoorActionKind.UNLOCK, 0.0))
    await world.executor.run_once()
    await world.advance(12)
    (command,) = await world.commands()
    assert command.state is CommandState.CONFIRMED
    events = await world.events()
    assert events
    assert {e.reservation_id for e in events} == {555001}
    assert all(e.command_id == command.id for e in events if e.kind != "unknown")
    # After the window: events link to no reservation.
    await world.advance(2 * 3600)
    world.sim.manual(LOQED_ID, "knob", "night_lock")
    await world.advance(3)
    assert (await world.events())[-1].reservation_id is None


# -- registration ----------------------------------------------------------------------------


async def test_register_webhooks_points_bridge_and_cloud_at_roomkey_once(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    w = await make_world(engine, secret_box, tmp_path, bridge_webhook=False)
    try:
        urls = webhook_urls(w.ctx, "http://roomkey.test/")
        assert urls[LOCK]["bridge"] == f"http://roomkey.test/hooks/loqed/bridge/{LOCK}"
        assert urls[LOCK]["cloud"] == f"http://roomkey.test{CLOUD_URL}?lock={LOCK}"
        for _ in range(2):  # idempotent
            report = await register_webhooks(w.ctx, "http://roomkey.test")
            assert [(r.surface, r.ok) for r in report] == [("bridge", True), ("cloud", True)]
        assert [h.url for h in w.sim.bridge("b1").webhooks] == [urls[LOCK]["bridge"]]
        assert [h.url for h in w.sim.cloud_webhooks] == [urls[LOCK]["cloud"]]
        w.sim.manual(LOQED_ID, "knob", "day_lock")
        await w.advance(3)
        deliveries = w.sim.deliveries()
        assert sorted(d.channel for d in deliveries) == ["bridge", "cloud"]
        assert all(d.status == 200 for d in deliveries)
        (event,) = await w.events()  # one event, its second copy dropped as a duplicate
        assert event.bolt_state == "day_lock"
        # A failing surface is reported by error type, never with the (secret) URL.
        w.sim.app.faults.add("/api/locks", "status", status=401)
        report = await register_webhooks(w.ctx, "http://roomkey.test")
        (cloud,) = [r for r in report if r.surface == "cloud"]
        assert not cloud.ok
        assert cloud.error is not None
        assert CLOUD_SECRET not in cloud.error
    finally:
        await w.close()
