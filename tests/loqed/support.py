"""Helpers shared by the LOQED SDK tests (sync/async parity, mock transports)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import httpx

from roomkey.loqed import (
    AppApiClient,
    AsyncAppApiClient,
    AsyncBridgeClient,
    AsyncCloudClient,
    BridgeClient,
    CloudClient,
)

KEY_SECRET = "SGFsbG8gd2VyZWxk"  # "Hallo wereld" (HA fixture dummy)
BRIDGE_KEY = "Ym9uam91ciBtb25kZQ=="  # "bonjour monde"
TS = 1_700_000_000
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.secret-token-payload.sig"
API_TOKEN = "app-api-token-NEVER-LOG-123"
LOCK_ID = "Yq1gK4oeE9KWe0ByxjX2"
NIGHT_LOCK_B64 = "AAAAAAAAAAACBwAAAABlU/EAUTwY3s6dLYU3aJaH1s++qSku8HERbL7hApizYmPXKfoBAQM="

Handler = Callable[[httpx.Request], httpx.Response]


class FakeClock:
    """Injected Unix clock (never slept on)."""

    def __init__(self, now: float = TS) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder:
    """A MockTransport handler that records requests and answers from a script."""

    def __init__(self, *responses: httpx.Response | Exception | Handler) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item: Any = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(item, Exception):
            raise item
        if callable(item) and not isinstance(item, httpx.Response):
            item = item(request)
        # A fresh copy each time: one Response object cannot serve sync and async clients.
        return httpx.Response(item.status_code, headers=item.headers, content=item.content)


def http_client(flavour: str, handler: Handler) -> httpx.Client | httpx.AsyncClient:
    transport = httpx.MockTransport(handler)
    if flavour == "sync":
        return httpx.Client(transport=transport)
    return httpx.AsyncClient(transport=transport)


def make_bridge(flavour: str, handler: Handler, **kwargs: Any) -> Any:
    kwargs.setdefault("key_secret", KEY_SECRET)
    kwargs.setdefault("local_key_id", 1)
    kwargs.setdefault("bridge_key", BRIDGE_KEY)
    kwargs.setdefault("clock", FakeClock())
    cls = BridgeClient if flavour == "sync" else AsyncBridgeClient
    base = kwargs.pop("base_url", "http://10.0.0.5")
    return cls(base, http_client=http_client(flavour, handler), **kwargs)


def make_cloud(flavour: str, handler: Handler, **kwargs: Any) -> Any:
    kwargs.setdefault("clock", FakeClock())
    cls = CloudClient if flavour == "sync" else AsyncCloudClient
    token = kwargs.pop("token", TOKEN)
    return cls(token, http_client=http_client(flavour, handler), **kwargs)


def make_app(flavour: str, handler: Handler, **kwargs: Any) -> Any:
    kwargs.setdefault("clock", FakeClock())
    kwargs.setdefault("key_secret", KEY_SECRET)
    kwargs.setdefault("local_key_id", 1)
    cls = AppApiClient if flavour == "sync" else AsyncAppApiClient
    return cls(API_TOKEN, LOCK_ID, http_client=http_client(flavour, handler), **kwargs)


def make_app_from_urls(flavour: str, handler: Handler, urls: list[str], **kwargs: Any) -> Any:
    kwargs.setdefault("clock", FakeClock())
    cls = AppApiClient if flavour == "sync" else AsyncAppApiClient
    return cls.from_urls(*urls, http_client=http_client(flavour, handler), **kwargs)


async def call(client: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call a sync or async client method and return its result."""
    result = getattr(client, name)(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def json_response(data: Any, status: int = 200, **kwargs: Any) -> httpx.Response:
    return httpx.Response(status, json=data, **kwargs)
