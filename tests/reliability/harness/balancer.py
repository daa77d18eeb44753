"""A small round-robin HTTP load balancer on loopback, in front of several roomkey replicas
(as a venue would run them behind nginx or a cloud load balancer). A replica that refuses
the connection is skipped; the request goes to the next one."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import httpx


class Balancer:
    def __init__(self, backends: Callable[[], list[str]]) -> None:
        self.backends = backends
        self._turn = itertools.count()
        self.client = httpx.AsyncClient(timeout=15.0)
        self.forwarded = 0
        self.failovers = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"] + (("?" + scope["query_string"].decode()) if scope["query_string"]
                                else "")
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k != b"host"]
        live = self.backends()
        start = next(self._turn)
        response = None
        for i in range(len(live)):
            url = live[(start + i) % len(live)]
            try:
                response = await self.client.request(
                    scope["method"], url + path, headers=headers, content=body
                )
                break
            except httpx.ConnectError:
                self.failovers += 1
                continue
            except httpx.HTTPError:
                break  # the request may have reached the replica: never replay it
        if response is None:
            await send({"type": "http.response.start", "status": 502, "headers": []})
            await send({"type": "http.response.body", "body": b"no replica answered"})
            return
        self.forwarded += 1
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [
                    (k.encode(), v.encode()) for k, v in response.headers.items()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.content})

    async def aclose(self) -> None:
        await self.client.aclose()
