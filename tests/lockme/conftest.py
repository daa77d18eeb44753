"""Shared fixtures for the Lockme SDK tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import respx

from roomkey.lockme import MemoryTokenStore, OAuthConfig, Token

API = "https://api.lock.me"
BASE = f"{API}/v2.4"
CLIENT_SECRET = "client-secret-XYZ-never-log"
ACCESS = "access-token-AAA-never-log"
REFRESH = "refresh-token-RRR-never-log"
NOW = 1_800_000_000.0


class FakeClock:
    """Injected Unix clock for the clients (never slept on)."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def oauth() -> OAuthConfig:
    return OAuthConfig(
        client_id="roomkey", client_secret=CLIENT_SECRET, redirect_uri="http://127.0.0.1:8765/cb"
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> MemoryTokenStore:
    return MemoryTokenStore(
        Token(access_token=ACCESS, refresh_token=REFRESH, expires=NOW + 3600, token_type="Bearer")
    )


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=API, assert_all_called=False) as router:
        yield router
