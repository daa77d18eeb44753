"""Shared database fixtures for the service tests: every DB test runs on SQLite and PostgreSQL.

* ``db_url`` (session scope, parametrized ``sqlite`` / ``postgres``): a migrated database.
  SQLite is a temp file; PostgreSQL is a fresh, uniquely named database created on the server
  named by ``ROOMKEY_TEST_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``)
  and dropped at the end. Unreachable PostgreSQL → skipped, unless ``ROOMKEY_REQUIRE_PG=1``.
  Migrations run once per session per backend.
* ``engine`` (function scope): an ``AsyncEngine`` on ``db_url`` with every table emptied first.
* ``session_factory``: ``async_sessionmaker`` on that engine; ``session``: one open session.
* ``secret_box``: a ``SecretBox`` with a fresh key.

PostgreSQL params carry the ``postgres`` marker (``-m "not postgres"`` runs SQLite only).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from roomkey.service.crypto import SecretBox, generate_key
from roomkey.service.db.engine import create_engine, create_session_factory
from roomkey.service.db.migrate import upgrade
from roomkey.service.db.models import Base

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pg_base_url() -> str:
    return os.environ.get("ROOMKEY_TEST_PG_URL", DEFAULT_PG_URL)


def _pg_unavailable(reason: str) -> None:
    if os.environ.get("ROOMKEY_REQUIRE_PG") == "1":
        pytest.fail(f"PostgreSQL required (ROOMKEY_REQUIRE_PG=1) but {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_pg_database(prefix: str = "roomkey_test") -> str:
    """Create a fresh database next to ``ROOMKEY_TEST_PG_URL``; returns its SQLAlchemy URL."""
    import psycopg

    base = pg_base_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(_libpq(base), autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        _pg_unavailable(f"cannot connect ({exc.__class__.__name__})")
    return make_url(base).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    import psycopg

    name = make_url(url).database
    base = pg_base_url()
    with psycopg.connect(_libpq(base), autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(
    scope="session",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ],
)
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database URL, once per backend per test session."""
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("db") / "roomkey.sqlite3"
        url = f"sqlite+aiosqlite:///{path}"
        upgrade(url)
        yield url
        return
    url = create_pg_database()
    try:
        upgrade(url)
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture
def db_backend(db_url: str) -> str:
    """``"sqlite"`` or ``"postgresql"``."""
    return make_url(db_url).get_backend_name()


async def clear_tables(engine: AsyncEngine) -> None:
    """Delete every row of every roomkey table (children first)."""
    async with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(delete(table))


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the migrated database, emptied before the test."""
    eng = create_engine(db_url)
    await clear_tables(eng)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_factory(engine)


@pytest.fixture
async def session(
    session_factory: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    async with session_factory() as s:
        yield s


@pytest.fixture
def secret_box() -> SecretBox:
    return SecretBox([generate_key()])


@pytest.fixture
def fresh_db_url(db_backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty, un-migrated database on the same backend as ``db_url`` (dropped after)."""
    if db_backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    url = create_pg_database("roomkey_fresh")
    try:
        yield url
    finally:
        drop_pg_database(url)
