"""Fixtures for the LOQED simulator tests: a manual clock and an in-process webhook receiver.

Helpers live in ``test_loqed_support.py`` (imported by name; never import from a conftest).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from test_loqed_support import T0, Receiver

from roomkey.sim.clock import SimClock


@pytest.fixture
def clock() -> SimClock:
    return SimClock(start=T0, manual=True)


@pytest.fixture
def receiver(clock: SimClock) -> Receiver:
    return Receiver(clock=clock)


@pytest.fixture
async def delivery_client(receiver: Receiver) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(receiver.app), base_url="http://hooks"
    ) as client:
        yield client
