"""The service clock protocol."""

from __future__ import annotations

from datetime import UTC

from roomkey.service.clock import Clock, SystemClock, utc_now
from roomkey.sim.clock import SimClock


def test_sim_clock_satisfies_the_service_clock_protocol() -> None:
    sim = SimClock(start=1_700_000_000.0, manual=True)
    assert isinstance(sim, Clock)
    assert utc_now(sim).timestamp() == 1_700_000_000.0
    assert utc_now(sim).tzinfo is UTC


async def test_system_clock_sleep_zero_returns() -> None:
    clock = SystemClock()
    before = clock.time()
    await clock.sleep(0)
    assert clock.time() >= before
