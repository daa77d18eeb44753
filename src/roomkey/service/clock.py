"""The service's notion of time: injectable so tests and the demo can warp it.

Anything with ``time()`` (Unix seconds) and ``async sleep(seconds)`` is a clock; the
simulators' ``SimClock`` fits, which is how the demo runs the service at time warp.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock", "utc_now"]


@runtime_checkable
class Clock(Protocol):
    """Unix time plus a sleep that follows the same time base."""

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Real wall-clock time."""

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


def utc_now(clock: Clock) -> datetime:
    """The clock's current time as an aware UTC datetime."""
    return datetime.fromtimestamp(clock.time(), tz=UTC)
