"""The HTTP face of the service: webhook receivers plus health, readiness and metrics.

``create_app(service)`` returns a FastAPI app whose lifespan starts and stops the service's
workers. Receivers find the service at ``request.app.state.service``. Every error answer is a
typed JSON object ``{"error": {"type": ..., "message": ...}}``; malformed requests get 4xx,
never 500.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from roomkey.service.hooks_lockme import LockmeReceiver
from roomkey.service.hooks_lockme import router as lockme_router
from roomkey.service.metrics import CONTENT_TYPE_LATEST
from roomkey.service.runtime import Service

__all__ = ["FastReceiver", "RoomkeyApp", "create_app", "error_response"]

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


# --------------------------------------------------------------------------- fast receivers
# Webhook receivers are the hot path: a raw ASGI endpoint listed in ``fast_receivers`` is tried
# before FastAPI's middleware, routing and dependency machinery. Each also stays routed inside
# FastAPI (other methods, a ``root_path``), so answers do not depend on which way a request took.


class FastReceiver(Protocol):
    """A raw ASGI endpoint that claims its own requests (and sets ``scope["path_params"]``)."""

    def match(self, scope: MutableMapping[str, Any]) -> bool: ...

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]: ...


class RoomkeyApp(FastAPI):
    """FastAPI with :attr:`fast_receivers` tried first for plain HTTP requests."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast_receivers: list[FastReceiver] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path") and not self.root_path:
            for receiver in self.fast_receivers:
                if receiver.match(scope):
                    scope["app"] = self
                    await receiver(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


# --------------------------------------------------------------------------- the app


def error_response(status: int, type_: str, message: str, **extra: Any) -> JSONResponse:
    """The one error shape every endpoint answers with."""
    return JSONResponse({"error": {"type": type_, "message": message, **extra}}, status_code=status)


def create_app(
    service: Service, *, manage_lifecycle: bool = True, migrate: bool = False
) -> RoomkeyApp:
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

    app = RoomkeyApp(
        title="roomkey",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.service = service
    app.include_router(lockme_router)
    app.fast_receivers.append(LockmeReceiver(service))
    for name in _OPTIONAL_ROUTERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        app.include_router(module.router)
        # LOQED receivers: raw ASGI shortcuts listed by the module (hooks_loqed.FAST_RECEIVERS).
        for make_receiver in getattr(module, "FAST_RECEIVERS", ()):
            app.fast_receivers.append(make_receiver(service))

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
