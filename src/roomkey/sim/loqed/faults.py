"""HTTP-level faults: latency, error statuses, dropped and refused connections.

Faults wrap the whole app as raw ASGI middleware. In-process (``httpx.ASGITransport``) a
dropped connection surfaces as ``httpx.RemoteProtocolError`` and a refused one as
``httpx.ConnectError``, exactly what a real socket would give the client. On a loopback
server both close the socket after the status line (an ASGI app cannot refuse a TCP
connection), so the client sees an incomplete response.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx

if TYPE_CHECKING:
    from roomkey.sim.loqed.simulator import LoqedSimulator

__all__ = ["FAULT_KINDS", "FaultMiddleware", "FaultRule", "FaultSet"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FaultKind = Literal["latency", "status", "drop_before", "drop_after", "refuse"]
FAULT_KINDS: tuple[str, ...] = ("latency", "status", "drop_before", "drop_after", "refuse")
_BRIDGE_LEAVES = ("/status", "/to_lock", "/webhooks")


class DroppedConnection(Exception):
    """Raised inside a loopback server to make it close the socket mid-response."""


@dataclass(slots=True)
class FaultRule:
    """Apply ``kind`` to requests whose (normalised) path starts with ``path``.

    ``count`` = how many requests it still hits (None: until removed). ``seconds`` is real
    time (network latency); ``status`` the HTTP status for ``kind="status"``.
    """

    id: int
    path: str
    kind: FaultKind
    count: int | None = None
    seconds: float = 0.0
    status: int = 503
    method: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "path": self.path, "kind": self.kind, "count": self.count,
            "seconds": self.seconds, "status": self.status, "method": self.method,
        }


class FaultSet:
    """The active fault rules, first match wins."""

    def __init__(self) -> None:
        self.rules: list[FaultRule] = []
        self._ids = itertools.count(1)

    def add(
        self, path: str, kind: FaultKind, *, count: int | None = None, seconds: float = 0.0,
        status: int = 503, method: str | None = None,
    ) -> FaultRule:
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}")
        if not path.startswith("/"):
            raise ValueError("path must start with /")
        if not 100 <= status <= 599:
            raise ValueError("status must be 100..599")
        if seconds < 0 or seconds > 600:
            raise ValueError("seconds must be 0..600")
        rule = FaultRule(next(self._ids), path, kind, count, seconds, status,
                         method.upper() if method else None)
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    def take(self, paths: tuple[str, ...], method: str) -> FaultRule | None:
        """The first rule matching any of ``paths`` (raw and normalised); counts it down."""
        for rule in self.rules:
            if rule.method is not None and rule.method != method:
                continue
            if not any(p.startswith(rule.path) for p in paths):
                continue
            if rule.count is not None:
                rule.count -= 1
                if rule.count <= 0:
                    self.rules.remove(rule)
            return rule
        return None


class FaultMiddleware:
    """Outermost ASGI layer: applies fault rules and the bridge "internet down" refusal."""

    def __init__(self, app: ASGIApp, sim: LoqedSimulator) -> None:
        self.app = app
        self.sim = sim
        self.faults = FaultSet()

    def normalise(self, path: str) -> str:
        """Root bridge paths (``/status``...) are the first bridge's."""
        first = self.sim.first_bridge()
        if first is not None and any(
            path == leaf or path.startswith(leaf + "/") for leaf in _BRIDGE_LEAVES
        ):
            return f"/bridges/{first.bridge_id}{path}"
        return path

    def _refused_bridge(self, path: str) -> bool:
        if not path.startswith("/bridges/"):
            return False
        bridge_id = path.split("/")[2]
        bridge = self.sim.bridges.get(bridge_id)
        return bridge is not None and self.sim.bridge_refuses(bridge)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = str(scope.get("path", ""))
        path = self.normalise(raw_path)
        if self._refused_bridge(path):
            await self._refuse(send)
            return
        rule = self.faults.take((raw_path, path), str(scope.get("method", "GET")).upper())
        if rule is None:
            await self.app(scope, receive, send)
            return
        if rule.kind == "latency":
            await asyncio.sleep(rule.seconds)
            await self.app(scope, receive, send)
        elif rule.kind == "status":
            await _plain(send, rule.status, b"Simulated failure")
        elif rule.kind == "refuse":
            await self._refuse(send)
        elif rule.kind == "drop_before":
            await self._drop(send)
        else:  # drop_after: the request is fully processed, then the answer is lost

            async def swallow(message: Message) -> None:
                return None

            await self.app(scope, receive, swallow)
            await self._drop(send)

    async def _refuse(self, send: Send) -> None:
        if self.sim.socket_mode:
            await self._drop(send)
        raise httpx.ConnectError("connection refused (simulated)")

    async def _drop(self, send: Send) -> None:
        if self.sim.socket_mode:
            await send(
                {"type": "http.response.start", "status": 200,
                 "headers": [(b"content-length", b"64"), (b"content-type", b"text/html")]}
            )
            raise DroppedConnection("connection dropped (simulated)")
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send(
        {"type": "http.response.start", "status": status,
         "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                     (b"content-length", str(len(body)).encode())]}
    )
    await send({"type": "http.response.body", "body": body})
