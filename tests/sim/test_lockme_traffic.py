"""Lockme simulator: the booking traffic generator (seeded, rate-controlled, bounded)."""

from __future__ import annotations

import httpx
import pytest

from roomkey.sim.clock import SimClock
from roomkey.sim.lockme import LockmeSimulator
from roomkey.sim.lockme.demo import seed_demo
from roomkey.sim.lockme.traffic import TrafficGenerator

START = 1_790_000_000.0
HOUR = 3600.0


def _sim() -> LockmeSimulator:
    sim = LockmeSimulator(SimClock(manual=True, start=START))
    seed_demo(sim)
    return sim


def _trace(sim: LockmeSimulator, gen: TrafficGenerator) -> tuple[object, ...]:
    return (
        [(e.at, e.kind, e.reservation_id, e.detail) for e in gen.events],
        [(m.action, m.roomid, m.reservationid, m.data) for m in sim.messages()],
    )


async def _run(seed: int, *, rate: float = 60.0, hours: float = 6.0,
               **kwargs: object) -> tuple[LockmeSimulator, TrafficGenerator]:
    sim = _sim()
    gen = TrafficGenerator(sim, seed=seed, rate=rate, **kwargs)  # type: ignore[arg-type]
    gen.start()
    await sim.clock.advance(hours * HOUR)
    return sim, gen


async def test_same_seed_repeats_exactly() -> None:
    sim_a, gen_a = await _run(42)
    sim_b, gen_b = await _run(42)
    assert _trace(sim_a, gen_a) == _trace(sim_b, gen_b)
    assert gen_a.primary > 250


async def test_different_seed_differs() -> None:
    sim_a, gen_a = await _run(1, hours=3)
    sim_b, gen_b = await _run(2, hours=3)
    assert _trace(sim_a, gen_a) != _trace(sim_b, gen_b)


async def test_produces_every_kind_of_realistic_activity() -> None:
    sim, gen = await _run(3, rate=120, hours=12)
    kinds = {e.kind for e in gen.events}
    assert {"web_cart", "pay", "widget", "panel", "edit", "move", "cancel"} <= kinds
    actions = {m.action for m in sim.messages()}
    assert actions == {"add", "edit", "delete"}
    moves = [m for m in sim.messages() if m.action == "edit"
             and (m.data["from_date"], m.data["from_hour"]) != (m.data["date"], m.data["hour"])]
    assert moves
    today = "2026-09-21"
    assert all(r.date > today for r in sim.reservations.values()
               if r.id not in {10001, 10002})
    # once traffic stops, every cart that was not paid lapses within 20 minutes
    gen.stop()
    await sim.clock.advance(20 * 60)
    assert not [r for r in sim.reservations.values() if r.source == "web" and r.status == 0]
    lapsed = [e for e in gen.events if e.detail == "will lapse"]
    deleted = {m.reservationid for m in sim.messages() if m.action == "delete"}
    assert lapsed
    assert {e.reservation_id for e in lapsed} <= deleted


async def test_max_events_bounds_the_run() -> None:
    sim, gen = await _run(5, rate=600, hours=10, max_events=25)
    assert gen.primary == 25
    assert not gen.running
    before = len(sim.messages())
    await sim.clock.advance(HOUR)
    assert len([m for m in sim.messages()[before:] if m.action == "add"]) == 0


async def test_until_bounds_the_run() -> None:
    _, gen = await _run(6, rate=120, hours=5, until=START + 2 * HOUR)
    assert gen.events
    assert max(e.at for e in gen.events if e.kind != "pay") <= START + 2 * HOUR
    assert not gen.running


async def test_rate_scales_the_number_of_events() -> None:
    _, slow = await _run(9, rate=20, hours=4)
    _, fast = await _run(9, rate=200, hours=4)
    assert 45 <= slow.primary <= 130
    assert 700 <= fast.primary <= 900
    assert fast.primary > 5 * slow.primary


async def test_stop_halts_and_no_rooms_means_skips() -> None:
    sim, gen = await _run(10, hours=1)
    gen.stop()
    count = gen.primary
    await sim.clock.advance(5 * HOUR)
    assert gen.primary == count
    empty = LockmeSimulator(SimClock(manual=True, start=START))
    idle = TrafficGenerator(empty, seed=1, rate=60, max_events=5)
    idle.start()
    await empty.clock.advance(10 * HOUR)
    assert [e.kind for e in idle.events] == ["skipped"] * 5


def test_invalid_settings_are_refused() -> None:
    sim = _sim()
    with pytest.raises(ValueError, match="rate"):
        TrafficGenerator(sim, rate=0)
    with pytest.raises(ValueError, match="unknown traffic kinds"):
        TrafficGenerator(sim, weights={"party": 1.0})


async def test_traffic_through_the_control_api() -> None:
    sim = _sim()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(sim.app),
                                 base_url="http://lockme.test/_sim") as control:
        started = await control.post("/traffic", json={"seed": 4, "rate": 60,
                                                       "max_events": 10})
        assert started.json()["running"] is True
        await control.post("/clock/advance", json={"seconds": 24 * HOUR})
        summary = (await control.get("/traffic")).json()
        assert summary["events"] == 10
        assert summary["running"] is False
        assert sum(summary["by_kind"].values()) >= 10
        restarted = await control.post("/traffic", json={"seed": 4, "rate": 60})
        assert restarted.json()["running"] is True
        stopped = await control.delete("/traffic")
        assert stopped.json()["running"] is False
        bad = await control.post("/traffic", json={"rate": -1})
        assert bad.status_code == 400
