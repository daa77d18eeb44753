"""Lockme simulator on loopback: a real uvicorn server, a real webhook receiver, real sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp
from typer.testing import CliRunner

from roomkey.cli.app import app as cli_app
from roomkey.cli.sim_lockme import build_simulator
from roomkey.sim.lockme import FaultRule, LockmeSimulator

pytestmark = pytest.mark.timeout(60)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def _serve(app: ASGIApp) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on a free loopback port (bounded start and stop)."""
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="auto", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[dict[str, str]], asyncio.Event]]:
    calls: list[dict[str, str]] = []
    got = asyncio.Event()

    async def hook(request: Request) -> PlainTextResponse:
        calls.append({"method": request.method, "ua": request.headers["user-agent"],
                      "id": request.headers["x-messageid"],
                      "body": (await request.body()).decode()})
        got.set()
        return PlainTextResponse("OK")

    app = Starlette(routes=[Route("/hook", hook, methods=["POST", "GET"])])
    async with _serve(app) as url:
        yield url, calls, got


@pytest.fixture
async def lockme(receiver: tuple[str, list[dict[str, str]], asyncio.Event]
                 ) -> AsyncIterator[tuple[str, LockmeSimulator]]:
    sim = build_simulator(warp=1.0, seed_demo=True, webhook_url=f"{receiver[0]}/hook?s=k",
                          client_id="loop", client_secret="loop-secret",
                          redirect_uri="http://127.0.0.1:9/cb")
    sim.faults.max_hang = 2.0
    async with _serve(sim.app) as url:
        yield url, sim


async def test_oauth_api_and_webhook_over_real_sockets(
        lockme: tuple[str, LockmeSimulator],
        receiver: tuple[str, list[dict[str, str]], asyncio.Event]) -> None:
    url, sim = lockme
    _, calls, got = receiver
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        assert (await http.get("/health")).json()["status"] == "ok"
        auth = await http.get("/authorize", params={
            "client_id": "loop", "redirect_uri": "http://127.0.0.1:9/cb",
            "response_type": "code", "scope": "rooms_manage", "state": "abc"})
        assert auth.status_code == 302
        code = parse_qs(urlsplit(auth.headers["location"]).query)["code"][0]
        token = (await http.post("/access_token", data={
            "grant_type": "authorization_code", "code": code, "client_id": "loop",
            "client_secret": "loop-secret", "redirect_uri": "http://127.0.0.1:9/cb"})).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        rooms = (await http.get("/v2.4/rooms", headers=headers)).json()
        assert len(rooms) == 3
        new_id = (await http.put(f"/v2.4/room/{rooms[0]['roomid']}/reservation",
                                 headers=headers,
                                 json={"date": "2030-01-07", "hour": "10:00:00"})).json()
        assert isinstance(new_id, int)
        async with asyncio.timeout(10):
            while not any(c["id"] == str(sim.messages()[-1].id) for c in calls):
                got.clear()
                await got.wait()
        call = next(c for c in calls if c["id"] == str(sim.messages()[-1].id))
        assert call == {"method": "POST", "ua": "LockMe/1.0", "id": call["id"], "body": ""}
        message = (await http.get(f"/v2.4/message/{call['id']}", headers=headers)).json()
        assert (message["action"], message["reservationid"]) == ("add", new_id)
        assert (await http.post(f"/v2.4/message/{call['id']}", headers=headers)).json() is True


async def test_timeout_fault_outlasts_the_client_timeout(
        lockme: tuple[str, LockmeSimulator]) -> None:
    url, sim = lockme
    sim.faults.add(FaultRule("timeout", seconds=30, count=1))
    token = sim.issue_token("loop")
    async with httpx.AsyncClient(base_url=url, timeout=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/v2.4/test",
                           headers={"Authorization": f"Bearer {token['access_token']}"})
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        ok = await http.get("/v2.4/test",
                            headers={"Authorization": f"Bearer {token['access_token']}"})
        assert ok.json() == "OK"


def test_cli_help_and_refuses_non_loopback_hosts() -> None:
    runner = CliRunner()
    helped = runner.invoke(cli_app, ["sim", "lockme", "--help"])
    assert helped.exit_code == 0
    for flag in ("--port", "--warp", "--seed-demo", "--traffic", "--webhook-url",
                 "--client-id", "--client-secret", "--redirect-uri"):
        assert flag in helped.output
    refused = runner.invoke(cli_app, ["sim", "lockme", "--host", "0.0.0.0", "--port", "1"])  # noqa: S104
    assert refused.exit_code != 0


def test_build_simulator_wires_options() -> None:
    sim = build_simulator(warp=30.0, traffic=120.0, seed=3, client_id="x",
                          client_secret="y-secret", redirect_uri="http://127.0.0.1/cb",
                          webhook_url="http://127.0.0.1:1/h", consent_page=True)
    assert sim.clock.warp == 30.0
    assert not sim.clock.manual
    assert sim.traffic is not None
    assert sim.traffic.rate == 120.0
    assert "x" in sim.oauth.clients
    assert sim.oauth.settings.auto_approve is False
    assert [d.name for d in sim.departments.values()] == ["Department"]
