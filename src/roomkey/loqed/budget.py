"""A persisted budget for the status reads LOQED rate-limits.

LOQED blocks a client for 12 hours after more than 12 status reads in 12 hours. A
:class:`StatusBudget` keeps the times of recent reads, the end of a server-side block and the
last good answer per cache key in one JSON file:

* a read is **recorded before it is sent**, so a crash loop cannot exceed the budget (a read
  that certainly never left — :class:`~roomkey.loqed.errors.NotSentError` — is refunded);
* writes are atomic (temp file + fsync + ``os.replace``) and guarded by a :mod:`filelock`
  lock plus a thread lock, so several processes/threads may share one file;
* when the budget is spent (or the server answered 429 and the block has not ended) the
  cached answer is served; without one the read raises
  :class:`~roomkey.loqed.errors.StatusBudgetExhaustedError` (local budget spent) or
  :class:`~roomkey.loqed.errors.RateLimitedError` (server block remembered);
* it is only ever used for status reads, never for commands.

The count is shared by every key in one file (one file = one rate-limited quota); the cache
is per key. The file may hold a cached cloud lock list, which contains keys: it is created
with mode 0600.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from filelock import FileLock

from ._http import Call
from .errors import (
    InvalidRequestError,
    NotSentError,
    RateLimitedError,
    StatusBudgetExhaustedError,
)

__all__ = ["CachedAnswer", "Reservation", "StatusBudget", "budgeted_read"]

log = logging.getLogger(__name__)

T = TypeVar("T")
_VERSION = 1


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """The last good answer stored for a key and when it was read from LOQED."""

    payload: Any
    fetched_at: float


@dataclass(frozen=True, slots=True)
class Reservation:
    """Outcome of :meth:`StatusBudget.reserve`.

    ``granted``: a read was recorded at ``at`` and may be sent. Otherwise ``blocked`` tells
    whether a server block (rather than the local budget) stopped it and ``retry_after`` when
    the next read becomes possible; ``cached`` is the stored answer, if any.
    """

    granted: bool
    at: float
    retry_after: float
    blocked: bool
    cached: CachedAnswer | None


@dataclass
class _State:
    reads: list[float]
    blocked_until: float | None
    cache: dict[str, dict[str, Any]]


class StatusBudget:
    """Persisted rolling-window budget of status reads (default 10 per 12 h)."""

    def __init__(
        self,
        path: Path | str,
        *,
        limit: int = 10,
        window: float = 12 * 3600,
        clock: Callable[[], float] = time.time,
        block_duration: float = 12 * 3600,
        lock_timeout: float = 30.0,
    ) -> None:
        if limit < 1:
            raise InvalidRequestError("limit must be at least 1")
        if window <= 0 or block_duration <= 0:
            raise InvalidRequestError("window and block_duration must be positive")
        self.path = Path(path)
        self.limit = limit
        self.window = float(window)
        self.block_duration = float(block_duration)
        self._clock = clock
        self._thread_lock = threading.Lock()
        self._file_lock = FileLock(str(self.path) + ".lock", timeout=lock_timeout)

    def __repr__(self) -> str:
        return f"StatusBudget(path={str(self.path)!r}, limit={self.limit}, window={self.window:g})"

    # ------------------------------------------------------------------ file state

    def _load(self, now: float) -> _State:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return _State(reads=[], blocked_until=None, cache={})
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != _VERSION:
                raise ValueError("unknown budget file format")
            reads = [float(t) for t in data.get("reads", [])]
            blocked = data.get("blocked_until")
            blocked_until = None if blocked is None else float(blocked)
            cache = data.get("cache", {})
            if not isinstance(cache, dict):
                raise ValueError("bad cache")
        except (ValueError, TypeError):
            # Unknown history: assume the worst (spent now) rather than risk a 12 h block.
            log.warning(
                "status budget file %s is unreadable; treating the budget as spent", self.path
            )
            return _State(reads=[now] * self.limit, blocked_until=None, cache={})
        return _State(reads=reads, blocked_until=blocked_until, cache=cache)

    def _save(self, state: _State) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(
            {
                "version": _VERSION,
                "reads": state.reads,
                "blocked_until": state.blocked_until,
                "cache": state.cache,
            },
            separators=(",", ":"),
        )
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _prune(self, state: _State, now: float) -> None:
        state.reads = sorted(t for t in state.reads if now - self.window < t <= now + self.window)
        if state.blocked_until is not None and state.blocked_until <= now:
            state.blocked_until = None

    def _update(self, change: Callable[[_State, float], T]) -> T:
        with self._thread_lock, self._file_lock:
            now = self._clock()
            state = self._load(now)
            self._prune(state, now)
            result = change(state, now)
            self._save(state)
            return result

    def _read(self) -> tuple[_State, float]:
        with self._thread_lock, self._file_lock:
            now = self._clock()
            state = self._load(now)
            self._prune(state, now)
            return state, now

    def _wait(self, state: _State, now: float) -> float:
        if state.blocked_until is not None:
            return max(0.0, state.blocked_until - now)
        if len(state.reads) < self.limit:
            return 0.0
        oldest_relevant = state.reads[len(state.reads) - self.limit]
        return max(0.0, oldest_relevant + self.window - now)

    @staticmethod
    def _cached(state: _State, key: str) -> CachedAnswer | None:
        entry = state.cache.get(key)
        if not isinstance(entry, dict) or "payload" not in entry:
            return None
        try:
            return CachedAnswer(payload=entry["payload"], fetched_at=float(entry["fetched_at"]))
        except (KeyError, TypeError, ValueError):
            return None

    # ------------------------------------------------------------------ public API

    def reserve(self, key: str = "default") -> Reservation:
        """Record a read now if the budget allows it; otherwise report what to serve."""

        def change(state: _State, now: float) -> Reservation:
            cached = self._cached(state, key)
            if state.blocked_until is None and len(state.reads) < self.limit:
                state.reads.append(now)
                return Reservation(True, now, 0.0, False, cached)
            blocked = state.blocked_until is not None
            return Reservation(False, now, self._wait(state, now), blocked, cached)

        return self._update(change)

    def release(self, reservation: Reservation) -> None:
        """Refund a granted read that certainly never left (NotSentError)."""
        if not reservation.granted:
            return

        def change(state: _State, now: float) -> None:
            if reservation.at in state.reads:
                state.reads.remove(reservation.at)

        self._update(change)

    def store(self, key: str, payload: Any) -> None:
        """Remember the last good answer (JSON-serialisable) for ``key``."""

        def change(state: _State, now: float) -> None:
            state.cache[key] = {"fetched_at": now, "payload": payload}

        self._update(change)

    def block(self, retry_after: float | None = None) -> float:
        """Remember a server-side block for ``retry_after`` s (default ``block_duration``).

        Returns the absolute end of the block.
        """

        def change(state: _State, now: float) -> float:
            duration = self.block_duration if retry_after is None else max(0.0, retry_after)
            until = now + duration
            if state.blocked_until is not None:
                until = max(until, state.blocked_until)
            state.blocked_until = until
            return until

        return self._update(change)

    def cached(self, key: str = "default") -> CachedAnswer | None:
        """The stored answer for ``key``, if any."""
        state, _ = self._read()
        return self._cached(state, key)

    def remaining(self) -> int:
        """Reads still available in the current window (0 while blocked)."""
        state, _ = self._read()
        if state.blocked_until is not None:
            return 0
        return max(0, self.limit - len(state.reads))

    def blocked_until(self) -> float | None:
        """End of a remembered server block (Unix seconds), or None."""
        state, _ = self._read()
        return state.blocked_until

    def retry_after(self) -> float:
        """Seconds until the next read is allowed (0 if one is available now)."""
        state, now = self._read()
        return self._wait(state, now)


def budgeted_read(
    budget: StatusBudget | None,
    key: str,
    call: Call,
    interpret: Callable[[httpx.Response], tuple[T, Any]],
    from_cache: Callable[[CachedAnswer], T],
) -> Generator[Call, httpx.Response, T]:
    """The op for one status read through ``budget`` (or straight through when None).

    ``interpret`` checks a response and returns ``(result, payload_to_cache)``;
    ``from_cache`` rebuilds a result from a stored answer.
    """
    if budget is None:
        response = yield call
        return interpret(response)[0]
    reservation = budget.reserve(key)
    if not reservation.granted:
        if reservation.cached is not None:
            return from_cache(reservation.cached)
        if reservation.blocked:
            raise RateLimitedError(
                f"{call.what}: status reads are blocked by LOQED for another "
                f"{reservation.retry_after:.0f} s and nothing is cached",
                status=None,
                retry_after=reservation.retry_after,
            )
        raise StatusBudgetExhaustedError(
            f"{call.what}: status read budget spent ({budget.limit} per {budget.window:g} s) "
            f"and nothing is cached; next read in {reservation.retry_after:.0f} s",
            retry_after=reservation.retry_after,
        )
    try:
        response = yield call
    except NotSentError:
        budget.release(reservation)
        raise
    try:
        result, payload = interpret(response)
    except RateLimitedError as exc:
        budget.block(exc.retry_after)
        cached = budget.cached(key)
        if cached is not None:
            return from_cache(cached)
        raise
    budget.store(key, payload)
    return result
