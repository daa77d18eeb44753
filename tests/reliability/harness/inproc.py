"""The whole pipeline in one process on one manual clock, for the fault suite.

Lockme simulator → roomkey's webhook receiver → message worker → planner → executor → LOQED
simulator → signed bridge webhooks → roomkey, every hop over ``httpx.ASGITransport`` with the
real apps; one :class:`SimClock` in manual mode moves time, and :meth:`Venue.run` drives the
service's own worker passes (message worker, executor) at each step, so every fault has one
deterministic outcome to assert.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select
from starlette.types import ASGIApp, Receive, Scope, Send

from roomkey.lockme import MemoryTokenStore, Token
from roomkey.service.app import create_app
from roomkey.service.config import parse_config
from roomkey.service.crypto import SecretBox, generate_key
from roomkey.service.db.engine import create_engine
from roomkey.service.db.migrate import upgrade_async
from roomkey.service.db.models import (
    Alert,
    Command,
    CommandAttempt,
    DoorAction,
    LockEvent,
    LockmeMessage,
    Reservation,
)
from roomkey.service.executor import Executor, context_for
from roomkey.service.messages import MessageSettings
from roomkey.service.runtime import Service
from roomkey.sim.clock import SimClock
from roomkey.sim.lockme import LockmeSimulator
from roomkey.sim.loqed import LoqedSimulator, SimConfig, Verdict

WARSAW = ZoneInfo("Europe/Warsaw")
T0 = dt.datetime(2027, 3, 1, 9, 40, tzinfo=WARSAW).timestamp()  # Monday 09:40 Warsaw
DAY = "2027-03-01"
LOCK = "door-1"
BRIDGE = "b1"
LOCKME = "http://lockme.sim"
LOQED = "http://loqed.sim"
ROOMKEY = "http://roomkey.test"
CLIENT_SECRET = "fault-suite-client-secret"
HOOK_SECRET = "fault-suite-hook-secret"
CLOUD_HOOK_SECRET = "fault-suite-cloud-hook-secret"


class LateApp:
    """An ASGI app whose target is set later (the simulators and roomkey call each other)."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None
        self.down = False
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.down and scope["type"] == "http":
            self.refused += 1
            raise httpx.ConnectError("roomkey is down (simulated outage)")
        assert self.app is not None
        await self.app(scope, receive, send)


@dataclass
class Venue:
    clock: SimClock
    lockme: LockmeSimulator
    loqed: LoqedSimulator
    service: Service
    executor: Executor
    receiver: LateApp
    room: int
    loqed_id: str
    key_local_id: int
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    # -- driving ------------------------------------------------------------------------
    async def run(self, seconds: float = 0.0, *, step: float = 1.0) -> None:
        """Move time on by ``seconds`` in steps; at each step run what is due, then one
        pass of the message worker and of the executor (as their supervisor would)."""
        remaining = seconds
        while True:
            await self.clock.run_due()
            await self.service.messages.run_until_idle()
            await self.executor.run_once()
            await self.clock.run_due()
            if remaining <= 0:
                return
            hop = min(step, remaining)
            await self.clock.advance(hop)
            remaining -= hop

    async def run_until(self, moment: dt.datetime) -> None:
        """Jump (in 5-minute hops) to one second before ``moment``, then step to it."""
        gap = moment.timestamp() - self.clock.time()
        if gap > 1.0:
            await self.run(gap - 1.0, step=300.0)
        await self.run(max(0.0, moment.timestamp() - self.clock.time()), step=1.0)

    def book(self, hour: str, **fields: Any) -> int:
        fields.setdefault("source", "panel")
        fields.setdefault("status", 1)
        return self.lockme.book(self.room, DAY, hour, **fields)

    @staticmethod
    def at(hour: str) -> dt.datetime:
        return dt.datetime.fromisoformat(f"{DAY}T{hour}").replace(tzinfo=WARSAW)

    # -- observing ------------------------------------------------------------------------
    def received(self, *, accepted_only: bool = True) -> list[Any]:
        found = self.loqed.received(self.loqed_id)
        return [r for r in found if r.verdict is Verdict.ACCEPTED] if accepted_only else found

    async def rows(self, model: type[Any], *where: Any) -> list[Any]:
        async with self.service.session_factory() as session:
            return list((await session.execute(select(model).where(*where))).scalars())

    async def commands(self) -> list[Command]:
        return sorted(await self.rows(Command), key=lambda c: (c.created_at, c.id))

    async def attempts(self, command_id: str) -> list[CommandAttempt]:
        found = await self.rows(CommandAttempt, CommandAttempt.command_id == command_id)
        return sorted(found, key=lambda a: a.id)

    async def alerts(self) -> list[Alert]:
        return await self.rows(Alert)

    async def alert_kinds(self) -> set[str]:
        return {a.kind for a in await self.alerts()}

    async def messages(self) -> list[LockmeMessage]:
        return await self.rows(LockmeMessage)

    async def reservations(self) -> list[Reservation]:
        return await self.rows(Reservation)

    async def door_actions(self) -> list[DoorAction]:
        return sorted(await self.rows(DoorAction), key=lambda a: a.planned_at)

    async def events(self) -> list[LockEvent]:
        return await self.rows(LockEvent)

    def http(self, app: Any, base: str) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)
        self.clients.append(client)
        return client

    def roomkey_client(self) -> httpx.AsyncClient:
        """A client of roomkey's app; an unhandled exception answers 500, as a server would."""
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.receiver, raise_app_exceptions=False),
            base_url=ROOMKEY,
        )
        self.clients.append(client)
        return client

    async def close(self) -> None:
        await self.executor.aclose()
        await self.loqed.aclose()
        await self.lockme.aclose()
        await self.service.aclose()
        for client in self.clients:
            await client.aclose()


@contextlib.contextmanager
def _plain_http_cookies() -> Iterator[None]:
    """The in-process clients talk plain HTTP: the dashboard's session cookie must not be
    ``Secure`` for them (set only while the app reads its settings)."""
    name = "ROOMKEY_WEB_COOKIE_SECURE"
    before = os.environ.get(name)
    os.environ[name] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


_TEMPLATE: Path | None = None


async def _migrated_copy(path: Path) -> None:
    """A migrated SQLite file (migrations run once per test session, then copied)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        template = Path(tempfile.mkdtemp(prefix="roomkey-faults-")) / "template.sqlite3"
        await upgrade_async(f"sqlite+aiosqlite:///{template}")
        _TEMPLATE = template
    _copy(_TEMPLATE, path)


def _copy(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)


def _config(
    *, key_secret: str, bridge_key: str, loqed_id: str, cloud_token: str | None,
    transports: Sequence[str], extra_loqed: str, room: int, data_dir: Path, db_url: str,
) -> str:
    order = ", ".join(f'"{t}"' for t in transports)
    lock = f"""
[[locks]]
id = "{LOCK}"
name = "Front door"
loqed_id = "{loqed_id}"
"""
    if "bridge" in transports:
        lock += f"""
[locks.bridge]
url = "{LOQED}/bridges/{BRIDGE}"
key_secret = "{key_secret}"
local_key_id = 1
bridge_key = "{bridge_key}"
"""
    if cloud_token is not None:
        lock += f"""
[locks.cloud]
token = "{cloud_token}"
lock_id = "{loqed_id}"
base_url = "{LOQED}"
"""
    return f"""
[service]
data_dir = "{data_dir}"
database_url = "{db_url}"
lockme_webhook_secret = "{HOOK_SECRET}"
loqed_webhook_secret = "{CLOUD_HOOK_SECRET}"
replica_id = "fault-suite"
reconcile_days_ahead = 2

[lockme]
client_id = "roomkey"
client_secret = "{CLIENT_SECRET}"
api_domain = "{LOCKME}"

[loqed]
transport_order = [{order}]
{extra_loqed}

[defaults.policy]
unlock_lead_minutes = 10
lock_lag_minutes = 15
max_lateness_minutes = 15
{lock}
[[rooms]]
id = {room}
name = "The Vault"
locks = ["{LOCK}"]
"""


async def make_venue(
    tmp: Path,
    *,
    transports: Sequence[str] = ("bridge",),
    extra_loqed: str = "",
    gateway: str = "legacy",
    sim_config: SimConfig | None = None,
    redelivery: Sequence[float] | None = None,
    web: bool = False,
) -> Venue:
    clock = SimClock(start=T0, manual=True)
    receiver = LateApp()
    to_roomkey = httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver), base_url=ROOMKEY)
    extra: dict[str, Any] = {}
    if redelivery is not None:
        extra["redelivery_schedule"] = tuple(redelivery)
    lockme = LockmeSimulator(clock, delivery_client=to_roomkey, **extra)
    lockme.add_oauth_client("roomkey", CLIENT_SECRET, "http://127.0.0.1:8080/lockme/callback")
    dept = lockme.add_department("Escape Warsaw", f"{ROOMKEY}/hooks/lockme/{HOOK_SECRET}")
    room = lockme.add_room(dept.id, "The Vault", [f"{h:02d}:00:00" for h in range(9, 23)]).id
    loqed = LoqedSimulator(
        clock, delivery_client=to_roomkey, config=sim_config or SimConfig(seed=3)
    )
    bridge = loqed.add_bridge(BRIDGE, gateway=gateway)  # type: ignore[arg-type]
    lock = loqed.add_lock(BRIDGE, name="Front door", bolt_state="night_lock")
    key = loqed.add_key(lock.lock_id, local_id=1, name="roomkey")
    loqed.add_bridge_webhook(BRIDGE, f"{ROOMKEY}/hooks/loqed/bridge/{LOCK}")
    cloud_token = loqed.add_api_token([lock.lock_id]).token if "cloud" in transports else None
    db_url = f"sqlite+aiosqlite:///{tmp / 'roomkey.sqlite3'}"
    await _migrated_copy(tmp / "roomkey.sqlite3")
    config = parse_config(
        _config(
            key_secret=key.secret, bridge_key=bridge.bridge_key, loqed_id=lock.lock_id,
            cloud_token=cloud_token, transports=transports, extra_loqed=extra_loqed,
            room=room, data_dir=tmp, db_url=db_url,
        ),
        base_dir=tmp,
    )
    lockme_http = httpx.AsyncClient(transport=httpx.ASGITransport(app=lockme.app),
                                    base_url=LOCKME)
    loqed_http = httpx.AsyncClient(transport=httpx.ASGITransport(app=loqed.app), base_url=LOQED)
    service = Service(
        config,
        clock=clock,
        engine=create_engine(db_url),
        secret_box=SecretBox([generate_key()]),
        lockme_http=lockme_http,
        lockme_token_store=MemoryTokenStore(Token.model_validate(lockme.issue_token("roomkey"))),
        loqed_http=loqed_http,
        message_settings=MessageSettings(backoff_initial=10, backoff_max=120),
        load_optional_workers=False,
    )
    service._owns_engine = True  # dispose it on close
    with _plain_http_cookies():
        app = create_app(service, manage_lifecycle=False)
    if web and getattr(app.state, "web", None) is None:  # older create_app without the web
        from roomkey.web import WebSettings, install

        install(app, service, WebSettings(cookie_secure=False), webhook_worker=False)
    receiver.app = app
    await service.sync_inventory()
    executor = Executor(context_for(service))
    venue = Venue(clock, lockme, loqed, service, executor, receiver, room, lock.lock_id,
                  key.local_id, [to_roomkey, lockme_http, loqed_http])
    return venue


# --------------------------------------------------------------------------- dashboard helpers

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]*)"')


async def make_users(venue: Venue) -> dict[str, str]:
    """An admin and a read-only user with random passwords; returns ``{name: password}``."""
    from roomkey.web import create_demo_credentials

    creds = await create_demo_credentials(venue.service)
    return {c.username: c.password for c in creds}


async def api_token(venue: Venue, username: str) -> str:
    from roomkey.web.users import create_token

    async with venue.service.session_factory() as session, session.begin():
        _row, token = await create_token(session, username, "suite", now=venue.clock.now())
    return token


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    """Log in through the form as a browser does (login CSRF cookie + hidden field)."""
    page = await client.get("/login")
    match = CSRF_RE.search(page.text)
    assert match, "no CSRF field on the login page"
    return await client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": match.group(1),
              "next": "/"},
    )


async def session_csrf(client: httpx.AsyncClient, path: str = "/alerts") -> str:
    """The CSRF token of the logged-in session (from any page's forms)."""
    page = await client.get(path)
    match = CSRF_RE.search(page.text)
    assert match, f"no CSRF token on {path}: {page.status_code}"
    return match.group(1)
