"""The whole system on loopback for end-to-end tests (helpers only, no tests here).

Both simulators and every roomkey replica run as real uvicorn servers on free 127.0.0.1
ports inside the test's event loop. Lockme delivers webhooks to roomkey over HTTP, roomkey
calls Lockme and the LOQED bridges over HTTP, bridges deliver signed webhooks over HTTP. One
manual :class:`SimClock` is shared by everything: the test moves time with
:meth:`Venue.advance`; nothing sleeps on simulated time. Waiting for the real network to
settle is bounded (:func:`eventually`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from roomkey.lockme import Token
from roomkey.service.app import create_app
from roomkey.service.config import Config, parse_config
from roomkey.service.crypto import SecretBox
from roomkey.service.db.engine import create_session_factory
from roomkey.service.db.models import (
    Command,
    CommandState,
    DoorAction,
    DoorActionKind,
    DoorActionStatus,
    LockEvent,
    LockmeMessage,
    MessageState,
)
from roomkey.service.demo import LoopbackServer, SimLockSpec, add_sim_lock, config_toml
from roomkey.service.lockme_gateway import token_store
from roomkey.service.messages import MessageSettings
from roomkey.service.runtime import Service
from roomkey.sim.clock import SimClock
from roomkey.sim.lockme import LockmeSimulator
from roomkey.sim.loqed import LoqedSimulator, ReceivedCommand, SimConfig, Verdict

WARSAW = ZoneInfo("Europe/Warsaw")
START = dt.datetime(2027, 3, 1, 8, 0, tzinfo=WARSAW).timestamp()  # Monday 08:00 Warsaw
DAY = "2027-03-01"
CLIENT_ID = "roomkey"
CLIENT_SECRET = "e2e-client-secret-never-printed"
HOOK_SECRET = "e2e-hook-secret-never-printed"
LEAD = dt.timedelta(minutes=10)
LAG = dt.timedelta(minutes=15)
SETTLE_SECONDS = 15.0
"""Real seconds a bounded wait may take before the test fails (loaded 2-core machine)."""

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, within: float = SETTLE_SECONDS, what: str = ""
) -> T:
    """Poll ``check`` (real time, the network settling) until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


def local(day: str, hour: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{hour}").replace(tzinfo=WARSAW)


@dataclass
class Node:
    """One roomkey replica: a Service served by uvicorn (lifespan starts its workers)."""

    service: Service
    server: LoopbackServer
    engine: AsyncEngine

    @property
    def url(self) -> str:
        return self.server.url

    async def stop(self) -> None:
        await self.server.stop()
        await self.service.aclose()


@dataclass
class Venue:
    """Both simulators on loopback, two rooms with one lock each, and the shared clock."""

    clock: SimClock
    lockme: LockmeSimulator
    loqed: LoqedSimulator
    lockme_server: LoopbackServer
    loqed_server: LoopbackServer
    department: int
    room_a: int
    room_b: int
    lock_a: SimLockSpec
    lock_b: SimLockSpec
    token: Token
    nodes: list[Node] = field(default_factory=list)

    # -- configuration --------------------------------------------------------------------
    def config(self, db_url: str, tmp_path: Path, *, replica: str) -> Config:
        text = config_toml(
            lockme_url=self.lockme_server.url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            rooms=[
                (self.room_a, "The Vault", [self.lock_a.roomkey_id]),
                (self.room_b, "The Lab", [self.lock_b.roomkey_id]),
            ],
            locks=[self.lock_a, self.lock_b],
            data_dir=str(tmp_path / replica),
            database_url=db_url,
            webhook_secret=HOOK_SECRET,
            service={"replica_id": replica, "reconcile_days_ahead": 3},
            policy={
                "unlock_lead_minutes": 10,
                "lock_lag_minutes": 15,
                "merge_gap_minutes": 30,
                "max_lateness_minutes": 15,
            },
        )
        return parse_config(text, base_dir=tmp_path)

    async def start_node(
        self,
        db_url: str,
        engine: AsyncEngine,
        box: SecretBox,
        tmp_path: Path,
        *,
        replica: str = "replica-a",
        port: int = 0,
        lockme_webhooks: bool = True,
    ) -> Node:
        """Start a replica; point Lockme's webhook (if asked) and both bridges' at it."""
        config = self.config(db_url, tmp_path, replica=replica)
        self.log_in(config, box, db_url)
        service = Service(
            config,
            clock=self.clock,
            engine=engine,
            secret_box=box,
            instance_id=replica,
            message_settings=MessageSettings(backoff_initial=10, backoff_max=60),
        )
        server = LoopbackServer(create_app(service), port=port, lifespan="on")
        await server.start()
        node = Node(service, server, engine)
        self.nodes.append(node)
        if lockme_webhooks:
            self.lockme.configure_department(
                self.department, webhook_url=f"{node.url}/hooks/lockme/{HOOK_SECRET}"
            )
        for spec in (self.lock_a, self.lock_b):
            url = f"{node.url}/hooks/loqed/bridge/{spec.roomkey_id}"
            bridge = self.loqed.bridge(spec.bridge_id)
            if all(h.url != url for h in bridge.webhooks):
                self.loqed.add_bridge_webhook(spec.bridge_id, url)
        await eventually(lambda: _ready(node), what="roomkey /ready")
        # Let the start-up reconciliation finish: a booking made while it runs would race it
        # (with the clock standing still, "updated after the run began" cannot be told apart).
        await eventually(lambda: _reconciled(node), what="start-up reconciliation")
        await self.settle()
        return node

    def log_in(self, config: Config, box: SecretBox, db_url: str) -> None:
        """Put the venue's token in the database, as ``roomkey lockme login --config`` does,
        unless a replica already did. Every replica reads that one token (Lockme rotates
        refresh tokens: replicas with copies of their own would revoke each other's)."""
        store = token_store(config, box, db_url)
        try:
            if store.load() is None:
                store.save(self.token)
        finally:
            close = getattr(store, "close", None)
            if callable(close):
                close()

    async def stop_node(self, node: Node) -> None:
        await node.stop()
        self.nodes.remove(node)

    async def close(self) -> None:
        for node in list(self.nodes):
            await self.stop_node(node)
        await self.lockme_server.stop()
        await self.loqed_server.stop()
        await self.loqed.aclose()
        await self.lockme.aclose()

    # -- driving ------------------------------------------------------------------------
    def _sleeping_workers(self) -> int:
        """Workers idle in a clock sleep (their supervisor registered a SimClock timer)."""
        return sum(
            1
            for t in list(self.clock._timers)
            if not t.cancelled
            and getattr(t.callback, "__qualname__", "").startswith("SimClock.sleep")
        )

    async def _quiet(self) -> bool:
        expected = sum(len(n.service.supervisor.workers) for n in self.nodes)
        if self._sleeping_workers() < expected:
            return False
        for node in self.nodes:
            found = await commands(node.engine)
            if any(c.state is CommandState.SENDING for c in found):
                return False
        return True

    async def settle(self) -> None:
        """Wait (real time, bounded) until every worker of every replica is idle again, so
        the next time step never lands in the middle of a pass."""
        stable = 0

        async def quiet_for_a_while() -> bool:
            nonlocal stable
            stable = stable + 1 if await self._quiet() else 0
            return stable >= 4

        await eventually(quiet_for_a_while, what="workers idle")

    async def advance(self, seconds: float) -> None:
        """Move simulated time (timers due on the way run, webhooks are delivered), with the
        system idle before and after."""
        await self.settle()
        await self.clock.advance(seconds)
        await self.settle()

    async def advance_to(self, moment: dt.datetime) -> None:
        delta = moment.timestamp() - self.clock.time()
        assert delta >= 0, f"cannot go back to {moment}"
        await self.advance(delta)

    async def pass_(self, moment: dt.datetime, extra: float = 0.01) -> None:
        """Advance to just past ``moment`` (the executor wakes a hair after a due time)."""
        await self.advance_to(moment)
        await self.advance(extra)

    async def deliver(self) -> None:
        """Run what is due now (the simulator's webhook deliveries, cart lapses)."""
        await self.clock.run_due()

    # -- observing the locks ---------------------------------------------------------------
    def received(self, spec: SimLockSpec) -> list[ReceivedCommand]:
        return [r for r in self.loqed.received(spec.loqed_id) if r.verdict is Verdict.ACCEPTED]


async def _reconciled(node: Node) -> bool:
    return all(s.passes > 0 for s in node.service.supervisor.status() if s.name == "reconcile")


async def _ready(node: Node) -> bool:
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            response = await client.get(f"{node.url}/ready")
        except httpx.HTTPError:
            return False
    return response.status_code == 200


async def make_venue() -> Venue:
    clock = SimClock(start=START, manual=True)
    lockme = LockmeSimulator(clock)
    lockme.add_oauth_client(CLIENT_ID, CLIENT_SECRET, "http://127.0.0.1:8080/lockme/callback")
    dept = lockme.add_department("Escape Warsaw", None)
    hours = [f"{h:02d}:00:00" for h in range(9, 23)]
    room_a = lockme.add_room(dept.id, "The Vault", hours).id
    room_b = lockme.add_room(dept.id, "The Lab", hours).id
    loqed = LoqedSimulator(clock, config=SimConfig(seed=7))
    loqed.socket_mode = True
    lockme_server = LoopbackServer(lockme.app)
    await lockme_server.start()
    loqed_server = LoopbackServer(loqed.app)
    await loqed_server.start()
    lock_a = add_sim_lock(
        loqed, roomkey_id="door-a", name="Vault door", bridge_id="b1", loqed_url=loqed_server.url
    )
    lock_b = add_sim_lock(
        loqed, roomkey_id="door-b", name="Lab door", bridge_id="b2", loqed_url=loqed_server.url
    )
    token = Token.model_validate(lockme.issue_token(CLIENT_ID))
    return Venue(
        clock, lockme, loqed, lockme_server, loqed_server, dept.id, room_a, room_b, lock_a,
        lock_b, token,
    )


# --------------------------------------------------------------------------- DB views


async def messages(engine: AsyncEngine) -> list[LockmeMessage]:
    async with create_session_factory(engine)() as session:
        return list((await session.execute(select(LockmeMessage))).scalars())


async def actions(
    engine: AsyncEngine, *, room: int | None = None, status: DoorActionStatus | None = None
) -> list[DoorAction]:
    async with create_session_factory(engine)() as session:
        stmt = select(DoorAction).order_by(DoorAction.planned_at, DoorAction.key)
        if room is not None:
            stmt = stmt.where(DoorAction.room_id == room)
        if status is not None:
            stmt = stmt.where(DoorAction.status == status)
        return list((await session.execute(stmt)).scalars())


async def commands(engine: AsyncEngine, *, lock: str | None = None) -> list[Command]:
    async with create_session_factory(engine)() as session:
        stmt = select(Command).order_by(Command.created_at, Command.id)
        if lock is not None:
            stmt = stmt.where(Command.lock_id == lock)
        return list((await session.execute(stmt)).scalars())


async def events(engine: AsyncEngine, *, lock: str | None = None) -> list[LockEvent]:
    async with create_session_factory(engine)() as session:
        stmt = select(LockEvent).order_by(LockEvent.id)
        if lock is not None:
            stmt = stmt.where(LockEvent.lock_id == lock)
        return list((await session.execute(stmt)).scalars())


async def all_acked(engine: AsyncEngine, count: int) -> bool:
    found = await messages(engine)
    return len(found) >= count and all(m.state is MessageState.ACKED for m in found)


def planned(found: list[DoorAction]) -> list[tuple[DoorActionKind, dt.datetime, str]]:
    """(kind, planned time, lock) of the live plan, in order."""
    return [
        (a.kind, a.planned_at.astimezone(dt.UTC), a.lock_id)
        for a in found
        if a.status in (DoorActionStatus.PLANNED, DoorActionStatus.DONE)
    ]


async def confirmed_command(engine: AsyncEngine, lock: str, count: int) -> list[Command] | None:
    found = [c for c in await commands(engine, lock=lock) if c.state is CommandState.CONFIRMED]
    return found if len(found) >= count else None


def as_utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC)


AnyDict = dict[str, Any]
