"""A roomkey service wired to the real Lockme simulator in-process (no tests in this module).

Both directions go through ``httpx.ASGITransport``: the simulator delivers webhooks to our
receiver app, and our worker calls the simulator's API with the real SDK. Time is one manual
``SimClock`` shared by both. Imported by the pipeline, hook, app and reconciliation tests.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send

from roomkey.lockme import MemoryTokenStore, Token
from roomkey.service.app import create_app
from roomkey.service.config import Config, parse_config
from roomkey.service.crypto import SecretBox
from roomkey.service.db.models import DoorAction, DoorActionStatus, LockmeMessage, Reservation
from roomkey.service.messages import MessageSettings
from roomkey.service.runtime import Service
from roomkey.sim.clock import SimClock
from roomkey.sim.lockme import LockmeSimulator

WARSAW = ZoneInfo("Europe/Warsaw")
START = dt.datetime(2027, 2, 1, 8, 0, tzinfo=WARSAW).timestamp()  # Monday 08:00 Warsaw
DAY = "2027-02-01"
HOOK_SECRET = "hook-secret-Xy9-never-log"
CLIENT_SECRET = "client-secret-never-log"
LOCKME_DOMAIN = "http://lockme.test"
ROOMKEY_BASE = "http://roomkey.test"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class LateApp:
    """An ASGI app whose target is set later (the simulator and roomkey point at each other)."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        await self.app(scope, receive, send)


class FailingPaths:
    """ASGI wrapper failing ``method path-prefix`` requests with 503 the next ``count`` times."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.rules: list[list[Any]] = []
        self.failed: list[str] = []

    def fail(self, method: str, prefix: str, count: int) -> None:
        self.rules.append([method.upper(), prefix, count])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for rule in self.rules:
                method, prefix, count = rule
                if count > 0 and scope["method"] == method and scope["path"].startswith(prefix):
                    rule[2] = count - 1
                    self.failed.append(f"{method} {scope['path']}")
                    body = b'{"message": "Service Unavailable", "error": "server_error"}'
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 503,
                            "headers": [(b"content-type", b"application/json")],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)


def config_text(room_a: int, room_b: int, *, shared_room: int | None = None) -> str:
    rooms = f"""
[[rooms]]
id = {room_a}
name = "The Vault"
locks = ["door-a"]

[[rooms]]
id = {room_b}
name = "The Lab"
locks = ["door-b"]
"""
    if shared_room is not None:
        rooms += f"""
[[rooms]]
id = {shared_room}
name = "Annex"
locks = ["door-a"]
"""
    locks = ""
    for lock in ("door-a", "door-b"):
        locks += f"""
[[locks]]
id = "{lock}"
name = "{lock}"
[locks.bridge]
url = "http://{lock}.bridge.test"
key_secret = "{_b64("k" * 32)}"
local_key_id = 1
bridge_key = "{_b64("b" * 32)}"
"""
    return f"""
[service]
lockme_webhook_secret = "{HOOK_SECRET}"
replica_id = "replica-a"
reconcile_days_ahead = 7

[lockme]
client_id = "roomkey"
client_secret = "{CLIENT_SECRET}"
api_domain = "{LOCKME_DOMAIN}"
{locks}
{rooms}
"""


@dataclass
class Stack:
    """The simulator, the service and its receiver app, sharing one manual clock."""

    clock: SimClock
    sim: LockmeSimulator
    service: Service
    app: Any
    lockme_api: FailingPaths
    room_a: int
    room_b: int
    shared_room: int | None
    department: int
    clients: list[httpx.AsyncClient]

    async def deliver(self) -> None:
        """Run the simulator's due timers (webhook deliveries, cart lapses)."""
        await self.clock.run_due()

    async def process(self) -> list[Any]:
        return await self.service.messages.run_until_idle()

    async def settle(self) -> list[Any]:
        await self.deliver()
        return await self.process()

    async def close(self) -> None:
        await self.service.aclose()
        await self.sim.aclose()
        for client in self.clients:
            await client.aclose()

    # -- database views ------------------------------------------------------------------
    async def message(self, message_id: int | str) -> LockmeMessage | None:
        async with self.service.session_factory() as session:
            return await session.get(LockmeMessage, str(message_id))

    async def reservation(self, reservation_id: int) -> Reservation | None:
        async with self.service.session_factory() as session:
            return await session.get(Reservation, reservation_id)

    async def actions(
        self, *, room_id: int | None = None, status: DoorActionStatus | None = None
    ) -> list[DoorAction]:
        async with self.service.session_factory() as session:
            stmt = select(DoorAction).order_by(DoorAction.planned_at, DoorAction.key)
            if room_id is not None:
                stmt = stmt.where(DoorAction.room_id == room_id)
            if status is not None:
                stmt = stmt.where(DoorAction.status == status)
            return list((await session.execute(stmt)).scalars())

    def sim_message(self, message_id: int | str) -> Any:
        return self.sim.message(message_id)


async def make_stack(
    engine: AsyncEngine,
    secret_box: SecretBox,
    tmp_path: Path,
    *,
    shared_room: bool = False,
    instance_id: str = "replica-a",
    settings: MessageSettings | None = None,
    clock: SimClock | None = None,
    sim: LockmeSimulator | None = None,
) -> Stack:
    clock = clock or SimClock(start=START, manual=True)
    late = LateApp()
    clients: list[httpx.AsyncClient] = []
    if sim is None:
        delivery = httpx.AsyncClient(transport=httpx.ASGITransport(app=late), base_url=ROOMKEY_BASE)
        clients.append(delivery)
        sim = LockmeSimulator(clock, delivery_client=delivery)
        sim.add_oauth_client("roomkey", CLIENT_SECRET, "http://127.0.0.1:8080/lockme/callback")
        dept = sim.add_department("Escape Warsaw", f"{ROOMKEY_BASE}/hooks/lockme/{HOOK_SECRET}")
        hours = [f"{h:02d}:00:00" for h in range(9, 23)]
        room_a = sim.add_room(dept.id, "The Vault", hours).id
        room_b = sim.add_room(dept.id, "The Lab", hours).id
        annex = sim.add_room(dept.id, "Annex", hours).id if shared_room else None
        department = dept.id
    else:
        rooms = sorted(sim.rooms)
        room_a, room_b = rooms[0], rooms[1]
        annex = rooms[2] if shared_room else None
        department = min(sim.departments)
    config: Config = parse_config(config_text(room_a, room_b, shared_room=annex), base_dir=tmp_path)
    api = FailingPaths(sim.app)
    lockme_http = httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url=LOCKME_DOMAIN)
    clients.append(lockme_http)
    token = Token.model_validate(sim.issue_token("roomkey"))
    service = Service(
        config,
        clock=clock,
        engine=engine,
        secret_box=secret_box,
        lockme_http=lockme_http,
        lockme_token_store=MemoryTokenStore(token),
        instance_id=instance_id,
        message_settings=settings or MessageSettings(backoff_initial=10, backoff_max=60),
        load_optional_workers=False,
    )
    app = create_app(service, manage_lifecycle=False)
    late.app = app
    await service.sync_inventory()
    return Stack(clock, sim, service, app, api, room_a, room_b, annex, department, clients)


def receiver_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ROOMKEY_BASE)


AsyncFn = Callable[[], Awaitable[None]]
