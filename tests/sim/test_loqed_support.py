"""Helpers for the LOQED simulator tests (no tests here): sign like a client, receive
webhooks, serve an ASGI app on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from roomkey.loqed.signing import (
    decode_key,
    encode_command_param,
    sign_command,
    webhook_create_hash,
    webhook_delete_hash,
    webhook_list_hash,
)
from roomkey.sim.clock import SimClock
from roomkey.sim.loqed import SimKey

T0 = 1_700_000_000.0


@dataclass
class Received:
    """One webhook that reached the receiver, with its raw bytes and header names as sent."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A webhook target: records every request; ``status`` decides the answer."""

    clock: SimClock | None = None
    calls: list[Received] = field(default_factory=list)
    status: int = 200

    @property
    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.calls.append(
                Received(
                    method=request.method,
                    path=request.url.path,
                    query=request.url.query,
                    headers={k.decode("latin-1"): v.decode("latin-1")
                             for k, v in request.scope["headers"]},
                    body=await request.body(),
                    at=self.clock.time() if self.clock else 0.0,
                )
            )
            return PlainTextResponse("ok", status_code=self.status)

        return Starlette(routes=[Route("/{path:path}", hook, methods=["POST", "GET"])])

    def event_types(self) -> list[Any]:
        return [json.loads(c.body).get("event_type") for c in self.calls]


@contextlib.asynccontextmanager
async def serve_app(app: Any) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on a free 127.0.0.1 port inside this loop; yields its URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):
            await task


TRIGGERS = (
    "trigger_state_changed_open",
    "trigger_state_changed_latch",
    "trigger_state_changed_night_lock",
    "trigger_state_changed_unknown",
    "trigger_state_goto_open",
    "trigger_state_goto_latch",
    "trigger_state_goto_night_lock",
    "trigger_battery",
    "trigger_online_status",
)


def command_url(
    key: SimKey, action: int, *, ts: float, prefix: str = "", encode_slash: bool = False
) -> str:
    signed = sign_command(key.secret, action=action, local_key_id=key.local_id, clock=lambda: ts)
    return f"{prefix}/to_lock?command_signed_base64=" + encode_command_param(
        signed, encode_slash=encode_slash
    )


def list_headers(bridge_key: str, ts: int, *, upper: bool = True) -> dict[str, str]:
    h = webhook_list_hash(decode_key(bridge_key), ts)
    return {"TIMESTAMP": str(ts), "HASH": h} if upper else {"timestamp": str(ts), "hash": h}


async def create_webhook(
    client: httpx.AsyncClient, bridge_key: str, url: str, flags: int = 511, *, ts: int,
    prefix: str = "",
) -> httpx.Response:
    body: dict[str, Any] = {"url": url}
    for bit, name in enumerate(TRIGGERS):
        body[name] = (flags >> bit) & 1
    headers = {
        "TIMESTAMP": str(ts),
        "HASH": webhook_create_hash(decode_key(bridge_key), ts, url, flags),
    }
    return await client.post(f"{prefix}/webhooks", json=body, headers=headers)


async def delete_webhook(
    client: httpx.AsyncClient, bridge_key: str, hook_id: int, *, ts: int, prefix: str = ""
) -> httpx.Response:
    headers = {
        "TIMESTAMP": str(ts),
        "HASH": webhook_delete_hash(decode_key(bridge_key), ts, hook_id),
    }
    return await client.delete(f"{prefix}/webhooks/{hook_id}", headers=headers)


def payload(body: bytes) -> dict[str, Any]:
    data = json.loads(body)
    assert isinstance(data, dict)
    return data


def now_int() -> int:
    return int(time.time())


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)
