"""Fixtures for the dashboard tests: the service's database fixtures (SQLite and PostgreSQL)
and a roomkey + dashboard stack wired to both simulators."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from web_harness import WebStack, make_stack

from roomkey.service.crypto import SecretBox

# The database fixtures are the service's own (tests/service/conftest.py): loaded from there,
# not copied, so both suites run on the same SQLite/PostgreSQL matrix.
_spec = importlib.util.spec_from_file_location(
    "roomkey_tests_service_db_fixtures", Path(__file__).parent.parent / "service" / "conftest.py"
)
assert _spec is not None
assert _spec.loader is not None
_db = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_db)

db_url = _db.db_url
db_backend = _db.db_backend
engine = _db.engine
session_factory = _db.session_factory
secret_box = _db.secret_box


@pytest.fixture
async def stack(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> AsyncIterator[WebStack]:
    built = await make_stack(engine, secret_box, tmp_path)
    try:
        yield built
    finally:
        await built.close()
