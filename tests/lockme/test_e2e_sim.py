"""The SDK end to end against the Lockme simulator: every endpoint, both grants, the error tree,
sync (loopback uvicorn) and async (in-process ASGITransport), the webhook helper and the CLI login.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from typer.testing import CliRunner

from roomkey.cli.app import app as cli_app
from roomkey.lockme import (
    AsyncLockmeClient,
    AsyncMessageHandler,
    AuthError,
    FileTokenStore,
    LockmeClient,
    LockmeError,
    MemoryTokenStore,
    Message,
    NotFoundError,
    NotSentError,
    OAuthConfig,
    OAuthError,
    Outcome,
    RateLimitedError,
    RefusedError,
    ServerError,
    StateMismatchError,
    Token,
    ValidationError,
    ext_id,
)
from roomkey.sim.clock import SimClock
from roomkey.sim.lockme import FaultRule, LockmeSimulator

START = 1_800_000_000.0  # 2027-01-15
DAY = "2027-02-01"  # a Monday
SECRET = "e2e-client-secret-never-log"
REDIRECT = "http://127.0.0.1:8765/cb"
DOMAIN = "http://lockme.test"
WARSAW = ZoneInfo("Europe/Warsaw")
HOURS = ("10:00:00", "12:00:00", "14:00:00", "16:00:00")


@dataclass
class World:
    sim: LockmeSimulator
    clock: SimClock
    room_a: int
    room_b: int
    pricer: int
    department: int


def make_world(
    *, delivery_client: httpx.AsyncClient | None = None, webhook_url: str | None = None
) -> World:
    clock = SimClock(start=START, manual=True)
    sim = LockmeSimulator(clock, delivery_client=delivery_client)
    sim.add_oauth_client("roomkey", SECRET, REDIRECT)
    dept = sim.add_department("Escape Warsaw", webhook_url)
    room_a = sim.add_room(dept.id, "The Vault", calendar_margin=15)
    room_b = sim.add_room(dept.id, "Space Station")
    pricer = sim.add_pricer(room_a.id, "2-4 people", 149.0)
    pricer_b = sim.add_pricer(room_b.id, "2-4 people", 149.0)
    for room, p in ((room_a, pricer), (room_b, pricer_b)):
        for day in range(7):
            sim.set_day_settings(room.id, day, [{"hour": h, "pricers": [p.id]} for h in HOURS])
    return World(sim, clock, room_a.id, room_b.id, pricer.id, dept.id)


def oauth_config(domain: str) -> OAuthConfig:
    return OAuthConfig("roomkey", SECRET, REDIRECT, api_domain=domain)


def stored_token(world: World, **kwargs: Any) -> MemoryTokenStore:
    return MemoryTokenStore(Token.model_validate(world.sim.issue_token("roomkey", **kwargs)))


@pytest.fixture
def world() -> World:
    return make_world()


@pytest.fixture
async def asgi_http(world: World) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=world.sim.app)
    async with httpx.AsyncClient(transport=transport) as http:
        yield http


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run an ASGI app on a loopback uvicorn in a background thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:  # waiting for a real server to bind, not for simulated time
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def loopback(world: World) -> Iterator[str]:
    with serve(world.sim.app) as url:
        yield url


def _code_from(location: str) -> tuple[str, str]:
    query = parse_qs(urlsplit(location).query)
    return query["code"][0], query["state"][0]


# ------------------------------------------------------------------ every endpoint, both clients

Call = Callable[..., Awaitable[Any]]


async def exercise_every_endpoint(call: Call, world: World, tag: str) -> None:
    sim, a, b = world.sim, world.room_a, world.room_b
    assert await call("test") == "OK"
    me = await call("me")
    assert me.nick == "demo"
    assert me.userid == sim.default_user.userid
    rooms = await call("list_rooms")
    assert {r.roomid for r in rooms} == {a, b}
    assert {r.department for r in rooms} == {"Escape Warsaw"}
    assert (await call("get_room", a)).calendar_margin == 15
    assert isinstance(await call("edit_room", a, {"calendarMargin": 30}), dict)
    assert (await call("get_room", a)).calendar_margin == 30

    extid = f"bk/{tag} 1"  # a slash and a space: percent-encoded after the literal ext/
    rid = await call(
        "add_reservation",
        {"roomid": a, "date": DAY, "hour": "10:00:00", "name": "Ola", "people": 3, "extid": extid},
    )
    assert isinstance(rid, int)
    res = await call("get_reservation", a, rid)
    assert (res.reservationid, res.source, res.extid, res.people) == (rid, "api", extid, 3)
    assert res.start == dt.datetime(2027, 2, 1, 10, 0, tzinfo=WARSAW)
    assert (await call("get_reservation", a, ext_id(extid))).reservationid == rid
    assert (await call("get_reservation", a, str(rid))).reservationid == rid
    assert isinstance(await call("edit_reservation", a, rid, {"people": 5, "comment": "VIP"}), dict)
    assert (await call("get_reservation", a, rid)).people == 5
    assert [r.reservationid for r in await call("list_reservations", a, DAY)] == [rid]
    moved = await call("move_reservation", a, ext_id(extid), roomid=b, date=DAY, hour="12:00:00")
    assert isinstance(moved, dict)
    assert [r.reservationid for r in await call("list_reservations", a, DAY)] == []
    (after,) = await call("list_reservations", b, DAY)
    assert after.reservationid == rid
    assert after.start == dt.datetime(2027, 2, 1, 12, 0, tzinfo=WARSAW)

    # weekly settings (0 = Monday) and per-date exceptions
    weekly = await call("get_day_settings", a, 0)
    assert [s.hour.isoformat() for s in weekly] == list(HOURS)
    new_weekly = [{"hour": "11:00:00", "pricers": [world.pricer]}]
    assert [s.hour for s in await call("set_day_settings", a, 0, new_weekly)] == [dt.time(11)]
    assert [s.hour for s in await call("get_day_settings", a, 0)] == [dt.time(11)]
    exception = [{"hour": "18:00:00", "pricers": [world.pricer]}]
    await call("set_date_settings", a, DAY, exception)
    assert [s.hour for s in await call("get_date_settings", a, DAY)] == [dt.time(18)]
    await call("set_date_settings", a, "2027-02-02", [])  # explicitly empty: sent, not dropped
    assert await call("get_date_settings", a, "2027-02-02") == []
    await call("remove_date_settings", a, DAY)
    assert [s.hour for s in await call("get_date_settings", a, DAY)] == [dt.time(11)]

    # webhook messages created by the changes above
    messages = [m for m in sim.messages() if m.reservationid == rid]
    assert [m.action for m in messages][:1] == ["add"]
    move_msg = messages[-1]
    fetched = await call("get_message", str(move_msg.id))
    assert fetched.action == "edit"
    assert fetched.reservationid == str(rid)
    assert fetched.data is not None
    assert fetched.data.from_start == dt.datetime(2027, 2, 1, 10, 0, tzinfo=WARSAW)
    assert await call("mark_message_read", move_msg.id) is True
    assert sim.message(move_msg.id).read

    # the error tree
    assert await call("delete_reservation", b, rid) is True
    with pytest.raises(NotFoundError) as nf:
        await call("get_reservation", b, rid)
    assert nf.value.status == 404
    assert nf.value.message
    paid = sim.book(a, DAY, "11:00:00", source="web", status=1, name="Paid")
    with pytest.raises(RefusedError) as refused:
        await call("delete_reservation", a, paid)
    assert refused.value.status == 409
    assert "paid" in (refused.value.message or "").lower()
    with pytest.raises(ValidationError) as invalid:
        await call("edit_reservation", a, paid, {"people": "many"})
    assert invalid.value.status == 400
    with pytest.raises(NotFoundError):
        await call("get_message", 999_999)


async def test_every_endpoint_async(world: World, asgi_http: httpx.AsyncClient) -> None:
    client = AsyncLockmeClient(
        oauth_config(DOMAIN), stored_token(world), http_client=asgi_http, clock=world.clock.time
    )

    async def call(name: str, *args: Any, **kwargs: Any) -> Any:
        return await getattr(client, name)(*args, **kwargs)

    await exercise_every_endpoint(call, world, "async")


async def test_every_endpoint_sync_over_loopback(world: World, loopback: str) -> None:
    client = LockmeClient(oauth_config(loopback), stored_token(world), clock=world.clock.time)

    async def call(name: str, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(client, name), *args, **kwargs)

    try:
        await exercise_every_endpoint(call, world, "sync")
    finally:
        client.close()


# ------------------------------------------------------------------ both grants


async def test_grants_async(world: World, asgi_http: httpx.AsyncClient) -> None:
    store = MemoryTokenStore()
    client = AsyncLockmeClient(
        oauth_config(DOMAIN), store, http_client=asgi_http, clock=world.clock.time
    )
    url, state = client.authorization_url()
    answer = await asgi_http.get(url)
    assert answer.status_code in (302, 303)
    code, returned_state = _code_from(answer.headers["location"])
    with pytest.raises(StateMismatchError):
        await client.fetch_token(code, state="forged", expected_state=state)
    first = await client.fetch_token(code, state=returned_state, expected_state=state)
    assert store.load() == first
    assert (await client.me()).nick == "demo"
    with pytest.raises(OAuthError) as reused:  # codes are single use
        await client.fetch_token(code, state=returned_state, expected_state=state)
    assert reused.value.error == "invalid_grant"

    # 401 after the server expired the token -> one refresh (rotation) -> retried call succeeds
    world.sim.expire_tokens()
    assert await client.test() == "OK"
    second = store.load()
    assert second is not None
    assert second.access_token != first.access_token
    assert second.refresh_token != first.refresh_token
    # the rotated-out refresh token is dead
    stale = AsyncLockmeClient(
        oauth_config(DOMAIN), MemoryTokenStore(first), http_client=asgi_http, clock=world.clock.time
    )
    with pytest.raises(OAuthError) as dead:
        await stale.refresh_token()
    assert dead.value.error == "invalid_grant"

    # proactive refresh inside the margin, before the token expires
    assert second.expires is not None
    await world.clock.advance(second.expires - world.clock.time() - 30)
    await client.list_rooms()
    third = store.load()
    assert third is not None
    assert third.access_token != second.access_token

    # everything revoked: the refresh fails with an OAuth error, not a loop
    world.sim.expire_tokens(refresh=True)
    with pytest.raises(OAuthError):
        await client.me()


def test_grants_sync_over_loopback(world: World, loopback: str, tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "token.json")
    with LockmeClient(oauth_config(loopback), store, clock=world.clock.time) as client:
        url, state = client.authorization_url()
        answer = httpx.get(url)
        code, returned_state = _code_from(answer.headers["location"])
        first = client.fetch_token(code, state=returned_state, expected_state=state)
        assert client.test() == "OK"
        world.sim.expire_tokens()
        assert client.me().nick == "demo"
        second = store.load()
        assert second is not None
        assert second.refresh_token != first.refresh_token
        forced = client.refresh_token()
        assert forced.access_token != second.access_token
        assert store.load() == forced


# ------------------------------------------------------------------ more of the error tree


async def test_auth_server_fault_and_transport_errors(
    world: World, asgi_http: httpx.AsyncClient
) -> None:
    scopeless = AsyncLockmeClient(
        oauth_config(DOMAIN),
        stored_token(world, scopes=[]),
        http_client=asgi_http,
        clock=world.clock.time,
    )
    with pytest.raises(AuthError) as forbidden:
        await scopeless.list_rooms()
    assert forbidden.value.status == 403
    assert forbidden.value.error == "insufficient_scope"

    client = AsyncLockmeClient(
        oauth_config(DOMAIN), stored_token(world), http_client=asgi_http, clock=world.clock.time
    )
    world.sim.faults.add(FaultRule(kind="error", status=503, count=1))
    with pytest.raises(ServerError) as server:
        await client.list_rooms()
    assert server.value.status == 503
    assert [r.roomid for r in await client.list_rooms()]  # the fault fired once
    world.sim.faults.add(FaultRule(kind="rate_limit", count=1, retry_after=7))
    with pytest.raises(RateLimitedError) as limited:
        await client.list_rooms()
    assert limited.value.retry_after == 7

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead_port = sock.getsockname()[1]
    sock.close()
    offline = AsyncLockmeClient(
        oauth_config(f"http://127.0.0.1:{dead_port}"), stored_token(world), clock=world.clock.time
    )
    with pytest.raises(NotSentError):
        await offline.test()
    await offline.aclose()


# ------------------------------------------------------------------ webhook helper end to end


async def test_webhook_helper_end_to_end() -> None:
    handled: list[tuple[str, str | None]] = []
    failures = {"edit": 1}
    holder: dict[str, AsyncMessageHandler] = {}

    async def on_message(message: Message) -> None:
        if failures.get(message.action, 0) > 0:
            failures[message.action] -= 1
            raise RuntimeError("storage unavailable")
        handled.append((message.action, message.reservationid))

    async def receiver(request: Request) -> PlainTextResponse:
        try:
            outcome = await holder["helper"].handle(request.headers.get("x-messageid"))
        except LockmeError as exc:
            return PlainTextResponse(type(exc).__name__, status_code=400)
        except RuntimeError:
            return PlainTextResponse("retry later", status_code=503)
        return PlainTextResponse(outcome.value)

    receiver_app = Starlette(routes=[Route("/hooks/lockme", receiver, methods=["GET", "POST"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver_app)) as delivery:
        world = make_world(
            delivery_client=delivery, webhook_url="http://receiver.test/hooks/lockme?s=secret"
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.sim.app)) as api:
            client = AsyncLockmeClient(
                oauth_config(DOMAIN), stored_token(world), http_client=api, clock=world.clock.time
            )
            holder["helper"] = AsyncMessageHandler(
                client, {"add": on_message, "edit": on_message, "delete": on_message}
            )
            rid = world.sim.book(world.room_a, DAY, "10:00:00", source="panel", name="Ewa")
            world.sim.edit(rid, {"people": 6})
            world.sim.trigger_test(world.department)
            await world.sim.flush()
            add_msg, edit_msg, test_msg = world.sim.messages()
            assert handled == [("add", str(rid))]
            assert add_msg.read
            assert test_msg.read  # "test" is acked without a handler
            assert not edit_msg.read  # the handler failed: left unread for redelivery
            assert edit_msg.attempts[-1].status_code == 503

            await world.clock.advance(60)  # the sim redelivers
            assert world.sim.message(edit_msg.id).read is True
            assert handled == [("add", str(rid)), ("edit", str(rid))]

            # a late duplicate delivery of an acked message does not run the handler again
            assert await holder["helper"].handle(str(add_msg.id)) is Outcome.DUPLICATE
            assert len(handled) == 2
            await client.aclose()
        await world.sim.aclose()


# ------------------------------------------------------------------ CLI: one-command local login


def test_cli_login_and_calls_against_simulator(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    redirect_port = listener.getsockname()[1]
    listener.close()
    redirect = f"http://127.0.0.1:{redirect_port}/callback"
    world = make_world()
    world.sim.add_oauth_client("cli-app", SECRET, redirect)
    token_file = tmp_path / "cli" / "token.json"
    with serve(world.sim.app) as base:
        common = [
            "--client-id",
            "cli-app",
            "--redirect-uri",
            redirect,
            "--api-domain",
            base,
            "--token-file",
            str(token_file),
        ]
        runner = CliRunner()
        result = runner.invoke(
            cli_app,
            ["lockme", "login", *common, "--client-secret", SECRET, "--fetch", "--timeout", "20"],
        )
        assert result.exit_code == 0, result.output
        assert "Logged in as demo" in result.output
        assert SECRET not in result.output
        saved = FileTokenStore(token_file).load()
        assert saved is not None
        assert saved.access_token not in result.output
        assert token_file.stat().st_mode & 0o777 == 0o600

        rooms = runner.invoke(cli_app, ["lockme", "rooms", *common, "--json"])
        assert rooms.exit_code == 0, rooms.output
        assert '"The Vault"' in rooms.output
        me = runner.invoke(cli_app, ["lockme", "me", *common, "--json"])
        assert '"nick": "demo"' in me.output
        test = runner.invoke(cli_app, ["lockme", "test", *common])
        assert test.output.strip() == "OK"

        world.sim.expire_tokens(refresh=True)
        failed = runner.invoke(cli_app, ["lockme", "me", *common])
        assert failed.exit_code == 1
        assert saved.access_token not in failed.output
