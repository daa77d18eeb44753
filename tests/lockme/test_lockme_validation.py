"""Client-side validation: valid input passes, anything else is InvalidRequestError."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomkey.lockme import InvalidRequestError, ext_id
from roomkey.lockme.validation import (
    validate_date,
    validate_day,
    validate_hour,
    validate_message_id,
    validate_reservation_id,
    validate_room_id,
)

FAST = settings(max_examples=150, deadline=None)


@pytest.mark.parametrize(("value", "expected"), [(1, 1), ("42", 42), (2**40, 2**40), ("007", 7)])
def test_room_id_accepts_positive_ints_and_digit_strings(value: object, expected: int) -> None:
    assert validate_room_id(value) == expected


@pytest.mark.parametrize(
    "value", [0, -3, "0", "", " 5", "5\n", "١٢", "12a", 1.5, True, None, [1], "9" * 30]
)
def test_room_id_rejects_everything_else(value: object) -> None:
    with pytest.raises(InvalidRequestError):
        validate_room_id(value)


@pytest.mark.parametrize(
    "value", ["2026-02-30", "2026-13-01", "26-01-01", "2026-1-01", "2026-01-01\n", "２０２６-01-01"]
)
def test_date_rejects_malformed_and_unreal_dates(value: str) -> None:
    with pytest.raises(InvalidRequestError):
        validate_date(value)


def test_date_accepts_real_dates_and_date_objects() -> None:
    assert validate_date("2024-02-29") == "2024-02-29"
    assert validate_date(dt.date(2026, 3, 1)) == "2026-03-01"
    with pytest.raises(InvalidRequestError):
        validate_date(dt.datetime(2026, 3, 1, 10, 0))


@pytest.mark.parametrize("value", ["24:00:00", "12:60:00", "12:00:60", "12:00", "1:00:00", "ab"])
def test_hour_rejects_bad_times(value: str) -> None:
    with pytest.raises(InvalidRequestError):
        validate_hour(value)


def test_hour_accepts_valid_times() -> None:
    assert validate_hour("00:00:00") == "00:00:00"
    assert validate_hour("23:59:59") == "23:59:59"
    assert validate_hour(dt.time(18, 30)) == "18:30:00"
    with pytest.raises(InvalidRequestError):
        validate_hour(dt.time(18, 30, tzinfo=dt.UTC))


def test_day_is_zero_to_six() -> None:
    assert [validate_day(d) for d in range(7)] == list(range(7))
    assert validate_day("6") == 6
    for bad in (-1, 7, "7", True, None, "mon"):
        with pytest.raises(InvalidRequestError):
            validate_day(bad)


def test_message_id_from_header() -> None:
    assert validate_message_id("123") == 123
    assert validate_message_id(" 123 ") == 123
    for bad in ("", "abc", "-1", "0", None, "1.5", "12,3"):
        with pytest.raises(InvalidRequestError):
            validate_message_id(bad)


def test_reservation_ids_numeric_or_ext_percent_encoded() -> None:
    assert validate_reservation_id(17) == "17"
    assert validate_reservation_id("17") == "17"
    assert ext_id("b-17") == "ext/b-17"
    assert validate_reservation_id(ext_id("a/b c?")) == "ext/a%2Fb%20c%3F"
    assert validate_reservation_id("ext/zażółć") == "ext/za%C5%BC%C3%B3%C5%82%C4%87"
    assert ext_id(55) == "ext/55"
    for bad in ("ext/", "abc", "", 0, -1, None):
        with pytest.raises(InvalidRequestError):
            validate_reservation_id(bad)
    with pytest.raises(InvalidRequestError):
        ext_id("")


@FAST
@given(st.text(max_size=25))
def test_arbitrary_date_strings_are_valid_or_invalid_request(value: str) -> None:
    try:
        out = validate_date(value)
    except InvalidRequestError:
        return
    assert dt.date.fromisoformat(out).isoformat() == value


@FAST
@given(st.text(max_size=12))
def test_arbitrary_hour_strings_are_valid_or_invalid_request(value: str) -> None:
    try:
        out = validate_hour(value)
    except InvalidRequestError:
        return
    assert dt.time.fromisoformat(out).isoformat() == value


@FAST
@given(st.one_of(st.text(max_size=20), st.integers(), st.none(), st.floats(), st.booleans()))
def test_arbitrary_room_ids_are_valid_or_invalid_request(value: object) -> None:
    try:
        out = validate_room_id(value)
    except InvalidRequestError:
        return
    assert out > 0
    assert str(out) == str(value).lstrip("0") or isinstance(value, int)


@FAST
@given(st.one_of(st.text(max_size=20), st.integers()))
def test_arbitrary_reservation_ids_are_valid_or_invalid_request(value: object) -> None:
    try:
        out = validate_reservation_id(value)
    except InvalidRequestError:
        return
    assert out.isascii()
    assert out.startswith("ext/") or out.isdigit()
    assert "/" not in out.removeprefix("ext/")
