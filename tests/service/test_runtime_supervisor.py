"""The worker supervisor: passes, wake-ups, crash restarts with backoff, clean stop."""

from __future__ import annotations

import asyncio

import pytest

from roomkey.service.runtime import Signal, Supervisor, Worker
from roomkey.sim.clock import SimClock


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_worker_runs_again_after_its_interval() -> None:
    clock = SimClock(start=1_000.0, manual=True)
    passes: list[float] = []

    async def step() -> float | None:
        passes.append(clock.time())
        return None

    sup = Supervisor(clock)
    sup.add(Worker("w", step, interval=30))
    await sup.start()
    await _settle()
    assert passes == [1_000.0]
    await clock.advance(29)
    await _settle()
    assert len(passes) == 1
    await clock.advance(1)
    await _settle()
    assert passes == [1_000.0, 1_030.0]
    await sup.stop()
    assert not sup.running


async def test_wake_event_runs_the_next_pass_at_once() -> None:
    clock = SimClock(start=0.0, manual=True)
    wake = asyncio.Event()
    passes = 0

    async def step() -> float | None:
        nonlocal passes
        passes += 1
        return None

    sup = Supervisor(clock)
    sup.add(Worker("w", step, interval=3600, wake=wake))
    await sup.start()
    await _settle()
    assert passes == 1
    wake.set()
    await _settle()
    assert passes == 2
    assert clock.time() == 0.0  # no time had to pass
    await sup.stop()


async def test_step_asking_for_a_shorter_delay_is_honoured() -> None:
    clock = SimClock(start=0.0, manual=True)
    times: list[float] = []

    async def step() -> float | None:
        times.append(clock.time())
        return 5.0

    sup = Supervisor(clock)
    sup.add(Worker("w", step, interval=60))
    await sup.start()
    await _settle()
    await clock.advance(5)
    await _settle()
    await clock.advance(5)
    await _settle()
    assert times == [0.0, 5.0, 10.0]
    await sup.stop()


async def test_crashing_worker_is_restarted_with_exponential_backoff() -> None:
    clock = SimClock(start=0.0, manual=True)
    times: list[float] = []
    failures: list[str] = []

    async def step() -> float | None:
        times.append(clock.time())
        if len(times) <= 3:
            raise RuntimeError(f"boom {len(times)}")
        return None

    sup = Supervisor(clock, on_failure=lambda name, exc: failures.append(f"{name}:{exc}"))
    sup.add(Worker("w", step, interval=1000, backoff_initial=2, backoff_max=5))
    await sup.start()
    await _settle()
    for _ in range(12):
        await clock.advance(1)
        await _settle()
    # attempts at 0, then +2, then +4, then +5 (capped)
    assert times == [0.0, 2.0, 6.0, 11.0]
    assert failures == ["w:boom 1", "w:boom 2", "w:boom 3"]
    (status,) = sup.status()
    assert status.failures == 3
    assert status.consecutive_failures == 0
    assert status.passes == 1
    assert status.last_error == "RuntimeError: boom 3"
    assert status.running
    await sup.stop()
    assert not status.running


async def test_stop_cancels_a_pass_that_does_not_finish() -> None:
    clock = SimClock(start=0.0, manual=True)
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def step() -> float | None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return None

    sup = Supervisor(clock)
    sup.add(Worker("w", step))
    await sup.start()
    await started.wait()
    await sup.stop(grace=0.01)
    assert cancelled.is_set()
    assert not sup.status()[0].running


async def test_stop_waits_for_an_idle_worker_without_advancing_time() -> None:
    clock = SimClock(start=0.0, manual=True)

    async def step() -> float | None:
        return None

    sup = Supervisor(clock)
    sup.add(Worker("w", step, interval=3600))
    await sup.start()
    await _settle()
    await sup.stop(grace=1)
    assert clock.pending() == 0  # the idle sleep's timer was cancelled


async def test_worker_added_while_running_starts_and_names_are_unique() -> None:
    clock = SimClock(start=0.0, manual=True)
    ran = asyncio.Event()

    async def step() -> float | None:
        ran.set()
        return None

    sup = Supervisor(clock)
    await sup.start()
    sup.add(Worker("late", step))
    await asyncio.wait_for(ran.wait(), 1)
    with pytest.raises(ValueError, match="already registered"):
        sup.add(Worker("late", step))
    assert await sup.run_once("late") is None
    await sup.stop()


async def test_a_signal_wakes_a_sleeping_worker_in_one_loop_turn() -> None:
    clock = SimClock(start=1_000.0, manual=True)
    wake = Signal()
    passes: list[float] = []

    async def step() -> float | None:
        passes.append(clock.time())
        return None

    sup = Supervisor(clock)
    sup.add(Worker("w", step, interval=3600, wake=wake))
    await sup.start()
    await _settle()
    assert len(passes) == 1
    wake.set()
    await asyncio.sleep(0)  # the worker's task resumes on this turn
    await asyncio.sleep(0)
    assert len(passes) == 2
    # asleep again: exactly one pending future registered, none left from the last sleep
    assert len(wake._futures) == 1
    assert not wake._futures[0].done()
    await sup.stop()


async def test_a_plain_asyncio_event_still_wakes_a_worker() -> None:
    clock = SimClock(start=1_000.0, manual=True)
    wake = asyncio.Event()
    passes: list[float] = []

    async def step() -> float | None:
        passes.append(clock.time())
        return None

    sup = Supervisor(clock)
    sup.add(Worker("w", step, interval=3600, wake=wake))
    await sup.start()
    await _settle()
    wake.set()
    await _settle()
    assert len(passes) == 2
    await sup.stop()


async def test_timer_wake_ups_leave_no_waiters_behind_on_the_signal() -> None:
    clock = SimClock(start=1_000.0, manual=True)
    wake = Signal()

    async def step() -> float | None:
        return None

    sup = Supervisor(clock)
    sup.add(Worker("w", step, interval=10, wake=wake))
    await sup.start()
    for _ in range(5):
        await _settle()
        await clock.advance(10)
    await _settle()
    assert len(wake._futures) <= 1  # only the current sleep's future
    await sup.stop()
    assert wake._futures == []


def test_signal_resolves_futures_registered_before_and_after_it_is_set() -> None:
    loop = asyncio.new_event_loop()
    try:
        signal = Signal()
        before: asyncio.Future[None] = loop.create_future()
        signal.notify(before)
        signal.set()
        after: asyncio.Future[None] = loop.create_future()
        signal.notify(after)
        assert before.done()
        assert after.done()
        forgotten: asyncio.Future[None] = loop.create_future()
        signal.clear()
        signal.notify(forgotten)
        signal.forget(forgotten)
        signal.set()
        assert not forgotten.done()
    finally:
        loop.close()
