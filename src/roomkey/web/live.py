"""Live updates over server-sent events: ``GET /live`` (session auth).

The stream polls a cheap fingerprint of the database (newest ids, version sums, counts) every
``live_poll_seconds`` of wall-clock time and sends ``event: change`` naming what changed; the
page script then re-fetches its main section. Polling the shared database (rather than an
in-process bus) makes it work with several replicas behind a load balancer.

Each event carries the fingerprint's digest as its ``id``; a stream ends by itself after
``live_max_seconds`` (so a server shutting down never waits long for open dashboards) and the
browser reconnects with ``Last-Event-ID``: a digest that no longer matches is announced at once,
so nothing that changed in between is missed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select

from roomkey.service.db.models import (
    Alert,
    AuditEntry,
    Command,
    DoorAction,
    Lock,
    LockEvent,
    LockmeMessage,
    Reservation,
)
from roomkey.service.runtime import Service

from .auth import PageUser, web_state
from .models import WebhookDelivery
from .settings import WebSettings

__all__ = ["change_stream", "fingerprint", "router"]

router = APIRouter(include_in_schema=False)


def _q(*columns: Any) -> Any:
    return select(*columns).scalar_subquery()


async def fingerprint(service: Service) -> dict[str, str]:
    """What the pages show, summarised: a changed value means a page may be stale."""
    parts = {
        "bookings": (_q(func.count(Reservation.id)), _q(func.max(Reservation.updated_at))),
        "plan": (_q(func.count(DoorAction.key)), _q(func.sum(DoorAction.version))),
        "commands": (_q(func.count(Command.id)), _q(func.sum(Command.version))),
        "events": (_q(func.max(LockEvent.id)), _q(func.max(Lock.state_updated_at))),
        "alerts": (
            _q(func.max(Alert.id)),
            select(func.count(Alert.id)).where(Alert.acknowledged_at.is_(None)).scalar_subquery(),
        ),
        "messages": (
            _q(func.count(LockmeMessage.message_id)),
            _q(func.sum(LockmeMessage.attempts)),
        ),
        "audit": (_q(func.max(AuditEntry.id)), _q(func.count(AuditEntry.id))),
        "webhooks": (_q(func.count(WebhookDelivery.id)), _q(func.sum(WebhookDelivery.attempts))),
    }
    columns = [col for pair in parts.values() for col in pair]
    async with service.session_factory() as session:
        row = (await session.execute(select(*columns))).one()
    out: dict[str, str] = {}
    for i, name in enumerate(parts):
        out[name] = f"{row[2 * i]}|{row[2 * i + 1]}"
    return out


def _digest(fp: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:24]


async def change_stream(
    service: Service,
    settings: WebSettings,
    disconnected: Callable[[], Awaitable[bool]],
    *,
    last_event_id: str | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> AsyncIterator[str]:
    """SSE text: ``retry`` and the current digest first, then a ``change`` event whenever the
    fingerprint moves, comment lines as keep-alive; ends after ``live_max_seconds``."""
    started = monotonic()
    last = await fingerprint(service)
    digest = _digest(last)
    if last_event_id and last_event_id != digest:
        missed = json.dumps({"changed": ["*"]})
        yield f"retry: 3000\nid: {digest}\nevent: change\ndata: {missed}\n\n"
    else:
        yield f"retry: 3000\nid: {digest}\n\n"
    quiet = 0.0
    while not await disconnected():
        if monotonic() - started >= settings.live_max_seconds:
            return
        await sleep(settings.live_poll_seconds)
        quiet += settings.live_poll_seconds
        current = await fingerprint(service)
        if current != last:
            changed = sorted(k for k in current if current[k] != last.get(k))
            data = json.dumps({"changed": changed})
            yield f"id: {_digest(current)}\nevent: change\ndata: {data}\n\n"
            quiet = 0.0
        elif quiet >= settings.live_keepalive_seconds:
            yield ": keep-alive\n\n"
            quiet = 0.0
        last = current


@router.get("/live", name="web:live")
async def live(request: Request, user: PageUser) -> StreamingResponse:
    state = web_state(request)
    return StreamingResponse(
        change_stream(
            state.service,
            state.settings,
            request.is_disconnected,
            last_event_id=request.headers.get("last-event-id", "")[:64] or None,
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
