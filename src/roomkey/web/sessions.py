"""Browser sessions kept in the database (so logout revokes them and replicas share them).

The cookie carries a random 256-bit token; the ``web_sessions`` row is keyed by its SHA-256
and holds the session's CSRF token. Cookies are ``Secure`` (configurable for plain-HTTP
setups), ``HttpOnly`` and ``SameSite=Lax``.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from .models import Role, User, WebSession
from .settings import WebSettings
from .users import Principal, hash_token

__all__ = [
    "LOGIN_CSRF_COOKIE",
    "SESSION_COOKIE",
    "clear_session_cookie",
    "csrf_matches",
    "end_session",
    "load_session",
    "set_session_cookie",
    "start_session",
]

SESSION_COOKIE = "roomkey_session"
LOGIN_CSRF_COOKIE = "roomkey_login_csrf"
"""Double-submit CSRF token for the login form (there is no session yet)."""


async def start_session(
    session: AsyncSession, user: User, *, now: datetime, settings: WebSettings
) -> tuple[str, WebSession]:
    """A new session for ``user``; returns the cookie value and the row."""
    token = secrets.token_urlsafe(32)
    row = WebSession(
        id=hash_token(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + timedelta(hours=settings.session_hours),
        last_seen_at=now,
    )
    session.add(row)
    # Old sessions of anyone: expired rows are dropped as new ones are made.
    await session.execute(delete(WebSession).where(WebSession.expires_at < now))
    await session.flush()
    return token, row


async def load_session(
    session: AsyncSession, token: str, *, now: datetime
) -> tuple[Principal, WebSession] | None:
    """The user and session a cookie value stands for (None: unknown, expired, inactive)."""
    if not token or len(token) > 128:
        return None
    row = (
        await session.execute(
            select(WebSession, User)
            .join(User, User.id == WebSession.user_id)
            .where(WebSession.id == hash_token(token))
        )
    ).first()
    if row is None:
        return None
    web_session, user = row
    if web_session.expires_at <= now or not user.active:
        return None
    return Principal(user.id, user.username, Role(user.role), "session"), web_session


async def end_session(session: AsyncSession, token: str) -> None:
    await session.execute(delete(WebSession).where(WebSession.id == hash_token(token)))


def csrf_matches(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of CSRF tokens (missing on either side: no match)."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def set_session_cookie(response: Response, token: str, settings: WebSettings) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(settings.session_hours * 3600),
        path="/",
        secure=settings.cookie_secure,
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response, settings: WebSettings) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=settings.cookie_secure, httponly=True, samesite="lax"
    )
