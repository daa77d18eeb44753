"""Injected faults: latency, 5xx answers, hangs, 429s, token expiry and dropped webhooks.

Request faults are applied by :class:`FaultMiddleware` to every request except ``/_sim`` and
``/health``; each :class:`FaultRule` matches a path prefix and fires with a probability
(seeded, so runs repeat) and optionally only for the next ``count`` matches. A sliding-window
rate limiter (per bearer token, or per client address) can answer 429 as well.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["FaultKind", "FaultMiddleware", "FaultRule", "Faults", "RateLimit"]

FaultKind = Literal["latency", "error", "timeout", "rate_limit", "drop_webhook"]
Sleeper = Callable[[float], Awaitable[None]]


@dataclass
class FaultRule:
    """One fault. ``seconds`` is the added latency or the hang length (bounded by max_hang)."""

    kind: FaultKind
    probability: float = 1.0
    count: int | None = None
    path_prefix: str = "/v2"
    status: int = 503
    seconds: float = 0.0
    retry_after: int = 1
    id: int = 0
    triggered: int = 0

    def to_control(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RateLimit:
    """At most ``limit`` requests per ``window`` simulated seconds per caller."""

    limit: int
    window: float = 60.0
    hits: dict[str, deque[float]] = field(default_factory=dict, repr=False)


class Faults:
    """The active fault rules plus the optional rate limiter."""

    def __init__(self, clock: Callable[[], float], *, seed: int = 0,
                 sleep: Sleeper | None = None, max_hang: float = 60.0) -> None:
        self._clock = clock
        self._rng = random.Random(seed)  # noqa: S311 - reproducible faults, not crypto
        self.sleep: Sleeper = sleep or asyncio.sleep
        self.max_hang = max_hang
        self.rules: list[FaultRule] = []
        self.rate_limit: RateLimit | None = None
        self._next_id = 1

    def add(self, rule: FaultRule) -> FaultRule:
        if not 0.0 <= rule.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        if rule.count is not None and rule.count < 0:
            raise ValueError("count must not be negative")
        if rule.seconds < 0:
            raise ValueError("seconds must not be negative")
        rule.id = self._next_id
        self._next_id += 1
        self.rules.append(rule)
        return rule

    def remove(self, rule_id: int) -> bool:
        before = len(self.rules)
        self.rules = [r for r in self.rules if r.id != rule_id]
        return len(self.rules) != before

    def clear(self) -> None:
        self.rules.clear()
        self.rate_limit = None

    def set_rate_limit(self, limit: int | None, window: float = 60.0) -> None:
        """Enable (or with ``None`` disable) the 429 rate limiter."""
        if limit is None:
            self.rate_limit = None
            return
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        self.rate_limit = RateLimit(limit, window)

    def _fires(self, rule: FaultRule) -> bool:
        if rule.count is not None and rule.count <= 0:
            return False
        if rule.probability < 1.0 and self._rng.random() >= rule.probability:
            return False
        rule.triggered += 1
        if rule.count is not None:
            rule.count -= 1
        return True

    def for_request(self, path: str) -> list[FaultRule]:
        """The request-level rules that fire for this request, in order."""
        return [
            r for r in list(self.rules)
            if r.kind != "drop_webhook" and path.startswith(r.path_prefix) and self._fires(r)
        ]

    def drop_delivery(self) -> bool:
        """Whether the webhook delivery about to happen is dropped."""
        return any(self._fires(r) for r in list(self.rules) if r.kind == "drop_webhook")

    def rate_limited(self, caller: str) -> float | None:
        """Record one request by ``caller``; returns seconds to wait when over the limit."""
        limiter = self.rate_limit
        if limiter is None:
            return None
        now = self._clock()
        hits = limiter.hits.setdefault(caller, deque())
        while hits and hits[0] <= now - limiter.window:
            hits.popleft()
        if len(hits) >= limiter.limit:
            return max(1.0, hits[0] + limiter.window - now)
        hits.append(now)
        return None


async def _send_json(send: Send, status: int, body: dict[str, Any],
                     extra: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(payload)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _caller(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return "tok:" + hashlib.sha256(value).hexdigest()[:16]
    client = scope.get("client")
    return f"addr:{client[0]}" if client else "addr:?"


class FaultMiddleware:
    """ASGI middleware applying :class:`Faults` outside ``/_sim`` and ``/health``."""

    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/_sim") or path == "/health":
            await self.app(scope, receive, send)
            return
        for rule in self.faults.for_request(path):
            if rule.kind == "latency":
                await self.faults.sleep(min(rule.seconds, self.faults.max_hang))
            elif rule.kind == "timeout":
                await self.faults.sleep(min(rule.seconds or self.faults.max_hang,
                                            self.faults.max_hang))
                await _send_json(send, 504, {"message": "Gateway Timeout",
                                             "error": "timeout"})
                return
            elif rule.kind == "error":
                await _send_json(send, rule.status, {"message": "Internal Server Error",
                                                     "error": "server_error"})
                return
            elif rule.kind == "rate_limit":
                await _send_json(send, 429, {"message": "Too Many Requests",
                                             "error": "rate_limited"},
                                 [(b"retry-after", str(rule.retry_after).encode())])
                return
        wait = self.faults.rate_limited(_caller(scope))
        if wait is not None:
            await _send_json(send, 429, {"message": "Too Many Requests", "error": "rate_limited"},
                             [(b"retry-after", str(int(wait + 0.999)).encode())])
            return
        await self.app(scope, receive, send)
