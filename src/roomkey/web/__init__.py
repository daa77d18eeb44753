"""roomkey's web dashboard and JSON API, mounted on the service's FastAPI app.

``install(app, service)`` adds the pages, ``/live`` (server-sent events), ``/api/v1`` (with
its OpenAPI schema at ``/api/v1/openapi.json``), the static files, the outgoing-webhook worker
and the dashboard's room overrides (laid over the config before the service starts)::

    app = create_app(service)
    install(app, service)

``create_demo_credentials(service)`` makes (or resets) an admin and a read-only user with
random passwords for the demo.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import select
from starlette.templating import Jinja2Templates

from roomkey.service.app import error_response
from roomkey.service.clock import utc_now
from roomkey.service.runtime import Service

from . import api, live, pages
from .auth import ApiUnauthorized, LoginRequired, PageForbidden, WebState
from .models import Role, User
from .overrides import apply_stored_overrides
from .settings import WebSettings
from .users import generate_password, hash_password
from .webhooks import WebhookWorker

__all__ = [
    "DemoCredential",
    "WebSettings",
    "create_demo_credentials",
    "install",
]

PACKAGE_DIR = Path(__file__).parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"


def _local(moment: dt.datetime | None, tz: str = "UTC", fmt: str = "%Y-%m-%d %H:%M") -> str:
    if moment is None:
        return "—"
    return moment.astimezone(ZoneInfo(tz)).strftime(fmt)


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    templates.env.filters["local"] = _local
    templates.env.filters["hm"] = lambda m, tz="UTC": _local(m, tz, "%H:%M:%S")
    return templates


def install(
    app: FastAPI,
    service: Service,
    settings: WebSettings | None = None,
    *,
    webhook_client: httpx.AsyncClient | None = None,
    webhook_worker: bool = True,
) -> WebState:
    """Mount the dashboard and API on ``app`` (before the app starts).

    Installing again on the same app only replaces the settings and the webhook HTTP client
    (so a caller can tune what ``create_app`` installed with the defaults)."""
    existing = getattr(app.state, "web", None)
    if isinstance(existing, WebState):
        if settings is not None:
            existing.settings = settings
        if existing.webhooks is not None:
            existing.webhooks.settings = existing.settings
            if webhook_client is not None:
                existing.webhooks.http_client = webhook_client
        return existing
    settings = settings or WebSettings.from_env()
    state = WebState(service, settings, _templates(), base_config=service.config)
    app.state.web = state
    app.include_router(pages.router)
    app.add_api_route("/dashboard", pages.dashboard_alias, methods=["GET"], include_in_schema=False)
    app.include_router(live.router)
    app.include_router(api.public_router)
    app.include_router(api.router)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, _exc: LoginRequired) -> Response:
        if request.method == "GET" and request.headers.get("x-partial") != "1":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        return HTMLResponse("Login required", status_code=401)

    @app.exception_handler(ApiUnauthorized)
    async def _unauthorized(_request: Request, exc: ApiUnauthorized) -> Response:
        response = error_response(401, "unauthorized", str(exc))
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(PageForbidden)
    async def _forbidden(request: Request, exc: PageForbidden) -> Response:
        message = str(exc) or "Your role may not do this. Ask an administrator."
        response = state.templates.TemplateResponse(
            request,
            "error.html",
            {
                "message": message,
                "user": getattr(request.state, "principal", None),
                "csrf": getattr(request.state, "csrf", ""),
                "venue_tz": service.config.lockme.venue_timezone,
            },
            status_code=403,
        )
        response.headers.update(pages.SECURITY_HEADERS)
        return response

    if webhook_worker and "web-webhooks" not in service.supervisor.workers:
        state.webhooks = WebhookWorker(service, settings, http_client=webhook_client)
        service.add_worker(state.webhooks.worker())

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(wrapped: Any) -> AsyncIterator[Any]:
        await apply_stored_overrides(service)
        async with inner(wrapped) as maybe_state:
            yield maybe_state

    app.router.lifespan_context = lifespan
    return state


@dataclass(frozen=True)
class DemoCredential:
    username: str
    password: str
    role: Role


async def create_demo_credentials(
    service: Service, *, users: tuple[tuple[str, Role], ...] | None = None
) -> list[DemoCredential]:
    """Create (or reset the password of) the demo's users: ``admin`` and ``viewer``."""
    wanted = users or (("admin", Role.ADMIN), ("viewer", Role.READ_ONLY))
    out: list[DemoCredential] = []
    now = utc_now(service.clock)
    async with service.session_factory() as session, session.begin():
        for username, role in wanted:
            password = generate_password()
            row = (
                await session.execute(select(User).where(User.username == username))
            ).scalar_one_or_none()
            if row is None:
                session.add(
                    User(
                        username=username,
                        password_hash=hash_password(password),
                        role=role.value,
                        active=True,
                        created_at=now,
                    )
                )
            else:
                row.password_hash = hash_password(password)
                row.role = role.value
                row.active = True
            out.append(DemoCredential(username, password, role))
    return out
