"""Outgoing events as Standard Webhooks: endpoints, fan-out, signed deliveries with retries.

* **Events**: every stored lock event (``lock.event``) and every opened alert
  (``alert.opened``); an endpoint subscribes to some or all (``webhook.test`` pings on demand).
* **Fan-out** (:meth:`WebhookWorker.fan_out`): one replica at a time (lease
  ``web.webhooks.fanout``) reads new rows past a cursor kept in the ``kv`` table and creates a
  delivery per subscribed endpoint. Rows are taken once ``settle`` seconds old, in id order,
  stopping at the first younger row, so a transaction committing late is not skipped.
* **Delivery** (:meth:`WebhookWorker.deliver_due`): due deliveries are claimed (row claims:
  replicas never send one twice), signed with the endpoint's ``whsec_`` secret by the
  ``standardwebhooks`` library (``webhook-id`` stable across retries, ``webhook-timestamp``
  the attempt's wall-clock time) and POSTed without following redirects. 2xx is success; 410
  disables the endpoint; anything else is retried on a bounded schedule (Standard Webhooks'
  example, ~75 h; ``Retry-After`` is honoured up to a day), then the delivery ends ``failed``.
  Every attempt is logged (``web_webhook_attempts``) and shown in the dashboard.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from standardwebhooks import Webhook

from roomkey.service.clock import utc_now
from roomkey.service.crypto import SecretBox, SecretKeyError
from roomkey.service.db.claims import claim_rows
from roomkey.service.db.kv import kv_get, kv_set
from roomkey.service.db.leases import try_acquire_lease
from roomkey.service.db.models import Alert, LockEvent, RoomLock
from roomkey.service.runtime import Service, Worker

from .models import DeliveryState, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from .schemas import WebhookEndpointIn
from .settings import WebSettings

__all__ = [
    "EVENT_TYPES",
    "WebhookError",
    "WebhookWorker",
    "create_endpoint",
    "generate_secret",
    "retry_delivery",
    "send_test_event",
    "set_endpoint_enabled",
    "sign_headers",
    "validate_target",
]

log = logging.getLogger(__name__)

EVENT_TYPES = ("lock.event", "alert.opened")
TEST_EVENT = "webhook.test"
FANOUT_LEASE = "web.webhooks.fanout"
CURSOR_EVENTS = "web.webhooks.cursor.lock_events"
CURSOR_ALERTS = "web.webhooks.cursor.alerts"
BATCH = 200
MAX_RETRY_AFTER = 86400.0


class WebhookError(ValueError):
    """An endpoint could not be created as asked."""


def generate_secret() -> str:
    """A new ``whsec_`` signing secret (32 random bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def validate_target(url: str, *, allow_private: bool) -> str:
    """An endpoint URL: http(s), a host, no credentials; private addresses only if allowed."""
    text = url.strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        raise WebhookError("not a valid URL") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise WebhookError("the URL must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise WebhookError("the URL must not carry credentials")
    try:
        _ = parts.port
    except ValueError:
        raise WebhookError("the URL has an invalid port") from None
    if not allow_private:
        host = parts.hostname
        if host == "localhost" or host.endswith(".localhost"):
            raise WebhookError("private targets are not allowed")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None and not address.is_global:
            raise WebhookError("private targets are not allowed")
    return text


def _box(service: Service) -> SecretBox:
    if service.secret_box is not None:
        return service.secret_box
    try:
        service.secret_box = SecretBox.from_env()
    except SecretKeyError:
        raise WebhookError("set ROOMKEY_SECRET_KEY to store webhook secrets") from None
    return service.secret_box


def _check_types(types: Sequence[str]) -> list[str]:
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise WebhookError(f"unknown event type(s): {', '.join(t[:40] for t in unknown)}")
    return sorted(set(types))


async def create_endpoint(
    service: Service, spec: WebhookEndpointIn, settings: WebSettings
) -> tuple[WebhookEndpoint, str]:
    """Store a new endpoint; returns it and its signing secret (shown once)."""
    url = validate_target(spec.url, allow_private=settings.webhook_allow_private_targets)
    types = _check_types(spec.event_types)
    secret = generate_secret()
    now = utc_now(service.clock)
    async with service.session_factory() as session, session.begin():
        if not await _any_enabled(session):
            # The first endpoint hears events from now on, not the history since the cursors
            # last moved (the fan-out skips work while no endpoint is enabled).
            await _reset_cursors(session, now)
        row = WebhookEndpoint(
            url=url,
            description=spec.description.strip(),
            secret_enc=_box(service).encrypt(secret),
            event_types=types,
            enabled=True,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        await session.flush()
    return row, secret


async def set_endpoint_enabled(
    session: AsyncSession, endpoint_id: int, enabled: bool, *, now: datetime, by: str
) -> bool:
    """Enable or disable an endpoint. Enabling the only one restarts the event cursors, so it
    hears events from now on."""
    if enabled and not await _any_enabled(session):
        await _reset_cursors(session, now)
    result = await session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(
            enabled=enabled,
            disabled_reason=None if enabled else f"disabled by {by}"[:200],
            updated_at=now,
        )
    )
    return bool(getattr(result, "rowcount", 0))


async def retry_delivery(session: AsyncSession, delivery_id: int, *, now: datetime) -> bool:
    """Send a finished (or waiting) delivery again now, with a fresh retry schedule."""
    result = await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id)
        .values(
            state=DeliveryState.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            finished_at=None,
            claim_owner=None,
            claim_until=None,
        )
    )
    return bool(getattr(result, "rowcount", 0))


async def send_test_event(session: AsyncSession, endpoint_id: int, *, now: datetime) -> bool:
    endpoint = await session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        return False
    _queue(
        session,
        endpoint,
        f"msg_test{secrets.token_hex(8)}",
        TEST_EVENT,
        {"message": "roomkey test event"},
        now,
    )
    return True


def sign_headers(secret: str, message_id: str, body: str, *, at: float) -> dict[str, str]:
    """Standard Webhooks headers for ``body`` (signed with the library's own signer)."""
    stamp = datetime.fromtimestamp(int(at), tz=UTC)
    signature = Webhook(secret).sign(message_id, stamp, body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at)),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": "roomkey-webhooks/1",
    }


def _envelope(event_type: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": event_type, "timestamp": at.isoformat(), "data": data}


def _queue(
    session: AsyncSession,
    endpoint: WebhookEndpoint,
    message_id: str,
    event_type: str,
    data: dict[str, Any],
    now: datetime,
) -> None:
    session.add(
        WebhookDelivery(
            endpoint_id=endpoint.id,
            message_id=message_id,
            event_type=event_type,
            payload=_envelope(event_type, now, data),
            state=DeliveryState.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


async def _any_enabled(session: AsyncSession) -> bool:
    found = await session.execute(
        select(WebhookEndpoint.id).where(WebhookEndpoint.enabled.is_(True)).limit(1)
    )
    return found.first() is not None


async def _reset_cursors(session: AsyncSession, now: datetime) -> None:
    for key, model in ((CURSOR_EVENTS, LockEvent), (CURSOR_ALERTS, Alert)):
        newest = (await session.execute(select(func.max(model.id)))).scalar_one_or_none()
        await kv_set(session, key, int(newest or 0), now=now)


def _event_data(row: LockEvent, rooms: list[int]) -> dict[str, Any]:
    return {
        "id": row.id,
        "lock_id": row.lock_id,
        "rooms": rooms,
        "kind": row.kind,
        "event_type": row.event_type,
        "bolt_state": row.bolt_state,
        "source": row.source.value,
        "occurred_at": row.occurred_at.isoformat() if row.occurred_at else None,
        "received_at": row.received_at.isoformat(),
        "command_id": row.command_id,
        "reservation_id": row.reservation_id,
    }


def _alert_data(row: Alert) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "lock_id": row.lock_id,
        "room_id": row.room_id,
        "message": row.message,
        "created_at": row.created_at.isoformat(),
    }


class WebhookWorker:
    """Fans events out to endpoints and delivers them; one pass = :meth:`step`."""

    def __init__(
        self,
        service: Service,
        settings: WebSettings,
        *,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.http_client = http_client
        self.owner = f"{service.instance_id}:webhooks"

    async def step(self) -> float | None:
        await self.fan_out()
        await self.deliver_due()
        return await self.next_delay()

    # -- fan-out -------------------------------------------------------------------------
    async def fan_out(self) -> int:
        """Create deliveries for new events; returns how many were created."""
        service = self.service
        now = utc_now(service.clock)
        cutoff = now - timedelta(seconds=self.settings.webhook_settle_seconds)
        created = 0
        async with service.session_factory() as session:
            if not await _any_enabled(session):
                return 0  # nothing to do and nothing written (cursors restart with an endpoint)
        async with service.session_factory() as session, session.begin():
            lease = timedelta(seconds=60)
            if not await try_acquire_lease(
                session, FANOUT_LEASE, owner=self.owner, now=now, ttl=lease
            ):
                return 0
            endpoints = list(
                (
                    await session.execute(
                        select(WebhookEndpoint).where(WebhookEndpoint.enabled.is_(True))
                    )
                ).scalars()
            )
            created += await self._fan_events(session, endpoints, now, cutoff)
            created += await self._fan_alerts(session, endpoints, now, cutoff)
        return created

    async def _cursor(self, session: AsyncSession, key: str, model: Any, now: datetime) -> int:
        value = await kv_get(session, key)
        if isinstance(value, int):
            return value
        start = (await session.execute(select(func.max(model.id)))).scalar_one_or_none() or 0
        await kv_set(session, key, int(start), now=now)
        return int(start)

    async def _fan_events(
        self,
        session: AsyncSession,
        endpoints: list[WebhookEndpoint],
        now: datetime,
        cutoff: datetime,
    ) -> int:
        cursor = await self._cursor(session, CURSOR_EVENTS, LockEvent, now)
        rows = (
            await session.execute(
                select(LockEvent).where(LockEvent.id > cursor).order_by(LockEvent.id).limit(BATCH)
            )
        ).scalars()
        created = 0
        last = cursor
        rooms_of: dict[str, list[int]] | None = None
        for row in rows:
            if row.received_at > cutoff:
                break
            last = row.id
            targets = [e for e in endpoints if not e.event_types or "lock.event" in e.event_types]
            if not targets:
                continue
            if rooms_of is None:
                rooms_of = {}
                for room_id, lock_id in await session.execute(
                    select(RoomLock.room_id, RoomLock.lock_id)
                ):
                    rooms_of.setdefault(lock_id, []).append(room_id)
            data = _event_data(row, sorted(rooms_of.get(row.lock_id or "", [])))
            for endpoint in targets:
                _queue(session, endpoint, f"msg_lockevent{row.id}", "lock.event", data, now)
                created += 1
        if last != cursor:
            await kv_set(session, CURSOR_EVENTS, last, now=now)
        return created

    async def _fan_alerts(
        self,
        session: AsyncSession,
        endpoints: list[WebhookEndpoint],
        now: datetime,
        cutoff: datetime,
    ) -> int:
        cursor = await self._cursor(session, CURSOR_ALERTS, Alert, now)
        rows = (
            await session.execute(
                select(Alert).where(Alert.id > cursor).order_by(Alert.id).limit(BATCH)
            )
        ).scalars()
        created = 0
        last = cursor
        for row in rows:
            if row.created_at > cutoff:
                break
            last = row.id
            for endpoint in endpoints:
                if endpoint.event_types and "alert.opened" not in endpoint.event_types:
                    continue
                _queue(
                    session, endpoint, f"msg_alert{row.id}", "alert.opened", _alert_data(row), now
                )
                created += 1
        if last != cursor:
            await kv_set(session, CURSOR_ALERTS, last, now=now)
        return created

    # -- delivery ------------------------------------------------------------------------
    async def deliver_due(self, *, limit: int = 20) -> int:
        """Send due deliveries once each; returns how many attempts were made."""
        service = self.service
        now = utc_now(service.clock)
        lease = timedelta(seconds=self.settings.webhook_timeout_seconds * 2 + 30)
        async with service.session_factory() as session, session.begin():
            claimed = await claim_rows(
                session,
                WebhookDelivery,
                owner=self.owner,
                now=now,
                lease=lease,
                limit=limit,
                where=[
                    WebhookDelivery.state == DeliveryState.PENDING.value,
                    WebhookDelivery.next_attempt_at <= now,
                ],
                order_by=[WebhookDelivery.next_attempt_at],
            )
            jobs: list[tuple[int, str, str, dict[str, Any], int, WebhookEndpoint | None]] = []
            for row in claimed:
                endpoint = await session.get(WebhookEndpoint, row.endpoint_id)
                jobs.append(
                    (row.id, row.message_id, row.event_type, row.payload, row.attempts, endpoint)
                )
        if not jobs:
            return 0
        client = self.http_client or httpx.AsyncClient(follow_redirects=False)
        try:
            for delivery_id, message_id, _type, payload, attempts, endpoint in jobs:
                await self._attempt(client, delivery_id, message_id, payload, attempts, endpoint)
        finally:
            if self.http_client is None:
                await client.aclose()
        return len(jobs)

    async def _attempt(
        self,
        client: httpx.AsyncClient,
        delivery_id: int,
        message_id: str,
        payload: dict[str, Any],
        attempts: int,
        endpoint: WebhookEndpoint | None,
    ) -> None:
        service = self.service
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        started = time.perf_counter()
        if endpoint is None or not endpoint.enabled:
            error = "endpoint disabled or deleted"
        else:
            body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
            try:
                secret = _box(service).decrypt(endpoint.secret_enc)
                headers = sign_headers(secret, message_id, body, at=self.settings.wall())
                response = await client.post(
                    endpoint.url,
                    content=body.encode(),
                    headers=headers,
                    timeout=self.settings.webhook_timeout_seconds,
                    follow_redirects=False,
                )
                status = response.status_code
                retry_after = _retry_after(response.headers.get("retry-after"))
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            except Exception as exc:  # a secret we cannot decrypt, a bad URL, ...
                error = f"{type(exc).__name__}"
                log.warning("webhook delivery %s could not be attempted: %s", delivery_id, error)
        duration = int((time.perf_counter() - started) * 1000)
        now = utc_now(service.clock)
        attempt_no = attempts + 1
        async with service.session_factory() as session, session.begin():
            session.add(
                WebhookAttempt(
                    delivery_id=delivery_id,
                    at=now,
                    status_code=status,
                    error=error,
                    duration_ms=duration,
                )
            )
            values: dict[str, Any] = {
                "attempts": attempt_no,
                "last_attempt_at": now,
                "last_status": status,
                "last_error": error if error else (f"HTTP {status}" if status else None),
                "claim_owner": None,
                "claim_until": None,
            }
            if status is not None and 200 <= status < 300:
                values.update(
                    state=DeliveryState.SUCCEEDED.value,
                    finished_at=now,
                    next_attempt_at=None,
                    last_error=None,
                )
            elif status == 410 or endpoint is None or not endpoint.enabled:
                values.update(
                    state=DeliveryState.FAILED.value, finished_at=now, next_attempt_at=None
                )
                if status == 410 and endpoint is not None:
                    await session.execute(
                        update(WebhookEndpoint)
                        .where(WebhookEndpoint.id == endpoint.id)
                        .values(enabled=False, disabled_reason="answered 410 Gone", updated_at=now)
                    )
            else:
                schedule = self.settings.webhook_schedule
                if attempt_no >= len(schedule):
                    values.update(
                        state=DeliveryState.FAILED.value, finished_at=now, next_attempt_at=None
                    )
                else:
                    wait = schedule[attempt_no]
                    if retry_after is not None:
                        wait = max(wait, retry_after)
                    values.update(next_attempt_at=now + timedelta(seconds=wait))
            await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id, WebhookDelivery.claim_owner == self.owner)
                .values(**values)
            )

    async def next_delay(self) -> float | None:
        """Seconds until the next delivery is due (None: nothing waiting; the worker's
        interval then paces the fan-out)."""
        now = utc_now(self.service.clock)
        async with self.service.session_factory() as session:
            due = (
                await session.execute(
                    select(func.min(WebhookDelivery.next_attempt_at)).where(
                        WebhookDelivery.state == DeliveryState.PENDING.value
                    )
                )
            ).scalar_one_or_none()
        if due is None:
            return None
        return max(0.0, (due - now).total_seconds())

    def worker(self, *, interval: float = 10.0) -> Worker:
        """A supervisor worker running :meth:`step`."""
        return Worker("web-webhooks", self.step, interval=interval)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if seconds != seconds or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER)
