"""A controllable clock and timer queue shared by the simulators.

Two modes:

* **manual** (tests): time stands still until :meth:`SimClock.advance` moves it. Timers due
  on the way run in time order and are awaited, so a test sees every effect of "ten seconds
  later" deterministically and without sleeping.
* **warp** (demo, loopback servers): simulated time runs ``warp`` times faster than real
  time. :meth:`SimClock.start` runs a background task that fires timers when they fall due.

Timer callbacks may be plain functions or coroutine functions. A failing callback is logged
and never stops the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = ["SimClock", "Timer", "TimerCallback"]

log = logging.getLogger(__name__)

TimerCallback = Callable[[], Awaitable[None] | None]


@dataclass(order=True)
class Timer:
    """A scheduled callback. Cancel it with :meth:`cancel`."""

    when: float
    seq: int
    callback: TimerCallback = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class SimClock:
    """Simulated Unix time with timers; manual or warped."""

    def __init__(
        self,
        *,
        start: float | None = None,
        warp: float = 1.0,
        manual: bool = False,
        real_time: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if warp <= 0:
            raise ValueError("warp must be positive")
        self._monotonic = monotonic
        self._manual = manual
        self._warp = float(warp)
        self._anchor_sim = real_time() if start is None else float(start)
        self._anchor_mono = monotonic()
        self._timers: list[Timer] = []
        self._seq = itertools.count()
        self._wake: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None

    # -- reading time -------------------------------------------------------------------
    @property
    def manual(self) -> bool:
        return self._manual

    @property
    def warp(self) -> float:
        return self._warp

    def time(self) -> float:
        """Current simulated Unix time in seconds."""
        if self._manual:
            return self._anchor_sim
        return self._anchor_sim + (self._monotonic() - self._anchor_mono) * self._warp

    def __call__(self) -> float:
        return self.time()

    def now(self) -> datetime:
        """Current simulated time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.time(), tz=UTC)

    # -- changing time ------------------------------------------------------------------
    def set_warp(self, warp: float) -> None:
        """Change the speed of warped time (keeps the current simulated time)."""
        if warp <= 0:
            raise ValueError("warp must be positive")
        self._rebase()
        self._warp = float(warp)
        self._poke()

    def jump_to(self, when: float) -> None:
        """Set the simulated time without running timers in between (they run when noticed)."""
        self._anchor_sim = float(when)
        self._anchor_mono = self._monotonic()
        self._poke()

    def _rebase(self) -> None:
        now = self.time()
        self._anchor_sim = now
        self._anchor_mono = self._monotonic()

    async def advance(self, seconds: float) -> None:
        """Move time forward, running every timer that falls due on the way, in order."""
        if seconds < 0:
            raise ValueError("cannot go back in time")
        target = self.time() + seconds
        while True:
            timer = self._pop_due(target)
            if timer is None:
                break
            if self._manual:
                self._anchor_sim = max(self._anchor_sim, timer.when)
            await self._fire(timer)
        if self._manual:
            self._anchor_sim = max(self._anchor_sim, target)
        else:
            self.jump_to(max(self.time(), target))

    async def run_due(self) -> int:
        """Run every timer due at the current time; returns how many ran."""
        count = 0
        while (timer := self._pop_due(self.time())) is not None:
            await self._fire(timer)
            count += 1
        return count

    # -- timers -------------------------------------------------------------------------
    def call_at(self, when: float, callback: TimerCallback) -> Timer:
        timer = Timer(float(when), next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        self._poke()
        return timer

    def call_later(self, delay: float, callback: TimerCallback) -> Timer:
        return self.call_at(self.time() + max(0.0, delay), callback)

    def pending(self) -> int:
        """Number of timers not yet run (cancelled ones excluded)."""
        return sum(1 for t in self._timers if not t.cancelled)

    def next_due(self) -> float | None:
        for t in sorted(self._timers):
            if not t.cancelled:
                return t.when
        return None

    def _pop_due(self, limit: float) -> Timer | None:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        if self._timers and self._timers[0].when <= limit:
            return heapq.heappop(self._timers)
        return None

    async def _fire(self, timer: Timer) -> None:
        try:
            result = timer.callback()
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("simulator timer callback failed")

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` of simulated time."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def _done() -> None:
            if not fut.done():
                fut.set_result(None)

        timer = self.call_later(seconds, _done)
        try:
            await fut
        finally:
            timer.cancel()

    # -- background runner (warp mode) ----------------------------------------------------
    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        """Start firing timers in real time (no-op in manual mode or when running)."""
        if self._manual or self._runner is not None:
            return
        self._wake = asyncio.Event()
        self._runner = asyncio.create_task(self._run(), name="sim-clock")

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._wake = None

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self.run_due()
            nxt = self.next_due()
            self._wake.clear()
            timeout = None if nxt is None else max(0.0, (nxt - self.time()) / self._warp)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
