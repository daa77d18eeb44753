"""Lockme simulator: every REST route of reference §3 with the JSON kind the PHP SDK expects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from roomkey.sim.clock import SimClock
from roomkey.sim.lockme import LockmeSimulator

# 2026-09-21 16:13:20 in Warsaw; 2026-09-28 is a Monday.
START = 1_790_000_000.0
DAY = "2026-09-28"


@dataclass
class Env:
    sim: LockmeSimulator
    clock: SimClock
    http: httpx.AsyncClient
    room: int
    room2: int
    pricer: int


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = SimClock(manual=True, start=START)
    sim = LockmeSimulator(clock)
    sim.add_oauth_client("roomkey", "secret-1", "http://127.0.0.1:8080/cb")
    dept = sim.add_department("Escape Warsaw")
    room = sim.add_room(dept.id, "The Vault", calendar_margin=15)
    room2 = sim.add_room(dept.id, "Tomb")
    pricer = sim.add_pricer(room.id, "2-3 people", 149)
    sim.set_day_settings(room.id, 0, [{"hour": "10:00:00", "pricers": [pricer.id]},
                                      {"hour": "12:00:00", "pricers": [pricer.id]}])
    token = sim.issue_token("roomkey")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(sim.app), base_url="http://lockme.test/v2.4",
        headers={"Authorization": f"Bearer {token['access_token']}"},
    ) as http:
        yield Env(sim, clock, http, room.id, room2.id, pricer.id)


async def _add(env: Env, **body: object) -> int:
    payload = {"roomid": env.room, "date": DAY, "hour": "10:00:00", **body}
    resp = await env.http.put(f"/room/{env.room}/reservation", json=payload)
    assert resp.status_code == 200, resp.text
    value = resp.json()
    assert isinstance(value, int)
    assert not isinstance(value, bool)
    return value


async def test_test_me_rooms_room(env: Env) -> None:
    assert (await env.http.get("/test")).json() == "OK"
    me = (await env.http.get("/me")).json()
    assert me == {"userid": env.sim.default_user.userid, "nick": "demo"}
    rooms = (await env.http.get("/rooms")).json()
    assert rooms == [{"roomid": env.room, "room": "The Vault", "department": "Escape Warsaw"},
                     {"roomid": env.room2, "room": "Tomb", "department": "Escape Warsaw"}]
    room = (await env.http.get(f"/room/{env.room}")).json()
    assert room["calendarMargin"] == 15
    assert room["roomid"] == env.room


async def test_edit_room_changes_calendar_margin_only(env: Env) -> None:
    edited = await env.http.post(f"/room/{env.room}", json={"calendarMargin": 30})
    assert edited.status_code == 200
    assert edited.json()["calendarMargin"] == 30
    assert (await env.http.get(f"/room/{env.room}")).json()["calendarMargin"] == 30
    bad = await env.http.post(f"/room/{env.room}", json={"room": "Renamed"})
    assert bad.status_code == 400
    assert "room" in bad.json()["message"]
    worse = await env.http.post(f"/room/{env.room}", json={"calendarMargin": "soon"})
    assert worse.status_code == 400


async def test_unknown_room_reservation_message_are_404_with_message(env: Env) -> None:
    for path in ("/room/999", f"/room/{env.room}/reservation/123",
                 f"/room/{env.room}/reservation/ext/none", "/message/42",
                 f"/room/{env.room}/reservation/abc", "/room/abc"):
        resp = await env.http.get(path)
        assert resp.status_code == 404, path
        assert isinstance(resp.json()["message"], str)


async def test_add_get_edit_delete_reservation(env: Env) -> None:
    rid = await _add(env, name="Anna", surname="Nowak", email="a@example.com",
                     phone="+48 500", people=4, price=149.0, pricer=env.pricer,
                     comment="hi", status=1, extid="loc-1", invoice="NIP 123")
    got = (await env.http.get(f"/room/{env.room}/reservation/{rid}")).json()
    assert got["id"] == rid
    assert got["roomid"] == env.room
    assert (got["date"], got["hour"], got["source"], got["status"]) == (DAY, "10:00:00", "api", 1)
    assert (got["name"], got["people"], got["price"], got["extid"]) == ("Anna", 4, 149.0, "loc-1")
    assert got["time"] == "2026-09-21 16:13:20"
    assert {"surname", "email", "phone", "comment", "language", "invoice", "pricer",
            "from_date", "from_hour", "duration"} <= got.keys()
    edited = await env.http.post(f"/room/{env.room}/reservation/{rid}",
                                 json={"people": 5, "comment": "changed"})
    assert edited.status_code == 200
    assert edited.json()["people"] == 5
    assert edited.json()["name"] == "Anna"
    deleted = await env.http.delete(f"/room/{env.room}/reservation/{rid}")
    assert deleted.json() is True
    assert (await env.http.get(f"/room/{env.room}/reservation/{rid}")).status_code == 404


async def test_rodo_minimal_reservation_and_defaults(env: Env) -> None:
    rid = await _add(env, status=0, extid=77)
    got = (await env.http.get(f"/room/{env.room}/reservation/ext/77")).json()
    assert got["id"] == rid
    assert got["status"] == 0
    assert got["extid"] == "77"
    assert got["name"] == ""
    assert got["duration"] == 60


@pytest.mark.parametrize(("body", "fragment"), [
    ({"hour": "10:00:00"}, "No date"),
    ({"date": DAY}, "No hour"),
    ({"date": "28-09-2026", "hour": "10:00:00"}, "date"),
    ({"date": "2026-02-30", "hour": "10:00:00"}, "date"),
    ({"date": DAY, "hour": "25:00:00"}, "hour"),
    ({"date": DAY, "hour": "10:00:00", "people": "many"}, "people"),
    ({"date": DAY, "hour": "10:00:00", "price": "free"}, "price"),
    ({"date": DAY, "hour": "10:00:00", "status": 7}, "status"),
    ({"date": DAY, "hour": "10:00:00", "roomid": 1}, "roomid"),
    ({"date": DAY, "hour": "10:00:00", "name": {"x": 1}}, "name"),
])
async def test_add_reservation_validation(env: Env, body: dict[str, object],
                                          fragment: str) -> None:
    resp = await env.http.put(f"/room/{env.room}/reservation", json=body)
    assert resp.status_code == 400
    assert fragment in resp.json()["message"]
    assert env.sim.reservations == {}


async def test_malformed_json_and_non_object_bodies_are_400(env: Env) -> None:
    bad = await env.http.put(f"/room/{env.room}/reservation", content=b"{not json",
                             headers={"Content-Type": "application/json"})
    assert bad.status_code == 400
    listed = await env.http.put(f"/room/{env.room}/reservation", json=[1, 2])
    assert listed.status_code == 400


async def test_slot_conflicts_and_duplicate_extid_are_refused(env: Env) -> None:
    await _add(env, extid="a")
    same = await env.http.put(f"/room/{env.room}/reservation",
                              json={"date": DAY, "hour": "10:30:00"})
    assert same.status_code == 409
    assert "taken" in same.json()["message"]
    dup = await env.http.put(f"/room/{env.room}/reservation",
                             json={"date": DAY, "hour": "12:00:00", "extid": "a"})
    assert dup.status_code == 409
    later = await _add(env, hour="11:00:00")
    assert later in env.sim.reservations


async def test_paid_web_reservation_cannot_be_deleted_through_the_api(env: Env) -> None:
    rid = env.sim.book(env.room, DAY, "10:00:00", source="web", status=1, name="Paid")
    resp = await env.http.delete(f"/room/{env.room}/reservation/{rid}")
    assert resp.status_code == 409
    assert "paid via Lockme" in resp.json()["message"]
    assert rid in env.sim.reservations
    for source in ("widget", "panel"):
        other = env.sim.book(env.room, DAY, "12:00:00", source=source)
        assert (await env.http.delete(f"/room/{env.room}/reservation/{other}")).json() is True


async def test_ext_addressing_with_literal_slash_and_room_scope(env: Env) -> None:
    rid = await _add(env, extid="wp_12/3")
    by_ext = await env.http.get(f"/room/{env.room}/reservation/ext/wp_12/3")
    assert by_ext.status_code == 200
    assert by_ext.json()["id"] == rid
    encoded = await env.http.get(f"/room/{env.room}/reservation/ext/wp_12%2F3")
    assert encoded.json()["id"] == rid
    other_room = await env.http.get(f"/room/{env.room2}/reservation/ext/wp_12/3")
    assert other_room.status_code == 404
    other_room_id = await env.http.get(f"/room/{env.room2}/reservation/{rid}")
    assert other_room_id.status_code == 404
    edited = await env.http.post(f"/room/{env.room}/reservation/ext/wp_12/3",
                                 json={"comment": "by ext"})
    assert edited.json()["comment"] == "by ext"
    moved = await env.http.post(f"/room/{env.room}/reservation/ext/wp_12/3/move",
                                json={"roomid": env.room2, "date": DAY, "hour": "18:00:00"})
    assert moved.status_code == 200
    assert moved.json()["roomid"] == env.room2
    assert (await env.http.delete(f"/room/{env.room2}/reservation/ext/wp_12/3")).json() is True


async def test_move_reservation_emits_edit_with_from_date_and_hour(env: Env) -> None:
    rid = await _add(env)
    resp = await env.http.post(f"/room/{env.room}/reservation/{rid}/move",
                               json={"roomid": env.room2, "date": "2026-09-29",
                                     "hour": "18:30:00"})
    assert resp.status_code == 200
    moved = resp.json()
    assert (moved["roomid"], moved["date"], moved["hour"]) == (env.room2, "2026-09-29",
                                                               "18:30:00")
    last = env.sim.messages()[-1]
    assert (last.action, last.roomid, last.reservationid) == ("edit", env.room2, rid)
    assert (last.data["from_date"], last.data["from_hour"]) == (DAY, "10:00:00")
    assert (last.data["date"], last.data["hour"]) == ("2026-09-29", "18:30:00")
    assert (await env.http.get(f"/room/{env.room2}/reservation/{rid}")).status_code == 200


@pytest.mark.parametrize(("body", "status"), [
    ({"date": DAY, "hour": "12:00:00"}, 400),
    ({"roomid": 999, "date": DAY, "hour": "12:00:00"}, 404),
    ({"roomid": "x", "date": DAY, "hour": "12:00:00"}, 400),
    ({"roomid": 0, "date": DAY, "hour": "bad"}, 400),
])
async def test_move_validation(env: Env, body: dict[str, object], status: int) -> None:
    rid = await _add(env)
    resp = await env.http.post(f"/room/{env.room}/reservation/{rid}/move", json=body)
    assert resp.status_code == status
    assert env.sim.reservations[rid].hour == "10:00:00"


async def test_move_into_a_taken_slot_is_refused(env: Env) -> None:
    first = await _add(env)
    await _add(env, hour="12:00:00")
    resp = await env.http.post(f"/room/{env.room}/reservation/{first}/move",
                               json={"roomid": env.room, "date": DAY, "hour": "12:00:00"})
    assert resp.status_code == 409
    assert env.sim.reservations[first].hour == "10:00:00"


async def test_reservations_by_date_is_a_sorted_list(env: Env) -> None:
    late = await _add(env, hour="18:00:00")
    early = await _add(env, hour="09:00:00")
    await _add(env, date="2026-09-29")
    listed = (await env.http.get(f"/room/{env.room}/reservations/{DAY}")).json()
    assert [r["id"] for r in listed] == [early, late]
    empty = (await env.http.get(f"/room/{env.room2}/reservations/{DAY}")).json()
    assert empty == []
    assert (await env.http.get(f"/room/{env.room}/reservations/tomorrow")).status_code == 400


async def test_message_get_and_mark_read(env: Env) -> None:
    rid = await _add(env)
    message = env.sim.messages()[-1]
    got = (await env.http.get(f"/message/{message.id}")).json()
    assert got == {"action": "add", "roomid": env.room, "reservationid": rid,
                   "data": env.sim.reservations[rid].to_wire()}
    marked = await env.http.post(f"/message/{message.id}")
    assert marked.json() is True
    assert message.read
    assert (await env.http.post(f"/message/{message.id}")).json() is True
    assert (await env.http.post("/message/1")).status_code == 404


async def test_date_settings_exception_and_revert_to_weekly(env: Env) -> None:
    weekly = [{"hour": "10:00:00", "pricers": [env.pricer]},
              {"hour": "12:00:00", "pricers": [env.pricer]}]
    url = f"/room/{env.room}/date/{DAY}"
    assert (await env.http.get(url)).json() == weekly
    special = [{"hour": "20:00:00", "pricers": [env.pricer]}]
    assert (await env.http.post(url, json=special)).json() == special
    assert (await env.http.get(url)).json() == special
    assert (await env.http.delete(url)).json() == weekly
    assert (await env.http.get(url)).json() == weekly
    closed = await env.http.post(url, json=[])
    assert closed.status_code == 200
    assert closed.json() == []


async def test_day_settings_monday_is_zero(env: Env) -> None:
    monday = (await env.http.get(f"/room/{env.room}/day/0")).json()
    assert [s["hour"] for s in monday] == ["10:00:00", "12:00:00"]
    assert (await env.http.get(f"/room/{env.room}/day/6")).json() == []
    slots = [{"hour": "09:00", "pricers": [env.pricer]}]
    saved = (await env.http.post(f"/room/{env.room}/day/6", json=slots)).json()
    assert saved == [{"hour": "09:00:00", "pricers": [env.pricer]}]
    # 2026-09-27 is a Sunday: the effective date settings follow the weekly day 6.
    assert (await env.http.get(f"/room/{env.room}/date/2026-09-27")).json() == saved


@pytest.mark.parametrize(("path", "body"), [
    ("/day/7", []),
    ("/day/x", []),
    ("/day/1", [{"hour": "10:00:00", "pricers": [999]}]),
    ("/day/1", [{"hour": "99:00:00", "pricers": []}]),
    ("/day/1", {"hour": "10:00:00"}),
    ("/day/1", [{"hour": "10:00:00"}, {"hour": "10:00:00"}]),
    ("/date/2026-13-01", []),
])
async def test_settings_validation(env: Env, path: str, body: object) -> None:
    resp = await env.http.post(f"/room/{env.room}{path}", json=body)
    assert resp.status_code == 400
    assert resp.json()["message"]


async def test_another_accounts_rooms_and_messages_are_invisible(env: Env) -> None:
    other = env.sim.add_user("other")
    dept = env.sim.add_department("Other venue", owner=other.userid)
    foreign = env.sim.add_room(dept.id, "Foreign")
    rid = env.sim.book(foreign.id, DAY, "10:00:00")
    assert (await env.http.get(f"/room/{foreign.id}")).status_code == 404
    assert (await env.http.get(f"/room/{foreign.id}/reservation/{rid}")).status_code == 404
    assert (await env.http.get(f"/message/{env.sim.messages()[-1].id}")).status_code == 404
    rooms = (await env.http.get("/rooms")).json()
    assert foreign.id not in [r["roomid"] for r in rooms]


async def test_wrong_method_is_405_json(env: Env) -> None:
    resp = await env.http.patch("/rooms")
    assert resp.status_code == 405
    assert resp.json()["message"]
