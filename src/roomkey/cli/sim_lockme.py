"""``roomkey sim lockme``: run the Lockme simulator on loopback with a warped clock."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from roomkey.sim.lockme import LockmeSimulator

__all__ = ["build_simulator", "register"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_simulator(
    *,
    warp: float = 1.0,
    seed_demo: bool = False,
    traffic: float | None = None,
    seed: int = 0,
    webhook_url: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    redirect_uri: str | None = None,
    consent_page: bool = False,
) -> LockmeSimulator:
    """Create the simulator the command serves (clock in warp mode)."""
    from roomkey.sim.clock import SimClock
    from roomkey.sim.lockme import LockmeSimulator
    from roomkey.sim.lockme.demo import seed_demo as fill_demo
    from roomkey.sim.lockme.traffic import TrafficGenerator

    sim = LockmeSimulator(SimClock(warp=warp), seed=seed)
    sim.oauth.settings.auto_approve = not consent_page
    if seed_demo:
        fill_demo(sim, webhook_url=webhook_url, client_id=client_id, client_secret=client_secret,
             redirect_uri=redirect_uri)
    else:
        if client_id and client_secret and redirect_uri:
            sim.add_oauth_client(client_id, client_secret, redirect_uri, name=client_id)
        if webhook_url:
            sim.add_department("Department", webhook_url)
    if traffic:
        sim.traffic = TrafficGenerator(sim, seed=seed, rate=traffic)
    return sim


def register(app: typer.Typer, sim_app: typer.Typer) -> None:
    """Add ``roomkey sim lockme`` to the ``sim`` group."""

    @sim_app.command("lockme")
    def sim_lockme(
        port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8091,
        host: Annotated[str, typer.Option(help="Loopback address to bind.")] = "127.0.0.1",
        warp: Annotated[float, typer.Option(help="Simulated seconds per real second.")] = 1.0,
        seed_demo: Annotated[bool, typer.Option("--seed-demo",
                                                help="Create a demo venue.")] = False,
        traffic: Annotated[float | None, typer.Option(
            help="Generate bookings at RATE events per simulated hour.")] = None,
        seed: Annotated[int, typer.Option(help="Seed for traffic and faults.")] = 0,
        webhook_url: Annotated[str | None, typer.Option(
            help="Webhook URL of the (demo) department.")] = None,
        client_id: Annotated[str | None, typer.Option(help="OAuth client id to register.")] = None,
        client_secret: Annotated[str | None, typer.Option(
            help="OAuth client secret to register.")] = None,
        redirect_uri: Annotated[str | None, typer.Option(
            help="Registered redirect URI of the client.")] = None,
        consent_page: Annotated[bool, typer.Option(
            "--consent-page", help="Show an Approve page instead of auto-approving.")] = False,
        log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    ) -> None:
        """Run the Lockme API simulator (OAuth2, REST v2.0-v2.4, webhooks, /_sim control)."""
        import uvicorn

        if not _is_loopback(host):
            raise typer.BadParameter("the simulator only binds loopback addresses",
                                     param_hint="--host")
        if warp <= 0:
            raise typer.BadParameter("must be positive", param_hint="--warp")
        if traffic is not None and traffic <= 0:
            raise typer.BadParameter("must be positive", param_hint="--traffic")
        sim = build_simulator(warp=warp, seed_demo=seed_demo, traffic=traffic, seed=seed,
                              webhook_url=webhook_url, client_id=client_id,
                              client_secret=client_secret, redirect_uri=redirect_uri,
                              consent_page=consent_page)
        config = uvicorn.Config(sim.app, host=host, port=port, log_level=log_level,
                                lifespan="on")
        typer.echo(f"Lockme simulator on http://{host}:{port} (warp {warp}x); "
                   f"control API at /_sim/state")
        asyncio.run(uvicorn.Server(config).serve())
