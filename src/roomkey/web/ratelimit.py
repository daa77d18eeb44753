"""Login rate limit per client IP + user name (and a looser one per IP), shared by replicas.

Failed attempts are rows in ``web_login_attempts``; a client that failed ``max_failures``
times for one user name within the window is refused (429) until the oldest failure leaves
the window. A successful login does not erase failures (an attacker who knows one password
cannot reset the counter for others).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import LoginAttempt
from .settings import WebSettings

__all__ = ["LoginVerdict", "check_login_allowed", "record_login_attempt"]


@dataclass(frozen=True, slots=True)
class LoginVerdict:
    allowed: bool
    retry_after: int = 0
    """Seconds until the next attempt may be made (when refused)."""


def _key(username: str) -> str:
    return username.strip().casefold()[:64]


async def check_login_allowed(
    session: AsyncSession, ip: str, username: str, *, now: datetime, settings: WebSettings
) -> LoginVerdict:
    since = now - timedelta(seconds=settings.login_window_seconds)
    failed = (LoginAttempt.success.is_(False), LoginAttempt.at > since, LoginAttempt.ip == ip[:64])
    per_user = await session.execute(
        select(func.count(LoginAttempt.id), func.min(LoginAttempt.at)).where(
            *failed, LoginAttempt.username == _key(username)
        )
    )
    count_user, oldest_user = per_user.one()
    per_ip = await session.execute(
        select(func.count(LoginAttempt.id), func.min(LoginAttempt.at)).where(*failed)
    )
    count_ip, oldest_ip = per_ip.one()
    oldest: datetime | None = None
    if count_user >= settings.login_max_failures:
        oldest = oldest_user
    elif count_ip >= settings.login_max_failures_per_ip:
        oldest = oldest_ip
    if oldest is None:
        return LoginVerdict(True)
    wait = (oldest + timedelta(seconds=settings.login_window_seconds) - now).total_seconds()
    return LoginVerdict(False, max(1, int(wait) + 1))


async def record_login_attempt(
    session: AsyncSession,
    ip: str,
    username: str,
    *,
    success: bool,
    now: datetime,
    settings: WebSettings,
) -> None:
    session.add(LoginAttempt(at=now, ip=ip[:64], username=_key(username), success=success))
    horizon = now - timedelta(seconds=settings.login_window_seconds * 4)
    await session.execute(delete(LoginAttempt).where(LoginAttempt.at < horizon))
