"""The simulators on loopback, inside the orchestrator's event loop (pinned to the load CPU).

:class:`InFlight` wraps the Lockme simulator's ASGI app and counts API requests in flight *on
the simulator side* — the ground truth for "never more than N concurrent requests toward
Lockme".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

from bench.world import CLIENT_ID, CLIENT_SECRET, Venue
from roomkey.lockme import Token
from roomkey.service.config import load_config
from roomkey.service.crypto import SECRET_KEY_ENV, SecretBox
from roomkey.service.demo import LoopbackServer
from roomkey.service.lockme_gateway import token_store
from roomkey.sim.clock import SimClock
from roomkey.sim.lockme import FaultRule, LockmeSimulator


@dataclass
class InFlight:
    """ASGI middleware: concurrent requests under ``prefix`` now, at most, and when each
    ``POST …/message/{id}`` (mark read) finished."""

    app: ASGIApp
    prefix: str = "/v2"
    now: int = 0
    peak: int = 0
    total: int = 0
    last_request: float = 0.0
    marked_read: dict[str, float] = field(default_factory=dict)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not path.startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        self.now += 1
        self.total += 1
        self.peak = max(self.peak, self.now)
        self.last_request = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= 1
            self.last_request = time.monotonic()
            if scope.get("method") == "POST" and "/message/" in path:
                self.marked_read[path.rsplit("/", 1)[-1]] = time.time()

    def reset(self) -> None:
        self.peak = self.now
        self.total = 0
        self.marked_read.clear()

    async def wait_quiet(self, quiet: float = 1.0, *, within: float = 60.0) -> None:
        """Until no API request ran for ``quiet`` seconds (e.g. start-up reconciliation)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.now == 0 and time.monotonic() - self.last_request >= quiet:
                return
            await asyncio.sleep(0.05)


class LockmeWorld:
    """A Lockme simulator on loopback: OAuth client, one department, ``rooms`` rooms."""

    def __init__(self, rooms: int, *, latency: float = 0.0, seed: int = 7) -> None:
        self.clock = SimClock()  # real time
        self.sim = LockmeSimulator(self.clock, seed=seed)
        self.sim.add_oauth_client(CLIENT_ID, CLIENT_SECRET, "http://127.0.0.1:8080/callback")
        self.department = self.sim.add_department("Bench venue")
        self.room_ids = [
            self.sim.add_room(self.department.id, f"Room {i}").id for i in range(rooms)
        ]
        if latency > 0:
            self.sim.faults.add(FaultRule(kind="latency", seconds=latency, path_prefix="/v2"))
        self.inflight = InFlight(self.sim.app)
        self.server = LoopbackServer(self.inflight)

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> None:
        await self.server.start()
        await self.clock.start()

    def point_webhooks_at(self, url: str) -> None:
        self.sim.configure_department(self.department.id, webhook_url=url)

    def save_token(self, venue: Venue) -> None:
        """Put an access token where the service looks for it (encrypted like roomkey does)."""
        config = load_config(venue.config_path)
        box = SecretBox.from_env({SECRET_KEY_ENV: venue.env[SECRET_KEY_ENV]})
        token_store(config, box).save(Token.model_validate(self.sim.issue_token(CLIENT_ID)))

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.server.stop()
        with contextlib.suppress(Exception):
            await self.sim.aclose()
        with contextlib.suppress(Exception):
            await self.clock.stop()


def venue_rooms(room_ids: list[int], lock_ids: list[str]) -> list[tuple[int, str, list[str]]]:
    return [(rid, f"Room {rid}", [lock_ids[i]]) for i, rid in enumerate(room_ids)]


def read_times(sim: LockmeSimulator, message_ids: set[int]) -> dict[int, float | None]:
    return {m.id: m.read_at for m in sim.messages() if m.id in message_ids}


__all__ = ["InFlight", "LockmeWorld", "read_times", "venue_rooms"]
