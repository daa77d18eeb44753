"""Outgoing Standard Webhooks: door events and alerts reach a receiver, signed so that the
``standardwebhooks`` library's own verifier accepts them; failures are retried on a bounded
schedule, 410 disables the endpoint, and every attempt is in the delivery log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from web_harness import ADMIN, WebStack, make_stack

from roomkey.service.alerts import AlertKind, raise_alert
from roomkey.service.clock import utc_now
from roomkey.service.crypto import SecretBox
from roomkey.service.executor import Executor, context_for
from roomkey.web import WebSettings
from roomkey.web.models import WebhookDelivery, WebhookEndpoint
from roomkey.web.webhooks import WebhookError, WebhookWorker, validate_target


@dataclass
class Receiver:
    """A receiving app: records each request and answers with the next scripted status."""

    statuses: list[int] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    seen: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)

    async def hook(self, request: Request) -> Response:
        self.seen.append((await request.body(), dict(request.headers)))
        status = self.statuses.pop(0) if self.statuses else 204
        return Response(status_code=status, headers=self.headers if status >= 400 else None)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
async def hooked(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path, receiver: Receiver
) -> AsyncIterator[tuple[WebStack, WebhookWorker]]:
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=receiver.app()), base_url="http://receiver.test"
    )
    settings = WebSettings(webhook_settle_seconds=0.0, webhook_schedule=(0.0, 5.0, 60.0))
    stack = await make_stack(engine, secret_box, tmp_path, settings=settings)
    worker = WebhookWorker(stack.service, settings, http_client=client)
    await worker.fan_out()  # the first pass sets the cursors: earlier history is not replayed
    try:
        yield stack, worker
    finally:
        await stack.close()
        await client.aclose()


async def _endpoint(stack: WebStack, **body: Any) -> dict[str, Any]:
    api = stack.client(token=stack.tokens["admin"])
    response = await api.post(
        "/api/v1/webhooks/endpoints", json={"url": "http://receiver.test/hook", **body}
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _door_events(stack: WebStack) -> None:
    api = stack.client(token=stack.tokens["admin"])
    assert (await api.post(f"/api/v1/rooms/{stack.room_id}/open")).status_code == 202
    executor = Executor(context_for(stack.service))
    try:
        for _ in range(12):
            await executor.run_once()
            await stack.clock.advance(1.0)
    finally:
        await executor.aclose()


async def _deliveries(stack: WebStack) -> list[WebhookDelivery]:
    async with stack.service.session_factory() as session:
        rows = await session.execute(select(WebhookDelivery).order_by(WebhookDelivery.id))
        return list(rows.scalars())


async def test_door_events_arrive_signed_and_verifiable(
    hooked: tuple[WebStack, WebhookWorker], receiver: Receiver
) -> None:
    stack, worker = hooked
    endpoint = await _endpoint(stack, event_types=["lock.event"])
    secret = endpoint["secret"]
    assert secret.startswith("whsec_")
    listed = (
        await stack.client(token=stack.tokens["admin"]).get("/api/v1/webhooks/endpoints")
    ).json()
    assert listed[0]["secret"] is None  # shown once, never again

    await _door_events(stack)
    created = await worker.fan_out()
    assert created >= 2
    assert await worker.deliver_due() == created
    assert len(receiver.seen) == created

    verifier = Webhook(secret)
    kinds = []
    for body, headers in receiver.seen:
        payload = verifier.verify(body, headers)
        assert payload["type"] == "lock.event"
        assert headers["webhook-id"].startswith("msg_lockevent")
        kinds.append(payload["data"]["kind"])
        assert payload["data"]["rooms"] == [stack.room_id]
    assert "state_changed" in kinds
    body, headers = receiver.seen[0]
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body.replace(b"lock", b"lack"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43).verify(body, headers)
    assert {d.state for d in await _deliveries(stack)} == {"succeeded"}


async def test_failed_delivery_is_retried_with_the_same_id_then_succeeds(
    hooked: tuple[WebStack, WebhookWorker], receiver: Receiver
) -> None:
    stack, worker = hooked
    endpoint = await _endpoint(stack, event_types=["alert.opened"])
    async with stack.service.session_factory() as session, session.begin():
        await raise_alert(
            session,
            AlertKind.LOW_BATTERY,
            subject="door-1",
            message="battery at 9%",
            now=utc_now(stack.clock),
            lock_id="door-1",
        )
    receiver.statuses = [500, 503]
    receiver.headers = {"Retry-After": "30"}
    await worker.fan_out()
    assert await worker.deliver_due() == 1
    [delivery] = await _deliveries(stack)
    assert delivery.state == "pending"
    assert delivery.attempts == 1
    assert delivery.last_status == 500
    assert await worker.deliver_due() == 0  # not due yet: 5 s, and Retry-After says 30 s
    await stack.clock.advance(30)
    assert await worker.deliver_due() == 1  # 503 this time
    await stack.clock.advance(60)
    assert await worker.deliver_due() == 1
    [delivery] = await _deliveries(stack)
    assert delivery.state == "succeeded"
    assert delivery.attempts == 3
    ids = {headers["webhook-id"] for _, headers in receiver.seen}
    assert len(ids) == 1  # stable across retries
    stamps = [headers["webhook-timestamp"] for _, headers in receiver.seen]
    assert all(s.isdigit() for s in stamps)
    payload = Webhook(endpoint["secret"]).verify(*receiver.seen[-1])
    assert payload["type"] == "alert.opened"
    assert payload["data"]["kind"] == "low_battery"

    log = (
        await stack.client(token=stack.tokens["viewer"]).get("/api/v1/webhooks/deliveries")
    ).json()
    assert [a["status_code"] for a in log[0]["attempt_log"]] == [500, 503, 204]
    page = stack.client()
    await stack.login(page, ADMIN)
    html = (await page.get("/webhooks")).text
    assert 'data-testid="delivery-row" data-state="succeeded"' in html


async def test_retries_are_bounded_and_gone_disables_the_endpoint(
    hooked: tuple[WebStack, WebhookWorker], receiver: Receiver
) -> None:
    stack, worker = hooked
    await _endpoint(stack)
    async with stack.service.session_factory() as session, session.begin():
        now = utc_now(stack.clock)
        await raise_alert(
            session,
            AlertKind.LOCK_OFFLINE,
            subject="door-1",
            message="offline",
            now=now,
            lock_id="door-1",
        )
    receiver.statuses = [500, 500, 500, 500]
    await worker.fan_out()
    for _ in range(5):
        await worker.deliver_due()
        await stack.clock.advance(61)
    [delivery] = await _deliveries(stack)
    assert delivery.state == "failed"
    assert delivery.attempts == 3

    # a manual "send again" gets a fresh schedule; the receiver now says 410 Gone
    admin = stack.client(token=stack.tokens["admin"])
    assert (await admin.post(f"/api/v1/webhooks/deliveries/{delivery.id}/retry")).status_code == 200
    receiver.statuses = [410]
    await worker.deliver_due()
    async with stack.service.session_factory() as session:
        endpoint = (await session.execute(select(WebhookEndpoint))).scalar_one()
    assert endpoint.enabled is False
    assert endpoint.disabled_reason == "answered 410 Gone"
    [delivery] = await _deliveries(stack)
    assert delivery.state == "failed"
    assert delivery.last_status == 410


async def test_unreachable_receiver_is_logged_and_retried(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    settings = WebSettings(webhook_settle_seconds=0.0)
    stack = await make_stack(engine, secret_box, tmp_path, settings=settings)
    try:
        worker = WebhookWorker(stack.service, settings, http_client=client)
        await worker.fan_out()
        await _endpoint(stack)
        async with stack.service.session_factory() as session, session.begin():
            await raise_alert(
                session,
                AlertKind.MOTOR_STALL,
                subject="door-1",
                message="stall",
                now=utc_now(stack.clock),
                lock_id="door-1",
            )
        await worker.fan_out()
        await worker.deliver_due()
        [delivery] = await _deliveries(stack)
        assert delivery.state == "pending"
        assert delivery.last_error == "ConnectError"
        assert delivery.next_attempt_at is not None
        delay = (delivery.next_attempt_at - utc_now(stack.clock)).total_seconds()
        assert delay == settings.webhook_schedule[1]
    finally:
        await stack.close()
        await client.aclose()


def test_target_validation_guards_against_ssrf() -> None:
    assert validate_target("https://example.com/hook", allow_private=False)
    for bad in ("ftp://example.com/x", "https://user:pw@example.com/", "not a url", "http://"):
        with pytest.raises(WebhookError):
            validate_target(bad, allow_private=True)
    for private in (
        "http://127.0.0.1:9/x",
        "http://10.1.2.3/",
        "http://localhost/",
        "http://[::1]/",
        "http://169.254.169.254/latest",
    ):
        with pytest.raises(WebhookError):
            validate_target(private, allow_private=False)
        assert validate_target(private, allow_private=True)


async def test_bad_endpoints_are_refused_with_a_typed_error(stack: WebStack) -> None:
    api = stack.client(token=stack.tokens["admin"])
    bad = await api.post(
        "/api/v1/webhooks/endpoints",
        json={"url": "http://receiver.test/hook", "event_types": ["door.exploded"]},
    )
    assert bad.status_code == 400
    assert json.loads(bad.text)["error"]["type"] == "bad_request"
    assert "door.exploded" in bad.json()["error"]["message"]


async def test_no_secret_token_or_password_reaches_the_logs(
    hooked: tuple[WebStack, WebhookWorker],
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    stack, worker = hooked
    endpoint = await _endpoint(stack)
    receiver.statuses = [500]
    async with stack.service.session_factory() as session, session.begin():
        await raise_alert(
            session,
            AlertKind.LOW_BATTERY,
            subject="door-1",
            message="low",
            now=utc_now(stack.clock),
            lock_id="door-1",
        )
    await worker.fan_out()
    await worker.deliver_due()
    page = stack.client()
    await stack.login(page, (ADMIN[0], "not-the-password-xyz"))
    await stack.login(page, ADMIN)
    text = caplog.text + repr(await _deliveries(stack))
    for secret in (endpoint["secret"], *stack.tokens.values(), ADMIN[1], "not-the-password-xyz"):
        assert secret not in text
    assert endpoint["secret"][6:] not in text  # not even the base64 part


async def test_two_replicas_never_send_a_delivery_twice(
    hooked: tuple[WebStack, WebhookWorker], receiver: Receiver
) -> None:
    stack, worker = hooked
    await _endpoint(stack)
    async with stack.service.session_factory() as session, session.begin():
        for i in range(6):
            await raise_alert(
                session,
                AlertKind.COMMAND_FAILED,
                subject=f"lock-{i}",
                message="failed",
                now=utc_now(stack.clock),
                lock_id=f"lock-{i}",
            )
    other = WebhookWorker(stack.service, worker.settings, http_client=worker.http_client)
    other.owner = "web-b:webhooks"
    fanned = await asyncio.gather(worker.fan_out(), other.fan_out())
    assert sorted(fanned) == [0, 6]  # one replica holds the fan-out lease
    sent = await asyncio.gather(
        worker.deliver_due(limit=4), other.deliver_due(limit=4), worker.deliver_due(limit=4)
    )
    assert sum(sent) == 6
    ids = [headers["webhook-id"] for _, headers in receiver.seen]
    assert len(ids) == len(set(ids)) == 6


async def test_history_before_an_endpoint_exists_is_not_replayed(
    hooked: tuple[WebStack, WebhookWorker], receiver: Receiver
) -> None:
    from roomkey.service.db.models import KVEntry

    stack, worker = hooked
    await _door_events(stack)  # events while nobody listens
    assert await worker.fan_out() == 0
    async with stack.service.session_factory() as session:
        assert (await session.execute(select(KVEntry))).scalars().all() == []  # no writes
    endpoint = await _endpoint(stack)
    assert await worker.fan_out() == 0  # the old events are not sent to the new endpoint
    await _door_events(stack)
    assert await worker.fan_out() > 0
    await worker.deliver_due()
    verifier = Webhook(endpoint["secret"])
    assert all(verifier.verify(body, headers) for body, headers in receiver.seen)
