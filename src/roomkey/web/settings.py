"""Dashboard settings: cookie, session, login-limit, live-update and webhook knobs.

The service's TOML file has no ``[web]`` table, so these come from the code that installs the
dashboard (``install(app, service, settings)``) or from ``ROOMKEY_WEB_*`` environment
variables (:meth:`WebSettings.from_env`). Wall-clock time (``wall``) drives sessions, the
login limit and webhook signature timestamps; the service clock drives everything about doors.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = ["DEFAULT_RETRY_SCHEDULE", "WebSettings"]

DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (
    0.0,
    5.0,
    300.0,
    1800.0,
    7200.0,
    18000.0,
    36000.0,
    50400.0,
    72000.0,
    86400.0,
)
"""Standard Webhooks' example schedule (seconds after the previous attempt; ~75 h in all)."""


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class WebSettings:
    """How the dashboard behaves. Defaults are safe for production."""

    cookie_secure: bool = True
    """Send the session cookie only over HTTPS (browsers treat http://127.0.0.1 and
    http://localhost as secure too)."""
    session_hours: float = 12.0
    login_window_seconds: float = 900.0
    login_max_failures: int = 5
    """Failed logins per client IP + user name within the window before 429."""
    login_max_failures_per_ip: int = 20
    live_poll_seconds: float = 1.0
    """How often the live-update stream looks for changes (wall-clock seconds)."""
    live_keepalive_seconds: float = 15.0
    live_max_seconds: float = 30.0
    """A live stream ends after this long (the browser reconnects and resumes)."""
    webhook_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    webhook_timeout_seconds: float = 15.0
    webhook_allow_private_targets: bool = True
    """Allow webhook URLs on loopback/private addresses (turn off where untrusted admins can
    add endpoints: a basic SSRF guard)."""
    webhook_settle_seconds: float = 5.0
    """Events are fanned out once this old (service clock): a late-committing row with a
    smaller id is not skipped by the cursor."""
    wall: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    def now(self) -> datetime:
        """Wall-clock now (aware UTC)."""
        return datetime.fromtimestamp(self.wall(), tz=UTC)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebSettings:
        """Defaults overridden by ``ROOMKEY_WEB_COOKIE_SECURE``, ``ROOMKEY_WEB_SESSION_HOURS``
        and ``ROOMKEY_WEB_ALLOW_PRIVATE_WEBHOOKS``."""
        env = os.environ if env is None else env
        hours = env.get("ROOMKEY_WEB_SESSION_HOURS")
        return cls(
            cookie_secure=_flag(env, "ROOMKEY_WEB_COOKIE_SECURE", True),
            session_hours=float(hours) if hours else 12.0,
            webhook_allow_private_targets=_flag(env, "ROOMKEY_WEB_ALLOW_PRIVATE_WEBHOOKS", True),
        )
