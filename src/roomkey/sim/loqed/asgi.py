"""Assembles the simulator's single ASGI app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from roomkey.sim.loqed.app_api import app_api_routes
from roomkey.sim.loqed.bridge_api import bridge_routes
from roomkey.sim.loqed.cloud_api import cloud_routes
from roomkey.sim.loqed.control_api import control_routes
from roomkey.sim.loqed.faults import FaultMiddleware

if TYPE_CHECKING:
    from roomkey.sim.loqed.simulator import LoqedSimulator

__all__ = ["build_app"]


def build_app(sim: LoqedSimulator) -> FaultMiddleware:
    """Bridges, cloud, app.loqed.com, ``/_sim`` control and ``/health`` behind the fault layer."""

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "time": sim.clock.time(),
                             "bridges": len(sim.bridges), "locks": len(sim.locks)})

    routes: list[BaseRoute] = [Route("/health", health, methods=["GET"])]
    routes += bridge_routes(sim, prefixed=True)
    routes += bridge_routes(sim, prefixed=False)
    routes += cloud_routes(sim)
    routes += app_api_routes(sim)
    inner = Starlette(routes=[])
    middleware = FaultMiddleware(inner, sim)
    inner.router.routes.extend(routes + control_routes(sim, middleware))
    return middleware
