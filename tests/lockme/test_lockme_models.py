"""Models tolerate what Lockme sends and turn garbage into a typed error, never a crash."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomkey.lockme import (
    ApiError,
    InvalidResponseError,
    LockmeError,
    MemoryTokenStore,
    Message,
    OAuthConfig,
    Reservation,
    Room,
    Slot,
    Token,
    User,
)
from roomkey.lockme import _endpoints as ep
from roomkey.lockme._core import ClientCore
from roomkey.lockme.models import parse_model, parse_model_list

FAST = settings(max_examples=120, deadline=None)
WARSAW = ZoneInfo("Europe/Warsaw")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
reservation_like = st.fixed_dictionaries(
    {},
    optional={
        "date": st.one_of(
            st.sampled_from(["2026-02-28", "9999-12-31", "0001-01-01"]),
            st.text(max_size=12),
            st.integers(),
        ),
        "hour": st.one_of(st.just("10:00:00"), st.just("10:00"), st.text(max_size=9)),
        "status": st.one_of(
            st.sampled_from([1, 0, True, False, "1", "0", "true", "2"]), json_values
        ),
        "roomid": st.one_of(st.integers(), st.text(max_size=5)),
        "price": st.one_of(st.text(max_size=8), st.floats(allow_nan=False), st.none()),
        "people": st.one_of(st.integers(), st.text(max_size=3), st.just("")),
        "duration": st.one_of(json_values, st.integers(min_value=10**6)),
        "extid": json_values,
        "whatever": json_values,
    },
)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (1, True),
        (0, False),
        (True, True),
        (False, False),
        ("1", True),
        ("0", False),
        ("true", True),
        ("false", False),
        (None, None),
    ],
)
def test_status_variants(status: Any, expected: bool | None) -> None:
    res = Reservation.model_validate({"date": "2026-01-01", "hour": "10:00:00", "status": status})
    assert res.status is expected


def test_numbers_as_strings_and_extras_are_kept() -> None:
    res = Reservation.model_validate(
        {
            "date": "2026-10-25",
            "hour": "02:30:00",
            "roomid": "7",
            "people": "5",
            "price": "99.50",
            "reservationid": "12",
            "from_date": "2026-10-24",
            "from_hour": "20:00",
            "unknown": [1, 2],
        }
    )
    assert (res.roomid, res.people, res.reservationid) == (7, 5, 12)
    assert str(res.price) == "99.50"
    assert res.model_extra == {"unknown": [1, 2]}
    assert res.from_start == dt.datetime(2026, 10, 24, 20, 0, tzinfo=WARSAW)
    assert res.start.tzinfo is WARSAW or res.start.tzinfo == WARSAW
    assert res.end == res.start + dt.timedelta(minutes=60)
    room = Room.model_validate({"roomid": "3", "room": "Vault", "department": "W", "x": 1})
    assert room.roomid == 3
    assert room.name == "Vault"
    assert User.model_validate({"userid": "9", "nick": 123}).nick == "123"
    assert Slot.model_validate({"hour": "09:00", "pricers": ["1", 2]}).hour == dt.time(9)


def test_personal_data_is_not_in_repr() -> None:
    res = Reservation.model_validate(
        {
            "date": "2026-01-01",
            "hour": "10:00:00",
            "name": "Jan",
            "surname": "Kowalski",
            "email": "jan@example.com",
            "phone": "+48600",
            "note_pii": "secret-note",
        }
    )
    text = repr(res) + str(res)
    for pii in ("Jan", "Kowalski", "jan@example.com", "+48600", "secret-note"):
        assert pii not in text


def test_message_shapes() -> None:
    msg = Message.model_validate(
        {
            "action": "delete",
            "roomid": "4",
            "reservationid": 77,
            "data": {"date": "2026-01-01", "hour": "10:00:00", "extid": "loc-1"},
        }
    )
    assert msg.data is not None
    assert msg.data.extid == "loc-1"
    assert msg.reservationid == "77"
    assert Message.model_validate({"action": "test", "data": []}).data is None
    with pytest.raises(InvalidResponseError):
        parse_model(Message, {"roomid": 1})


def _outcome(fn: Callable[[], Any]) -> Any:
    """The result of ``fn()``, or the LockmeError it raised (anything else propagates)."""
    try:
        return fn()
    except LockmeError as exc:
        return exc


@FAST
@given(reservation_like)
def test_reservation_from_arbitrary_dicts(payload: dict[str, Any]) -> None:
    res = _outcome(lambda: parse_model(Reservation, payload, context={"venue_tz": WARSAW}))
    if isinstance(res, InvalidResponseError):
        assert res.data == payload
        return
    assert isinstance(res, Reservation)
    assert res.start.tzinfo is not None
    assert res.end > res.start or res.date.year == 9999
    assert res.status in (None, True, False)


@FAST
@given(json_values)
def test_every_model_on_arbitrary_json(payload: Any) -> None:
    for model in (Reservation, Message, Room, User, Slot):
        out = _outcome(functools.partial(parse_model, model, payload))
        assert isinstance(out, model | InvalidResponseError)
    out = _outcome(lambda: parse_model_list(Room, payload))
    assert isinstance(out, list | InvalidResponseError)


def _core() -> ClientCore:
    config = OAuthConfig("roomkey", "s", "http://127.0.0.1/cb")
    return ClientCore(config, MemoryTokenStore(Token(access_token="a")))


CALLS: list[ep.ApiCall[Any]] = [
    ep.test(),
    ep.me(),
    ep.list_rooms(),
    ep.get_room(1),
    ep.get_reservation(1, 1),
    ep.add_reservation({"roomid": 1, "date": "2026-01-01", "hour": "10:00:00"}),
    ep.delete_reservation(1, 1),
    ep.list_reservations(1, "2026-01-01"),
    ep.get_message(1),
    ep.mark_message_read(1),
    ep.get_day_settings(1, 0),
    ep.edit_room(1, {}),
]


@FAST
@given(
    st.integers(min_value=100, max_value=599),
    json_values | st.text(max_size=30).map(lambda s: ("raw", s)),
)
def test_any_answer_is_a_result_or_a_lockme_error(status: int, body: Any) -> None:
    core = _core()
    if isinstance(body, tuple):
        response = httpx.Response(status, text=body[1])
    else:
        response = httpx.Response(status, text=json.dumps(body))
    for call in CALLS:
        out = _outcome(functools.partial(core.interpret, call, response))
        if status >= 300:
            assert isinstance(out, ApiError)
            assert out.status == status
