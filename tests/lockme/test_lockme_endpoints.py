"""Every endpoint of reference §3: method, path, body, return kind — sync and async."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import respx

from roomkey.lockme import (
    AsyncLockmeClient,
    InvalidRequestError,
    InvalidResponseError,
    LockmeClient,
    MemoryTokenStore,
    Message,
    OAuthConfig,
    Reservation,
    Room,
    Slot,
    User,
    ext_id,
)

from .conftest import ACCESS, BASE, FakeClock

RES = {
    "reservationid": 501,
    "roomid": 7,
    "date": "2026-03-14",
    "hour": "18:30:00",
    "status": "1",
    "source": "web",
    "extid": "",
    "name": "Anna",
    "people": "4",
    "price": "180.00",
    "duration": 90,
    "brand_new_field": {"x": 1},
}
SLOTS = [{"hour": "10:00:00", "pricers": [1, 2]}, {"hour": "12:00:00", "pricers": []}]
NO_BODY = object()


@dataclass
class Case:
    name: str
    args: tuple[Any, ...]
    method: str
    path: str
    answer: Any
    body: Any = NO_BODY
    kwargs: dict[str, Any] = field(default_factory=dict)
    raw_answer: str | None = None


CASES = [
    Case("test", (), "GET", "/test", "OK"),
    Case("test", (), "GET", "/test", None, raw_answer="OK"),
    Case("me", (), "GET", "/me", {"userid": "12", "nick": "venue"}),
    Case("list_rooms", (), "GET", "/rooms", [{"roomid": 7, "room": "Vault", "department": "W"}]),
    Case("get_room", (7,), "GET", "/room/7", {"roomid": 7, "calendarMargin": "15"}),
    Case(
        "edit_room",
        (7, {"calendarMargin": 30}),
        "POST",
        "/room/7",
        {"roomid": 7},
        body={"calendarMargin": 30},
    ),
    Case("get_reservation", (7, 501), "GET", "/room/7/reservation/501", RES),
    Case("get_reservation", (7, ext_id("bk/9")), "GET", "/room/7/reservation/ext/bk%2F9", RES),
    Case(
        "add_reservation",
        ({"roomid": 7, "date": dt.date(2026, 3, 14), "hour": "18:30:00", "people": 4},),
        "PUT",
        "/room/7/reservation",
        502,
        body={"roomid": 7, "date": "2026-03-14", "hour": "18:30:00", "people": 4},
    ),
    Case(
        "edit_reservation",
        (7, "501", {"extid": "local-9"}),
        "POST",
        "/room/7/reservation/501",
        RES,
        body={"extid": "local-9"},
    ),
    Case(
        "delete_reservation", (7, "ext/local-9"), "DELETE", "/room/7/reservation/ext/local-9", True
    ),
    Case(
        "move_reservation",
        (7, 501),
        "POST",
        "/room/7/reservation/501/move",
        RES,
        kwargs={"roomid": 8, "date": "2026-03-15", "hour": "10:00:00"},
        body={"roomid": 8, "date": "2026-03-15", "hour": "10:00:00"},
    ),
    Case("list_reservations", (7, "2026-03-14"), "GET", "/room/7/reservations/2026-03-14", [RES]),
    Case(
        "get_message",
        ("99",),
        "GET",
        "/message/99",
        {"action": "add", "roomid": "7", "reservationid": 501, "data": RES},
    ),
    Case("mark_message_read", (99,), "POST", "/message/99", True),
    Case("get_date_settings", (7, "2026-03-14"), "GET", "/room/7/date/2026-03-14", SLOTS),
    Case(
        "set_date_settings",
        (7, "2026-03-14", SLOTS),
        "POST",
        "/room/7/date/2026-03-14",
        SLOTS,
        body=SLOTS,
    ),
    Case(
        "set_date_settings", (7, "2026-03-14", []), "POST", "/room/7/date/2026-03-14", [], body=[]
    ),
    Case("remove_date_settings", (7, "2026-03-14"), "DELETE", "/room/7/date/2026-03-14", SLOTS),
    Case("get_day_settings", (7, 0), "GET", "/room/7/day/0", SLOTS),
    Case(
        "set_day_settings",
        (7, 6, [Slot(hour=dt.time(9), pricers=[3])]),
        "POST",
        "/room/7/day/6",
        SLOTS,
        body=[{"hour": "09:00:00", "pricers": [3]}],
    ),
]
EXPECTED_KIND: dict[str, Any] = {
    "test": str,
    "me": User,
    "list_rooms": list,
    "get_room": Room,
    "edit_room": dict,
    "get_reservation": Reservation,
    "add_reservation": int,
    "edit_reservation": dict,
    "delete_reservation": bool,
    "move_reservation": dict,
    "list_reservations": list,
    "get_message": Message,
    "mark_message_read": bool,
    "get_date_settings": list,
    "set_date_settings": list,
    "remove_date_settings": list,
    "get_day_settings": list,
    "set_day_settings": list,
}


def _route(api: respx.MockRouter, case: Case) -> respx.Route:
    if case.raw_answer is not None:
        response = httpx.Response(200, text=case.raw_answer)
    else:
        response = httpx.Response(200, json=case.answer)
    return api.route(method=case.method, url=BASE + case.path).mock(return_value=response)


def _check(case: Case, route: respx.Route, result: Any) -> None:
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.url.raw_path.decode() == "/v2.4" + case.path
    assert request.headers["authorization"] == f"Bearer {ACCESS}"
    if case.body is NO_BODY:
        assert request.content == b""
        assert "content-type" not in request.headers
    else:
        assert request.headers["content-type"] == "application/json"
        assert json.loads(request.content) == case.body
    assert isinstance(result, EXPECTED_KIND[case.name])
    assert type(result) is not bool or case.name in ("delete_reservation", "mark_message_read")


def test_every_contract_method_has_a_case() -> None:
    assert {c.name for c in CASES} == set(EXPECTED_KIND)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.name}:{c.path}")
def test_sync_endpoint(
    case: Case,
    api: respx.MockRouter,
    oauth: OAuthConfig,
    store: MemoryTokenStore,
    clock: FakeClock,
) -> None:
    route = _route(api, case)
    with LockmeClient(oauth, store, clock=clock) as client:
        result = getattr(client, case.name)(*case.args, **case.kwargs)
    _check(case, route, result)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.name}:{c.path}")
async def test_async_endpoint(
    case: Case,
    api: respx.MockRouter,
    oauth: OAuthConfig,
    store: MemoryTokenStore,
    clock: FakeClock,
) -> None:
    route = _route(api, case)
    async with AsyncLockmeClient(oauth, store, clock=clock) as client:
        result = await getattr(client, case.name)(*case.args, **case.kwargs)
    _check(case, route, result)


def test_results_are_parsed_faithfully(
    api: respx.MockRouter, oauth: OAuthConfig, store: MemoryTokenStore, clock: FakeClock
) -> None:
    for case in CASES:
        _route(api, case)
    with LockmeClient(oauth, store, clock=clock, venue_tz="Europe/Warsaw") as client:
        assert client.test() == "OK"
        assert client.me().userid == 12
        assert (
            client.add_reservation({"roomid": "7", "date": "2026-03-14", "hour": "18:30:00"}) == 502
        )
        res = client.get_reservation(7, 501)
        assert res.start == dt.datetime(2026, 3, 14, 18, 30, tzinfo=ZoneInfo("Europe/Warsaw"))
        assert res.start.utcoffset() == dt.timedelta(hours=1)
        assert res.end - res.start == dt.timedelta(minutes=90)
        assert res.paid
        assert res.people == 4
        assert res.extid is None
        assert res.model_extra == {"brand_new_field": {"x": 1}}
        message = client.get_message(99)
        assert message.action == "add"
        assert message.roomid == 7
        assert message.reservationid == "501"
        assert message.data is not None
        assert message.data.reservationid == 501
        slots = client.get_day_settings(7, 0)
        assert slots[0].hour == dt.time(10)
        assert slots[0].pricers == [1, 2]
        assert client.get_room(7).calendar_margin == 15


def test_venue_tz_is_configurable(
    api: respx.MockRouter, oauth: OAuthConfig, store: MemoryTokenStore, clock: FakeClock
) -> None:
    api.get(BASE + "/room/7/reservations/2026-07-01").respond(json=[{**RES, "duration": None}])
    with LockmeClient(
        oauth, store, clock=clock, venue_tz="America/New_York", default_duration=45
    ) as client:
        (res,) = client.list_reservations(7, "2026-07-01")
    assert res.start.tzinfo == ZoneInfo("America/New_York")
    assert res.end - res.start == dt.timedelta(minutes=45)
    with pytest.raises(InvalidRequestError):
        LockmeClient(oauth, store, venue_tz="Mars/Olympus")


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("add_reservation", ({"date": "2026-01-01", "hour": "10:00:00"},)),
        ("add_reservation", ({"roomid": 7, "hour": "10:00:00"},)),
        ("add_reservation", ({"roomid": 7, "date": "2026-01-01"},)),
        ("add_reservation", ({"roomid": 7, "date": "2026-02-30", "hour": "10:00:00"},)),
        ("add_reservation", ({"roomid": 0, "date": "2026-01-01", "hour": "10:00:00"},)),
        ("add_reservation", ("not a mapping",)),
        ("edit_reservation", (7, 1, {"hour": "25:00:00"})),
        ("get_reservation", (-1, 1)),
        ("get_reservation", (7, "abc")),
        ("list_reservations", (7, "14.03.2026")),
        ("get_day_settings", (7, 7)),
        ("set_day_settings", (7, 1, [{"pricers": [1]}])),
        ("set_day_settings", (7, 1, "10:00:00")),
        ("set_date_settings", (7, "2026-01-01", [{"hour": "10:00", "pricers": [1]}])),
        ("get_message", ("abc",)),
        ("mark_message_read", (0,)),
        ("move_reservation", (7, 1)),
    ],
)
def test_invalid_arguments_fail_before_sending(
    call: str,
    args: tuple[Any, ...],
    api: respx.MockRouter,
    oauth: OAuthConfig,
    store: MemoryTokenStore,
) -> None:
    catch_all = api.route().respond(200, json=True)
    kwargs: dict[str, Any] = {}
    if call == "move_reservation":
        kwargs = {"roomid": 8, "date": "2026-1-1", "hour": "10:00:00"}
    with LockmeClient(oauth, store) as client, pytest.raises(InvalidRequestError):
        getattr(client, call)(*args, **kwargs)
    assert catch_all.call_count == 0


@pytest.mark.parametrize(
    ("name", "args", "answer"),
    [
        ("add_reservation", ({"roomid": 7, "date": "2026-01-01", "hour": "10:00:00"},), True),
        ("add_reservation", ({"roomid": 7, "date": "2026-01-01", "hour": "10:00:00"},), "x"),
        ("delete_reservation", (7, 1), "OK"),
        ("delete_reservation", (7, 1), {"ok": True}),
        ("list_rooms", (), {"roomid": 7}),
        ("me", (), [1, 2]),
        ("test", (), 5),
        ("get_reservation", (7, 1), {"date": "yesterday", "hour": "10:00:00"}),
        ("get_message", (1,), {"roomid": 7}),
        ("get_day_settings", (7, 1), "closed"),
    ],
)
def test_wrong_answer_kinds_are_invalid_response(
    name: str,
    args: tuple[Any, ...],
    answer: Any,
    api: respx.MockRouter,
    oauth: OAuthConfig,
    store: MemoryTokenStore,
) -> None:
    api.route().respond(200, json=answer)
    with LockmeClient(oauth, store) as client, pytest.raises(InvalidResponseError) as info:
        getattr(client, name)(*args)
    assert info.value.status is None or info.value.status == 200
    assert info.value.body


def test_api_domain_and_version_are_configurable(store: MemoryTokenStore) -> None:
    config = OAuthConfig(
        "roomkey", "s", "http://127.0.0.1/cb", api_domain="http://127.0.0.1:9/", version="v2.1"
    )
    with respx.mock(base_url="http://127.0.0.1:9") as router:
        route = router.get("/v2.1/test").respond(text="OK")
        with LockmeClient(config, store) as client:
            assert client.test() == "OK"
    assert route.called
    with pytest.raises(InvalidRequestError):
        OAuthConfig("roomkey", "s", "http://x/cb", version="v2.4/evil")
