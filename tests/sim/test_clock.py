"""The simulators' controllable clock."""

from __future__ import annotations

import asyncio

import pytest

from roomkey.sim.clock import SimClock


async def test_manual_clock_runs_timers_in_order_while_advancing() -> None:
    clock = SimClock(start=1000.0, manual=True)
    seen: list[tuple[str, float]] = []

    async def late() -> None:
        seen.append(("late", clock.time()))

    clock.call_later(5, late)
    clock.call_later(2, lambda: seen.append(("early", clock.time())))
    clock.call_later(30, lambda: seen.append(("never", clock.time())))
    await clock.advance(10)
    assert seen == [("early", 1002.0), ("late", 1005.0)]
    assert clock.time() == 1010.0
    assert clock.pending() == 1


async def test_timer_scheduled_by_a_timer_runs_in_the_same_advance() -> None:
    clock = SimClock(start=0.0, manual=True)
    seen: list[float] = []

    def first() -> None:
        clock.call_later(1, lambda: seen.append(clock.time()))

    clock.call_later(1, first)
    await clock.advance(3)
    assert seen == [2.0]


async def test_cancelled_timer_and_failing_callback_do_not_stop_the_clock() -> None:
    clock = SimClock(start=0.0, manual=True)
    seen: list[int] = []

    def boom() -> None:
        raise RuntimeError("boom")

    t = clock.call_later(1, lambda: seen.append(1))
    t.cancel()
    clock.call_later(1, boom)
    clock.call_later(2, lambda: seen.append(2))
    await clock.advance(5)
    assert seen == [2]


async def test_manual_sleep_wakes_on_advance() -> None:
    clock = SimClock(start=0.0, manual=True)
    task = asyncio.create_task(clock.sleep(4))
    await asyncio.sleep(0)
    await clock.advance(3)
    assert not task.done()
    await clock.advance(1)
    await asyncio.wait_for(task, 1)


def test_warp_scales_real_time() -> None:
    mono = [100.0]
    clock = SimClock(start=0.0, warp=60.0, monotonic=lambda: mono[0])
    mono[0] += 2
    assert clock.time() == pytest.approx(120.0)
    clock.set_warp(1.0)
    mono[0] += 2
    assert clock.time() == pytest.approx(122.0)


async def test_warp_runner_fires_timers() -> None:
    clock = SimClock(start=0.0, warp=1000.0)
    fired = asyncio.Event()
    clock.call_later(20, fired.set)  # 20 simulated seconds = 20 ms real
    await clock.start()
    try:
        await asyncio.wait_for(fired.wait(), 2)
    finally:
        await clock.stop()


def test_rejects_bad_warp() -> None:
    with pytest.raises(ValueError):
        SimClock(warp=0)
