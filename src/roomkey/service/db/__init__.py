"""roomkey's database layer: engine, models, migrations and repositories.

Repositories are plain async functions in small modules (``messages``, ``reservations``,
``plans``, ``commands``, ``events``, ``alerts``, ``audit``, ``leases``, ``kv``, ``inventory``);
each takes an ``AsyncSession`` first, runs inside the caller's transaction, never commits, and
takes the current time as an argument. See docs/configuration.md ("Database").
"""

from .engine import create_engine, create_session_factory, normalize_url, redact_url
from .migrate import upgrade, upgrade_async
from .models import Base

__all__ = [
    "Base",
    "create_engine",
    "create_session_factory",
    "normalize_url",
    "redact_url",
    "upgrade",
    "upgrade_async",
]
