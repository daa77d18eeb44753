"""Fixtures for the LOQED SDK tests."""

from __future__ import annotations

import pytest

from .support import FakeClock


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> str:
    """Every client test runs against the sync and the async client."""
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
