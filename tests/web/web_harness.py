"""roomkey with its dashboard, wired to both simulators (no tests in this module).

The Lockme simulator delivers booking webhooks to roomkey's app and answers its API; the LOQED
simulator executes roomkey's signed commands and reports lock events back. Everything runs
in-process through ``httpx.ASGITransport`` on one manual ``SimClock`` — or, for the browser
tests, the same app is served by a real uvicorn on loopback.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send

from roomkey.lockme import MemoryTokenStore, Token
from roomkey.service.app import create_app
from roomkey.service.config import parse_config
from roomkey.service.crypto import SecretBox
from roomkey.service.runtime import Service
from roomkey.sim.clock import SimClock
from roomkey.sim.lockme import LockmeSimulator
from roomkey.sim.loqed import LoqedSimulator
from roomkey.sim.loqed.config import SimConfig
from roomkey.web import WebSettings, install
from roomkey.web.auth import WebState
from roomkey.web.models import Role
from roomkey.web.users import create_token, create_user

WARSAW = ZoneInfo("Europe/Warsaw")
START = dt.datetime(2027, 2, 1, 8, 0, tzinfo=WARSAW).timestamp()  # Monday 08:00 Warsaw
DAY = "2027-02-01"
HOOK_SECRET = "lockme-hook-secret-never-log"
CLOUD_SECRET = "loqed-cloud-secret-never-log"
CLIENT_SECRET = "lockme-client-secret"
LOCKME_BASE = "http://lockme.test"
LOQED_BASE = "http://loqed.sim"
ROOMKEY_BASE = "http://roomkey.test"
LOQED_ID = "Yq1gK4oeE9KWe0ByxjX2"
LOCK = "door-1"
SPARE_LOCK = "door-2"
SPARE_LOQED_ID = "Zr2hL5pfF0LXf1CzykY3"
BRIDGE_KEY = base64.b64encode(b"B" * 32).decode()
KEY_SECRET = base64.b64encode(b"K" * 32).decode()
ADMIN = ("alice", "alice-password-1")
VIEWER = ("victor", "victor-password-1")


class LateApp:
    """An ASGI app whose target is set later (the simulators and roomkey point at each other)."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        await self.app(scope, receive, send)


def _lock_toml(lock_id: str, loqed_id: str, bridge: str) -> str:
    return f"""
[[locks]]
id = "{lock_id}"
name = "{lock_id.replace("-", " ").title()}"
loqed_id = "{loqed_id}"
[locks.bridge]
url = "{LOQED_BASE}/bridges/{bridge}"
key_secret = "{KEY_SECRET}"
local_key_id = 1
bridge_key = "{BRIDGE_KEY}"
"""


def config_text(room_id: int, *, keep_pii: bool = False) -> str:
    return f"""
[service]
lockme_webhook_secret = "{HOOK_SECRET}"
loqed_webhook_secret = "{CLOUD_SECRET}"
replica_id = "web-a"
reconcile_days_ahead = 2

[lockme]
client_id = "roomkey"
client_secret = "{CLIENT_SECRET}"
api_domain = "{LOCKME_BASE}"

[loqed]
transport_order = ["bridge"]
keep_event_pii = {"true" if keep_pii else "false"}
{_lock_toml(LOCK, LOQED_ID, "b1")}
{_lock_toml(SPARE_LOCK, SPARE_LOQED_ID, "b2")}
[[rooms]]
id = {room_id}
name = "The Vault"
locks = ["{LOCK}"]
"""


@dataclass
class WebStack:
    clock: SimClock
    lockme: LockmeSimulator
    loqed: LoqedSimulator
    service: Service
    app: Any
    web: WebState
    room_id: int
    tokens: dict[str, str] = field(default_factory=dict)
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, *, token: str | None = None, base_url: str = "https://testserver"):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url=base_url, headers=headers
        )
        self.clients.append(client)
        return client

    async def login(self, client: httpx.AsyncClient, who: tuple[str, str]) -> httpx.Response:
        page = await client.get("/login")
        token = login_csrf(page.text)
        return await client.post(
            "/login",
            data={"username": who[0], "password": who[1], "csrf_token": token, "next": "/"},
        )

    async def settle(self) -> None:
        """Run due simulator timers and let roomkey's message worker process its backlog."""
        await self.clock.run_due()
        await self.service.messages.run_until_idle()

    async def close(self) -> None:
        await self.service.aclose()
        await self.lockme.aclose()
        await self.loqed.aclose()
        for client in self.clients:
            await client.aclose()


def login_csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]*)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def page_csrf(html: str) -> str:
    return login_csrf(html)


async def make_stack(
    engine: AsyncEngine,
    secret_box: SecretBox,
    tmp_path: Path,
    *,
    settings: WebSettings | None = None,
    clock: SimClock | None = None,
    keep_pii: bool = False,
    load_workers: bool = False,
    webhook_client: httpx.AsyncClient | None = None,
    webhook_worker: bool = False,
) -> WebStack:
    clock = clock or SimClock(start=START, manual=True)
    late = LateApp()
    clients: list[httpx.AsyncClient] = []

    lockme_delivery = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=late), base_url=ROOMKEY_BASE
    )
    clients.append(lockme_delivery)
    lockme = LockmeSimulator(clock, delivery_client=lockme_delivery)
    lockme.add_oauth_client("roomkey", CLIENT_SECRET, "http://127.0.0.1:8080/lockme/callback")
    dept = lockme.add_department("Escape Warsaw", f"{ROOMKEY_BASE}/hooks/lockme/{HOOK_SECRET}")
    hours = [f"{h:02d}:00:00" for h in range(9, 23)]
    room_id = lockme.add_room(dept.id, "The Vault", hours).id

    loqed_delivery = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=late), base_url=ROOMKEY_BASE
    )
    clients.append(loqed_delivery)
    loqed = LoqedSimulator(clock, delivery_client=loqed_delivery, config=SimConfig(seed=7))
    for bridge, lock_id, loqed_id, numeric in (
        ("b1", LOCK, LOQED_ID, 6148),
        ("b2", SPARE_LOCK, SPARE_LOQED_ID, 6149),
    ):
        loqed.add_bridge(bridge, bridge_key=BRIDGE_KEY)
        loqed.add_lock(
            bridge, lock_id=loqed_id, numeric_id=numeric, name=lock_id, bolt_state="night_lock"
        )
        loqed.add_key(loqed_id, local_id=1, name="roomkey", secret=KEY_SECRET)
        loqed.add_bridge_webhook(bridge, f"{ROOMKEY_BASE}/hooks/loqed/bridge/{lock_id}")

    config = parse_config(config_text(room_id, keep_pii=keep_pii), base_dir=tmp_path)
    lockme_http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=lockme.app), base_url=LOCKME_BASE
    )
    loqed_http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=loqed.app), base_url=LOQED_BASE
    )
    clients += [lockme_http, loqed_http]
    token = Token.model_validate(lockme.issue_token("roomkey"))
    service = Service(
        config,
        clock=clock,
        engine=engine,
        secret_box=secret_box,
        lockme_http=lockme_http,
        lockme_token_store=MemoryTokenStore(token),
        loqed_http=loqed_http,
        instance_id="web-a",
        load_optional_workers=load_workers,
    )
    app = create_app(service, manage_lifecycle=load_workers)
    web = install(
        app,
        service,
        settings or WebSettings(),
        webhook_client=webhook_client,
        webhook_worker=webhook_worker,
    )
    late.app = app
    await service.sync_inventory()
    stack = WebStack(clock, lockme, loqed, service, app, web, room_id, clients=clients)
    now = dt.datetime.fromtimestamp(clock.time(), tz=dt.UTC)
    async with service.session_factory() as session, session.begin():
        await create_user(session, ADMIN[0], ADMIN[1], Role.ADMIN, now=now)
        await create_user(session, VIEWER[0], VIEWER[1], Role.READ_ONLY, now=now)
        _, stack.tokens["admin"] = await create_token(session, ADMIN[0], "tests", now=now)
        _, stack.tokens["viewer"] = await create_token(session, VIEWER[0], "tests", now=now)
    return stack
