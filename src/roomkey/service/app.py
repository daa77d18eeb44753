"""The HTTP face of the service: webhook receivers plus health, readiness and metrics.

``create_app(service)`` returns a FastAPI app whose lifespan starts and stops the service's
workers. Receivers find the service at ``request.app.state.service``. Every error answer is a
typed JSON object ``{"error": {"type": ..., "message": ...}}``; malformed requests get 4xx,
never 500.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from roomkey.service.hooks_lockme import router as lockme_router
from roomkey.service.metrics import CONTENT_TYPE_LATEST
from roomkey.service.runtime import Service

__all__ = ["create_app", "error_response"]

log = logging.getLogger(__name__)

# Routers contributed by other parts; a module not built yet is skipped.
_OPTIONAL_ROUTERS = ("roomkey.service.hooks_loqed",)

_HTTP_ERROR_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
}


def error_response(status: int, type_: str, message: str, **extra: Any) -> JSONResponse:
    """The one error shape every endpoint answers with."""
    return JSONResponse({"error": {"type": type_, "message": message, **extra}}, status_code=status)


def create_app(
    service: Service, *, manage_lifecycle: bool = True, migrate: bool = False
) -> FastAPI:
    """Build the app. With ``manage_lifecycle`` its lifespan runs ``service.start(migrate=…)``
    and ``service.stop()`` (turn it off when the caller starts the service itself). Closing
    the service's clients and engine (``service.aclose()``) stays with the caller."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await service.start(migrate=migrate)
        try:
            yield
        finally:
            if manage_lifecycle:
                await service.stop()

    app = FastAPI(
        title="roomkey",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.service = service
    app.include_router(lockme_router)
    for name in _OPTIONAL_ROUTERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        app.include_router(module.router)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        type_ = _HTTP_ERROR_TYPES.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else type_
        return error_response(exc.status_code, type_, detail)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        problems = [
            {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", ""))}
            for err in exc.errors()
        ]
        return error_response(400, "invalid_request", "the request is malformed", problems=problems)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", include_in_schema=False)
    async def ready() -> Response:
        """Readiness: database reachable, migrations at head, workers running."""
        report = await service.readiness()
        return JSONResponse(report.as_dict(), status_code=200 if report.ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        await service.refresh_gauges()
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # The dashboard and JSON API (roomkey.web) build on the service; imported here so the
    # service modules themselves never depend on the web layer.
    from roomkey.web import install

    install(app, service)
    return app
