"""Lockme simulator: property tests — arbitrary input is refused cleanly and loses nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomkey.sim.clock import SimClock
from roomkey.sim.lockme import LockmeSimulator, SimError
from roomkey.sim.lockme.calendar import validate_slots

START = 1_790_000_000.0

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8,
)
fields = st.sampled_from(["date", "hour", "people", "price", "pricer", "status", "extid",
                          "name", "invoice", "duration", "roomid", "comment", "phone"])
plausible = {
    "date": st.sampled_from(["2026-09-28", "2026-02-30", "", "28.09.2026"]) | json_values,
    "hour": st.sampled_from(["10:00:00", "10:00", "24:00:00", "9:00"]) | json_values,
}


@st.composite
def bodies(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return draw(json_values)
    keys = draw(st.lists(fields, max_size=8, unique=True))
    return {k: draw(plausible.get(k, json_values)) for k in keys}


def _sim() -> tuple[LockmeSimulator, int]:
    sim = LockmeSimulator(SimClock(manual=True, start=START))
    dept = sim.add_department("D")
    room = sim.add_room(dept.id, "R", ["10:00:00"])
    return sim, room.id


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies())
def test_add_reservation_either_succeeds_or_refuses_without_side_effects(body: Any) -> None:
    sim, room = _sim()
    refused: SimError | None = None
    try:
        rid = sim.api_add(room, body)
    except SimError as exc:
        refused = exc
    if refused is not None:
        assert 400 <= refused.status < 500
        assert sim.reservations == {}
        assert sim.messages() == []
        return
    res = sim.reservations[rid]
    assert dt.date.fromisoformat(res.date)
    assert len(res.hour) == 8
    assert res.source == "api"
    assert res.status in (0, 1)
    assert [m.action for m in sim.messages()] == ["add"]


@settings(max_examples=100, deadline=None)
@given(body=bodies())
def test_edit_reservation_is_atomic(body: Any) -> None:
    sim, room = _sim()
    rid = sim.book(room, "2026-09-28", "10:00:00", name="Ann", people=2)
    before = dict(sim.reservations[rid].__dict__)
    try:
        sim.api_edit(sim.reservations[rid], body)
    except SimError:
        assert sim.reservations[rid].__dict__ == before
        assert len(sim.messages()) == 1
        return
    assert [m.action for m in sim.messages()] == ["add", "edit"]


@settings(max_examples=100, deadline=None)
@given(value=json_values)
def test_slot_lists_validate_or_refuse(value: Any) -> None:
    try:
        slots = validate_slots(value)
    except SimError as exc:
        status = exc.status
    else:
        assert all(set(s) == {"hour", "pricers"} for s in slots)
        return
    assert status == 400


def test_python_dates_and_bare_hour_slots_are_accepted() -> None:
    sim, room = _sim()
    rid = sim.book(room, dt.date(2026, 9, 28), dt.time(10, 0), source="web", status=1)
    assert (sim.reservations[rid].date, sim.reservations[rid].hour) == ("2026-09-28",
                                                                        "10:00:00")
    assert sim.day_settings(room, 0) == [{"hour": "10:00:00", "pricers": []}]
