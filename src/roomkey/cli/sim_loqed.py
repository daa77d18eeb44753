"""``roomkey sim loqed`` (the LOQED simulator on loopback) and the temporary ``roomkey demo``."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import typer
import uvicorn
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from roomkey.loqed.signing import (
    Action,
    decode_key,
    encode_command_param,
    sign_command,
    webhook_create_hash,
    webhook_payload_hash,
)
from roomkey.sim.clock import SimClock
from roomkey.sim.loqed import LoqedServer, LoqedSimulator, seed_demo

__all__ = ["register"]


def register(app: typer.Typer, sim_app: typer.Typer) -> None:
    """Add ``roomkey sim loqed`` to ``sim_app`` and the temporary ``roomkey demo`` to ``app``."""
    sim_app.command("loqed")(sim_loqed)
    _register_demo(app)


def sim_loqed(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 8580,
    warp: Annotated[float, typer.Option(help="Simulated seconds per real second.")] = 1.0,
    seed_demo_world: Annotated[
        bool, typer.Option("--seed-demo", help="Seed bridge b1 with the demo lock and keys.")
    ] = False,
    gateway: Annotated[str, typer.Option(help="Bridge generation: legacy or new.")] = "legacy",
    seed: Annotated[int, typer.Option(help="Seed of the timing RNG.")] = 0,
) -> None:
    """Run the LOQED simulator (bridges, cloud, app.loqed.com, /_sim control) on loopback."""
    if gateway not in ("legacy", "new"):
        raise typer.BadParameter("gateway must be legacy or new")
    if warp <= 0:
        raise typer.BadParameter("warp must be positive")
    from roomkey.sim.loqed import SimConfig

    console = Console(stderr=True)

    async def run() -> None:
        config = SimConfig(seed=seed, default_gateway="new" if gateway == "new" else "legacy")
        sim = LoqedSimulator(SimClock(warp=warp), config=config)
        if seed_demo_world:
            seed_demo(sim)
        server = LoqedServer(sim, host=host, port=port, log_level="warning")
        await server.start()
        console.print(f"[bold green]LOQED simulator[/] on {server.url}  (warp ×{warp:g})")
        if seed_demo_world:
            console.print(
                f"  demo lock {sim.bridges['b1'].lock_id} on bridge b1: {server.url}/status; "
                f"credentials: GET {server.url}/_sim/state"
            )
        console.print("  control API under /_sim/ — Ctrl-C to stop")
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


# ---------------------------------------------------------------------------------------
# TEMPORARY `roomkey demo` — a stand-in until the service's demo replaces it. Everything
# below this line can be deleted together with the `_register_demo(app)` call above.
# ---------------------------------------------------------------------------------------

_ACTIONS = (Action.DAY_LOCK, Action.NIGHT_LOCK, Action.OPEN)


def _register_demo(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    run_for: Annotated[
        float | None, typer.Option("--for", help="Stop by itself after SECONDS (real time).")
    ] = None,
    warp: Annotated[float, typer.Option(help="Simulated seconds per real second.")] = 4.0,
) -> None:
    """Start a simulated LOQED lock, sign commands and watch it move through its webhooks."""
    if warp <= 0:
        raise typer.BadParameter("warp must be positive")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_demo(run_for, warp))


@contextlib.asynccontextmanager
async def _serve(app: Any) -> AsyncIterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class _DemoView:
    """The live screen: the lock's state and the last webhooks, signed and verified."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []
        self.state = "?"
        self.note = ""

    def add(self, source: str, what: str, detail: str) -> None:
        self.rows.append((time.strftime("%H:%M:%S"), source, what, detail))
        del self.rows[:-14]

    def render(self) -> Group:
        table = Table(expand=True, box=None)
        for name in ("time", "from", "event", "detail"):
            table.add_column(name, overflow="fold")
        for row in self.rows:
            table.add_row(*row)
        head = Panel(f"bolt state: [bold]{self.state}[/]   {self.note}",
                     title="roomkey demo — simulated LOQED lock")
        return Group(head, table)


async def _demo(run_for: float | None, warp: float) -> None:
    console = Console()
    clock = SimClock(warp=warp)
    sim = LoqedSimulator(clock)
    world = seed_demo(sim)
    view = _DemoView()
    bridge_key = decode_key(world.bridge.bridge_key)
    reached = asyncio.Event()

    async def on_webhook(request: Request) -> PlainTextResponse:
        body = await request.body()
        ts = request.headers.get("timestamp", "")
        try:
            good = hmac.compare_digest(
                webhook_payload_hash(bridge_key, int(ts), body),
                request.headers.get("hash", ""),
            )
        except ValueError:
            good = False
        try:
            event = json.loads(body)
        except ValueError:
            event = {}
        kind = str(event.get("event_type", "?"))
        state = event.get("requested_state") or event.get("go_to_state") or ""
        view.add("bridge webhook", kind,
                 f"{state} key={event.get('key_local_id')} HASH {'✓' if good else '✗'}")
        if kind.startswith("STATE_CHANGED"):
            reached.set()
        return PlainTextResponse("ok")

    receiver = Starlette(routes=[Route("/hooks/loqed", on_webhook, methods=["POST"])])
    deadline = None if run_for is None else time.monotonic() + run_for
    async with LoqedServer(sim) as server, _serve(receiver) as hook_base, httpx.AsyncClient(
        base_url=server.url, timeout=10
    ) as client:
        hook_url = f"{hook_base}/hooks/loqed"
        ts = int(clock.time())
        fields = {name: 1 for name in (
            "trigger_state_changed_open", "trigger_state_changed_latch",
            "trigger_state_changed_night_lock", "trigger_state_changed_unknown",
            "trigger_state_goto_open", "trigger_state_goto_latch",
            "trigger_state_goto_night_lock", "trigger_battery", "trigger_online_status")}
        await client.post(
            "/webhooks", json={"url": hook_url, **fields},
            headers={"TIMESTAMP": str(ts),
                     "HASH": webhook_create_hash(bridge_key, ts, hook_url, 511)},
        )
        view.add("roomkey", "webhook registered", "signed POST /webhooks")
        with Live(view.render(), console=console, refresh_per_second=8) as live:
            step = 0
            while deadline is None or time.monotonic() < deadline:
                action = _ACTIONS[step % len(_ACTIONS)]
                step += 1
                signed = sign_command(world.key.secret, action=action,
                                      local_key_id=world.key.local_id, clock=clock.time)
                reached.clear()
                r = await client.get("/to_lock?command_signed_base64="
                                     + encode_command_param(signed))
                view.add("roomkey", f"signed {action.name}", f"HTTP {r.status_code} {r.text}")
                waited = 0.0
                while not reached.is_set() and waited < 30 / warp + 10:
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    view.state = sim.locks[world.lock.lock_id].bolt_state.value
                    live.update(view.render())
                    await asyncio.sleep(0.1)
                    waited += 0.1
                await asyncio.sleep(min(2.0, 8 / warp))
                view.state = sim.locks[world.lock.lock_id].bolt_state.value
                live.update(view.render())
    verdicts = [r.verdict.value for r in sim.received(world.lock.lock_id)]
    console.print()
    console.print(f"commands the lock received: {len(verdicts)} ({', '.join(verdicts)})")
