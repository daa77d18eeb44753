"""Who may call what: session auth for pages, bearer tokens for ``/api/v1``, roles, CSRF.

Pages: :func:`page_user` / :func:`page_admin` (anonymous → redirect to the login page,
read-only on an admin page → 403 page). Every state-changing form is a POST that must carry
the session's CSRF token (:func:`require_csrf`). API: :func:`api_user` / :func:`api_admin`
(missing/invalid token → 401 JSON, read-only → 403 JSON). Session cookies are never accepted
by the API, so it needs no CSRF protection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from jinja2 import Environment
from starlette.templating import Jinja2Templates

from roomkey.service.clock import utc_now
from roomkey.service.config import Config
from roomkey.service.runtime import Service

from .sessions import SESSION_COOKIE, csrf_matches, load_session
from .settings import WebSettings
from .users import Principal, principal_for_token

if TYPE_CHECKING:
    from .webhooks import WebhookWorker

__all__ = [
    "AdminPage",
    "AdminToken",
    "ApiUnauthorized",
    "LoginRequired",
    "PageForbidden",
    "PageUser",
    "TokenUser",
    "WebState",
    "api_admin",
    "api_user",
    "page_admin",
    "page_user",
    "require_csrf",
    "web_state",
]


@dataclass
class WebState:
    """The dashboard's shared state (``app.state.web``)."""

    service: Service
    settings: WebSettings
    templates: Jinja2Templates
    base_config: Config
    """The configuration as loaded from the file (before dashboard overrides)."""
    webhooks: WebhookWorker | None = None
    """The outgoing-webhook worker, when this process runs one."""

    @property
    def env(self) -> Environment:
        return self.templates.env


def web_state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


class LoginRequired(Exception):
    """No valid session: the page handler redirects to the login page."""


class ApiUnauthorized(Exception):
    """No valid bearer token: 401 with ``WWW-Authenticate: Bearer``."""


class PageForbidden(Exception):
    """The signed-in user's role may not use this page or form."""


async def page_user(request: Request) -> Principal:
    """The signed-in user (raises :class:`LoginRequired`). Stores the session's CSRF token
    in ``request.state.csrf``."""
    state = web_state(request)
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise LoginRequired()
    service = state.service
    async with service.session_factory() as session, session.begin():
        found = await load_session(session, token, now=state.settings.now())
        if found is None:
            raise LoginRequired()
        principal, web_session = found
        request.state.csrf = web_session.csrf_token
    request.state.principal = principal
    return principal


async def page_admin(user: Annotated[Principal, Depends(page_user)]) -> Principal:
    if not user.is_admin:
        raise PageForbidden()
    return user


async def require_csrf(request: Request, user: Annotated[Principal, Depends(page_user)]) -> None:
    """The POSTed form carries this session's CSRF token (else 403)."""
    form = await request.form()
    given = form.get("csrf_token")
    if not csrf_matches(
        getattr(request.state, "csrf", None), given if isinstance(given, str) else None
    ):
        raise PageForbidden("invalid or missing CSRF token")


_bearer = HTTPBearer(auto_error=False, description="An API token (`roomkey token create`).")


async def api_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiUnauthorized("a bearer token is required")
    state = web_state(request)
    service = state.service
    async with service.session_factory() as session, session.begin():
        principal = await principal_for_token(
            session, credentials.credentials, now=utc_now(service.clock)
        )
    if principal is None:
        raise HTTPException(401, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
    request.state.principal = principal
    return principal


async def api_admin(user: Annotated[Principal, Depends(api_user)]) -> Principal:
    if not user.is_admin:
        raise HTTPException(403, "this token's user is read-only")
    return user


PageUser = Annotated[Principal, Depends(page_user)]
AdminPage = Annotated[Principal, Depends(page_admin)]
TokenUser = Annotated[Principal, Depends(api_user)]
AdminToken = Annotated[Principal, Depends(api_admin)]
