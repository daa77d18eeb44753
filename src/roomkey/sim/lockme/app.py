"""Assemble the simulator's single ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from roomkey.sim.lockme.api import API_VERSIONS, api_routes
from roomkey.sim.lockme.control import control_routes
from roomkey.sim.lockme.faults import FaultMiddleware
from roomkey.sim.lockme.oauth_routes import oauth_routes

if TYPE_CHECKING:
    from roomkey.sim.lockme.simulator import LockmeSimulator

__all__ = ["build_app"]


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods answer JSON ``{message}`` like the API does."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "Internal Server Error"
    return JSONResponse({"message": detail}, status_code=status)


def build_app(sim: LockmeSimulator) -> ASGIApp:
    """One app: OAuth, ``/v2.0``–``/v2.4``, ``/_sim`` control API, ``/health``; faults on top."""

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "time": sim.clock.time()})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await sim.start()
        try:
            yield
        finally:
            await sim.aclose()

    rest = api_routes(sim)
    starlette = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            *oauth_routes(sim),
            *(Mount(f"/{version}", routes=rest) for version in API_VERSIONS),
            Mount("/_sim", routes=control_routes(sim)),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    return FaultMiddleware(starlette, sim.faults)
