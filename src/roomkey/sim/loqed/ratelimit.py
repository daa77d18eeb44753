"""Cloud rate limits: Laravel's per-minute throttle and LOQED's status-read block."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from roomkey.sim.clock import SimClock
from roomkey.sim.loqed.config import CloudConfig

__all__ = ["RateLimiter", "Throttle"]


@dataclass(frozen=True, slots=True)
class Throttle:
    """Result of the per-minute throttle, for the ``x-ratelimit-*`` headers."""

    allowed: bool
    limit: int
    remaining: int
    retry_after: int


class RateLimiter:
    """Per-caller counters on the simulated clock."""

    def __init__(self, clock: SimClock, config: CloudConfig) -> None:
        self._clock = clock
        self._config = config
        self._minute: dict[str, deque[float]] = {}
        self._reads: dict[tuple[str, str], deque[float]] = {}
        self._blocked_until: dict[tuple[str, str], float] = {}

    def per_minute(self, caller: str) -> Throttle:
        limit = self._config.per_minute_limit
        now = self._clock.time()
        hits = self._minute.setdefault(caller, deque())
        while hits and hits[0] <= now - 60:
            hits.popleft()
        if len(hits) >= limit:
            return Throttle(False, limit, 0, max(1, int(hits[0] + 60 - now + 0.999)))
        hits.append(now)
        return Throttle(True, limit, limit - len(hits), 0)

    def status_read(self, endpoint: str, caller: str) -> float | None:
        """Count one status read; returns seconds to wait when blocked, else None."""
        rule = self._config.status_limits.get(endpoint)
        if rule is None:
            return None
        now = self._clock.time()
        slot = (endpoint, caller)
        until = self._blocked_until.get(slot)
        if until is not None:
            if now < until:
                return until - now
            del self._blocked_until[slot]
            self._reads.pop(slot, None)
        reads = self._reads.setdefault(slot, deque())
        while reads and reads[0] <= now - rule.window:
            reads.popleft()
        if len(reads) >= rule.limit:
            self._blocked_until[slot] = now + rule.block
            return rule.block
        reads.append(now)
        return None

    def reset(self) -> None:
        self._minute.clear()
        self._reads.clear()
        self._blocked_until.clear()
