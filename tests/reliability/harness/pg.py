"""Private PostgreSQL databases for the suites (created fresh, dropped after).

The server is the one named by ``ROOMKEY_TEST_PG_URL`` (default the local trust-auth server).
Each run gets its own database so parallel test runs of other parts never interfere.
"""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy.engine import make_url

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pg_base_url() -> str:
    return os.environ.get("ROOMKEY_TEST_PG_URL", DEFAULT_PG_URL)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(prefix: str = "roomkey_rel") -> str:
    """A fresh database; skips (or fails with ``ROOMKEY_REQUIRE_PG=1``) when unreachable."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(_libpq(pg_base_url()), autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        if os.environ.get("ROOMKEY_REQUIRE_PG") == "1":
            pytest.fail(f"PostgreSQL required but unreachable: {type(exc).__name__}")
        pytest.skip(f"PostgreSQL not available: {type(exc).__name__}")
    return make_url(pg_base_url()).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    import psycopg

    name = make_url(url).database
    with psycopg.connect(_libpq(pg_base_url()), autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
