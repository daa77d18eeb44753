"""The LOQED side of roomkey wired to the real LOQED simulator in-process (no tests here).

Both directions go through ``httpx.ASGITransport``: our transports call the simulator's
bridge and cloud APIs with the real SDK, and the simulator delivers its bridge (HASH-signed)
and cloud webhooks to roomkey's real app (``create_app``, which mounts ``hooks_loqed``).
One manual ``SimClock`` drives both. Imported by the executor, hooks, alerts and manual tests.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send

from roomkey.loqed.signing import decode_key, webhook_payload_hash
from roomkey.service.app import create_app
from roomkey.service.config import Config, parse_config
from roomkey.service.crypto import SecretBox
from roomkey.service.db.models import (
    Alert,
    AuditEntry,
    Command,
    CommandAttempt,
    DoorAction,
    DoorActionKind,
    Lock,
    LockEvent,
)
from roomkey.service.db.plans import ActionSpec, upsert_door_actions
from roomkey.service.executor import Executor, LoqedContext, context_for
from roomkey.service.loqed_apply import applier_for
from roomkey.service.runtime import Service
from roomkey.sim.clock import SimClock
from roomkey.sim.loqed import LoqedSimulator
from roomkey.sim.loqed.config import LockTimings, SimConfig

T0 = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.UTC).timestamp()
LOQED_ID = "Yq1gK4oeE9KWe0ByxjX2"
LOCK = "door-1"
ROOM = 101
CLOUD_SECRET = "cloud-secret-Zq8-never-log"
SIM_BASE = "http://loqed.sim"
ROOMKEY_BASE = "http://roomkey.test"
BRIDGE_KEY = base64.b64encode(b"B" * 32).decode()
KEY_SECRET = base64.b64encode(b"K" * 32).decode()


class LateApp:
    """An ASGI app whose target is set later (simulator and roomkey point at each other).

    With ``ctx`` set, a LOQED webhook returns only once its event is applied: the receiver
    answers after the durable receipt and applies right after, off the request path; tests
    on a manual clock want the effects in place before time moves on.
    """

    def __init__(self, app: ASGIApp | None = None, ctx: LoqedContext | None = None) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        await self.app(scope, receive, send)
        if self.ctx is not None and str(scope.get("path", "")).startswith("/hooks/loqed/"):
            await applier_for(self.ctx).settle()


def config_text(
    *,
    transports: Sequence[str] = ("bridge", "cloud"),
    cloud_token: str = "",
    app_key: Any = None,
    lateness_minutes: int = 15,
    extra_loqed: str = "",
) -> str:
    lock = f"""
[[locks]]
id = "{LOCK}"
name = "Front door"
loqed_id = "{LOQED_ID}"
"""
    if "bridge" in transports:
        lock += f"""
[locks.bridge]
url = "{SIM_BASE}/bridges/b1"
key_secret = "{KEY_SECRET}"
local_key_id = 1
bridge_key = "{BRIDGE_KEY}"
"""
    if "cloud" in transports:
        lock += f"""
[locks.cloud]
token = "{cloud_token}"
lock_id = "{LOQED_ID}"
base_url = "{SIM_BASE}"
"""
    if "app" in transports and app_key is not None:
        lock += f"""
[locks.app]
api_token = "{app_key.api_token}"
lock_id = "{LOQED_ID}"
key_secret = "{app_key.secret}"
local_key_id = {app_key.local_id}
base_url = "{SIM_BASE}/API"
"""
    order = ", ".join(f'"{t}"' for t in transports)
    return f"""
[service]
loqed_webhook_secret = "{CLOUD_SECRET}"
replica_id = "replica-a"

[lockme]
client_id = "roomkey"
client_secret = "lockme-client-secret"
api_domain = "http://lockme.invalid"

[loqed]
transport_order = [{order}]
{extra_loqed}

[defaults.policy]
max_lateness_minutes = {lateness_minutes}
{lock}
[[rooms]]
id = {ROOM}
name = "The Vault"
locks = ["{LOCK}"]
"""


@dataclass
class World:
    """The LOQED simulator and roomkey's LOQED side, sharing one manual clock."""

    clock: SimClock
    sim: LoqedSimulator
    service: Service
    ctx: LoqedContext
    executor: Executor
    app: Any
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def sim_lock(self) -> Any:
        return self.sim.lock(LOQED_ID)

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock.time(), tz=dt.UTC)

    async def advance(self, seconds: float) -> None:
        """Move time on; the simulator's lock events reach roomkey on the way."""
        await self.clock.advance(seconds)

    async def plan(self, *specs: tuple[DoorActionKind, float], room: int = ROOM) -> list[str]:
        """Store door actions ``(kind, seconds from now)`` as the room's plan; returns keys."""
        now = self.now()
        actions = [
            ActionSpec(
                key=f"{room}:{LOCK}:{kind.value}:{i}",
                room_id=room,
                lock_id=LOCK,
                kind=kind,
                planned_at=now + dt.timedelta(seconds=offset),
                reservation_ids=(),
            )
            for i, (kind, offset) in enumerate(specs)
        ]
        async with self.service.session_factory() as session, session.begin():
            await upsert_door_actions(session, room, actions, now=now)
        return [a.key for a in actions]

    async def rows(self, model: type[Any], *where: Any, order: Any = None) -> list[Any]:
        async with self.service.session_factory() as session:
            stmt = select(model).where(*where)
            if order is not None:
                stmt = stmt.order_by(order)
            return list((await session.execute(stmt)).scalars())

    async def commands(self) -> list[Command]:
        return await self.rows(Command, order=Command.created_at)

    async def attempts(self, command_id: str) -> list[CommandAttempt]:
        return await self.rows(
            CommandAttempt, CommandAttempt.command_id == command_id, order=CommandAttempt.id
        )

    async def events(self) -> list[LockEvent]:
        return await self.rows(LockEvent, order=LockEvent.id)

    async def alerts(self, *, open_only: bool = True) -> list[Alert]:
        where = [Alert.acknowledged_at.is_(None)] if open_only else []
        return await self.rows(Alert, *where, order=Alert.id)

    async def audit(self) -> list[AuditEntry]:
        return await self.rows(AuditEntry, order=AuditEntry.id)

    async def actions(self) -> list[DoorAction]:
        return await self.rows(DoorAction, order=DoorAction.planned_at)

    async def lock_row(self) -> Lock:
        rows = await self.rows(Lock, Lock.id == LOCK)
        return rows[0]

    def bridge_commands(self) -> list[Any]:
        """What the lock received (every command, any surface, with its verdict)."""
        return self.sim.received(LOQED_ID)

    def signed_bridge_post(
        self, payload: dict[str, Any] | bytes, *, timestamp: int | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """A bridge webhook exactly as the bridge signs it."""
        body = (
            payload
            if isinstance(payload, bytes)
            else json.dumps(payload, separators=(",", ":")).encode()
        )
        ts = int(self.clock.time()) if timestamp is None else timestamp
        digest = webhook_payload_hash(decode_key(BRIDGE_KEY), ts, body)
        return body, {"HASH": digest, "TIMESTAMP": str(ts), "Content-Type": "application/json"}

    def receiver(self) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=LateApp(self.app, self.ctx)), base_url=ROOMKEY_BASE
        )
        self.clients.append(client)
        return client

    async def close(self) -> None:
        await self.executor.aclose()
        await self.sim.aclose()
        for client in self.clients:
            await client.aclose()


async def make_world(
    engine: AsyncEngine,
    secret_box: SecretBox,
    tmp_path: Path,
    *,
    transports: Sequence[str] = ("bridge", "cloud"),
    cloud_webhook: bool = False,
    bridge_webhook: bool = True,
    lateness_minutes: int = 15,
    extra_loqed: str = "",
    instance_id: str = "replica-a",
    clock: SimClock | None = None,
    sim: LoqedSimulator | None = None,
    timings: LockTimings | None = None,
    bolt_state: str = "night_lock",
) -> World:
    clock = clock or SimClock(start=T0, manual=True)
    late = LateApp()
    clients: list[httpx.AsyncClient] = []
    if sim is None:
        delivery = httpx.AsyncClient(transport=httpx.ASGITransport(app=late), base_url=ROOMKEY_BASE)
        clients.append(delivery)
        sim = LoqedSimulator(
            clock,
            delivery_client=delivery,
            config=SimConfig(seed=7, timings=timings or LockTimings()),
        )
        sim.add_bridge("b1", bridge_key=BRIDGE_KEY)
        sim.add_lock(
            "b1", lock_id=LOQED_ID, numeric_id=6148, name="Front door", bolt_state=bolt_state
        )
        sim.add_key(LOQED_ID, local_id=1, name="roomkey", secret=KEY_SECRET)
        if bridge_webhook:
            sim.add_bridge_webhook("b1", f"{ROOMKEY_BASE}/hooks/loqed/bridge/{LOCK}")
        token = sim.add_api_token([LOQED_ID]).token
        sim.add_app_api_key(LOQED_ID, name="roomkey app key")
        if cloud_webhook:
            sim.add_cloud_webhook(
                LOQED_ID, f"{ROOMKEY_BASE}/hooks/loqed/cloud/{CLOUD_SECRET}?lock={LOCK}"
            )
    else:
        token = sim.tokens[0].token
    config: Config = parse_config(
        config_text(
            transports=transports,
            cloud_token=token,
            app_key=sim.app_keys[0],
            lateness_minutes=lateness_minutes,
            extra_loqed=extra_loqed,
        ),
        base_dir=tmp_path,
    )
    loqed_http = httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url=SIM_BASE)
    clients.append(loqed_http)
    service = Service(
        config,
        clock=clock,
        engine=engine,
        secret_box=secret_box,
        loqed_http=loqed_http,
        instance_id=instance_id,
        load_optional_workers=False,
    )
    app = create_app(service, manage_lifecycle=False)
    late.app = app
    await service.sync_inventory()
    ctx = context_for(service)
    late.ctx = ctx
    return World(clock, sim, service, ctx, Executor(ctx), app, clients)
