"""Lockme simulator: the ``/_sim`` control API, driving everything over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from roomkey.sim.clock import SimClock
from roomkey.sim.lockme import LockmeSimulator

START = 1_790_000_000.0
DAY = "2026-09-28"


@pytest.fixture
def sim() -> LockmeSimulator:
    return LockmeSimulator(SimClock(manual=True, start=START))


@pytest.fixture
async def control(sim: LockmeSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(sim.app),
                                 base_url="http://lockme.test") as c:
        yield c


async def _ok(resp: httpx.Response, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()


async def test_seed_and_drive_everything_over_http(sim: LockmeSimulator,
                                                   control: httpx.AsyncClient) -> None:
    assert (await _ok(await control.get("/health")))["status"] == "ok"
    await _ok(await control.post("/_sim/oauth/clients", json={
        "client_id": "app", "client_secret": "app-secret",
        "redirect_uri": "http://127.0.0.1:8080/cb"}), 201)
    dept = await _ok(await control.post("/_sim/departments", json={
        "name": "Venue", "webhook_url": "http://127.0.0.1:1/hook?s=x"}), 201)
    assert isinstance(dept, dict)
    assert dept["webhook_configured"] is True
    assert "webhook_url" not in dept
    room = await _ok(await control.post("/_sim/rooms", json={
        "department_id": dept["id"], "name": "Vault", "calendarMargin": 10,
        "slots": [{"hour": "10:00", "pricers": []}]}), 201)
    assert isinstance(room, dict)
    rid = room["roomid"]
    pricer = await _ok(await control.post("/_sim/pricers", json={
        "room_id": rid, "name": "Duo", "price": 99}), 201)
    assert isinstance(pricer, dict)
    day = await _ok(await control.post(f"/_sim/rooms/{rid}/day/0", json=[
        {"hour": "18:00:00", "pricers": [pricer["id"]]}]))
    assert day == [{"hour": "18:00:00", "pricers": [pricer["id"]]}]
    await _ok(await control.post(f"/_sim/rooms/{rid}/date/{DAY}", json=[
        {"hour": "20:00:00", "pricers": []}]))
    assert sim.effective_slots(rid, DAY) == [{"hour": "20:00:00", "pricers": []}]
    await _ok(await control.delete(f"/_sim/rooms/{rid}/date/{DAY}"))

    booked = await _ok(await control.post("/_sim/reservations", json={
        "roomid": rid, "date": DAY, "hour": "18:00:00", "source": "web", "status": 0,
        "name": "Ann", "people": 2}), 201)
    assert isinstance(booked, dict)
    assert booked["source"] == "web"
    assert booked["status"] == 0
    res_id = booked["id"]
    await _ok(await control.post(f"/_sim/reservations/{res_id}/pay"))
    edited = await _ok(await control.post(f"/_sim/reservations/{res_id}/edit",
                                          json={"comment": "cake"}))
    assert isinstance(edited, dict)
    assert edited["comment"] == "cake"
    moved = await _ok(await control.post(f"/_sim/reservations/{res_id}/move", json={
        "roomid": rid, "date": "2026-09-29", "hour": "10:00:00"}))
    assert isinstance(moved, dict)
    assert moved["date"] == "2026-09-29"
    listed = await _ok(await control.get("/_sim/reservations"))
    assert [r["id"] for r in listed] == [res_id]
    await _ok(await control.post(f"/_sim/reservations/{res_id}/cancel"))
    test = await _ok(await control.post(f"/_sim/departments/{dept['id']}/test"), 201)
    assert isinstance(test, dict)
    assert test["action"] == "test"

    messages = await _ok(await control.get("/_sim/messages"))
    assert isinstance(messages, list)
    assert [m["action"] for m in messages] == ["add", "edit", "edit", "edit", "delete", "test"]
    assert messages[3]["data"]["from_date"] == DAY
    one = await _ok(await control.get(f"/_sim/messages/{messages[0]['id']}"))
    assert isinstance(one, dict)
    assert one["read"] is False
    assert len(one["schedule"]) == 9

    token = await _ok(await control.post("/_sim/tokens", json={"client_id": "app"}), 201)
    assert isinstance(token, dict)
    assert token["expires"] == int(START) + 3600
    api = await control.get("/v2.4/rooms",
                            headers={"Authorization": f"Bearer {token['access_token']}"})
    assert api.json() == [{"roomid": rid, "room": "Vault", "department": "Venue"}]
    state = await _ok(await control.get("/_sim/state"))
    assert isinstance(state, dict)
    assert state["messages"] == 6
    assert "app-secret" not in str(state)


async def test_clock_control(sim: LockmeSimulator, control: httpx.AsyncClient) -> None:
    clock = await _ok(await control.get("/_sim/clock"))
    assert isinstance(clock, dict)
    assert clock["time"] == START
    assert clock["manual"] is True
    advanced = await _ok(await control.post("/_sim/clock/advance", json={"seconds": 90}))
    assert isinstance(advanced, dict)
    assert advanced["time"] == START + 90
    warped = await _ok(await control.post("/_sim/clock/warp", json={"warp": 60}))
    assert isinstance(warped, dict)
    assert warped["warp"] == 60


async def test_clock_advance_runs_deliveries_and_lapses(sim: LockmeSimulator,
                                                        control: httpx.AsyncClient) -> None:
    dept = sim.add_department("D")
    room = sim.add_room(dept.id, "R", [{"hour": "10:00:00", "pricers": []}])
    rid = sim.book(room.id, DAY, "10:00:00", source="web", status=0)
    await control.post("/_sim/clock/advance", json={"seconds": 1200})
    assert rid not in sim.reservations


async def test_oauth_config_users_departments_and_grants(
        sim: LockmeSimulator, control: httpx.AsyncClient) -> None:
    user = await _ok(await control.post("/_sim/users", json={"nick": "venue2"}), 201)
    assert isinstance(user, dict)
    config = await _ok(await control.post("/_sim/oauth/config", json={
        "access_ttl": 120, "auto_approve": False, "authorize_user_id": user["userid"]}))
    assert isinstance(config, dict)
    assert config["access_ttl"] == 120
    assert sim.oauth.settings.auto_approve is False
    assert sim.authorize_user_id == user["userid"]
    dept = await _ok(await control.post("/_sim/departments", json={"name": "A"}), 201)
    assert isinstance(dept, dict)
    patched = await _ok(await control.patch(f"/_sim/departments/{dept['id']}", json={
        "webhook_method": "get", "notify_api_changes": False}))
    assert isinstance(patched, dict)
    assert (patched["webhook_method"], patched["notify_api_changes"]) == ("GET", False)
    depts = await _ok(await control.get("/_sim/departments"))
    assert [d["id"] for d in depts] == [dept["id"]]
    assert await _ok(await control.get("/_sim/oauth/grants")) == []


async def test_seed_demo_over_http(sim: LockmeSimulator, control: httpx.AsyncClient) -> None:
    demo = await _ok(await control.post("/_sim/seed-demo"), 201)
    assert isinstance(demo, dict)
    assert len(demo["room_ids"]) == 3
    assert len(sim.reservations) == 2
    assert sim.free_slots(demo["room_ids"][2], "2026-09-30")


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/_sim/departments", {"name": 5, "owner": 999}),
    ("POST", "/_sim/departments", {"name": "x", "owner": 999}),
    ("POST", "/_sim/rooms", {"department_id": 999, "name": "x"}),
    ("POST", "/_sim/rooms", {"department_id": "x"}),
    ("POST", "/_sim/reservations", {"roomid": 999, "date": DAY, "hour": "10:00:00"}),
    ("POST", "/_sim/reservations", {"roomid": 1, "date": DAY, "hour": "10:00:00",
                                    "source": "phone"}),
    ("POST", "/_sim/reservations/1/move", {"roomid": 1}),
    ("POST", "/_sim/reservations/1/pay", None),
    ("POST", "/_sim/tokens", {"client_id": "nobody"}),
    ("POST", "/_sim/clock/advance", {"seconds": -5}),
    ("POST", "/_sim/clock/warp", {"warp": 0}),
    ("POST", "/_sim/oauth/config", {"authorize_user_id": 999}),
    ("POST", "/_sim/oauth/clients", {"client_id": "", "client_secret": "s",
                                     "redirect_uri": "u"}),
    ("PATCH", "/_sim/departments/999", {}),
    ("GET", "/_sim/messages/999", None),
    ("POST", "/_sim/faults/rate-limit", {"limit": 0}),
])
async def test_bad_control_input_is_4xx_json_never_500(
        control: httpx.AsyncClient, method: str, path: str, body: object) -> None:
    resp = await control.request(method, path, json=body)
    assert 400 <= resp.status_code < 500, resp.text
    assert resp.json()["message"]


async def test_malformed_json_is_400(control: httpx.AsyncClient) -> None:
    resp = await control.post("/_sim/departments", content=b"{{",
                              headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert "JSON" in resp.json()["message"]
