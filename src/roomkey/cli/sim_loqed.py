"""``roomkey sim loqed``: the LOQED simulator on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

import typer
from rich.console import Console

from roomkey.sim.clock import SimClock
from roomkey.sim.loqed import LoqedServer, LoqedSimulator, seed_demo

__all__ = ["register"]


def register(app: typer.Typer, sim_app: typer.Typer) -> None:
    """Add ``roomkey sim loqed`` to ``sim_app``."""
    sim_app.command("loqed")(sim_loqed)


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
