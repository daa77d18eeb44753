"""LOQED event intake: bridge and cloud webhooks → stored events, lock state, command lifecycle.

Two receivers, mounted by ``create_app``:

* ``POST /hooks/loqed/bridge/{lock_id}`` — what a bridge sends. ``HASH``/``TIMESTAMP`` are
  verified on the raw body with that lock's bridge key (``[loqed] max_clock_skew_seconds``;
  0 disables the skew check). A missing ``TIMESTAMP`` (new gateway) is rejected with 400
  unless ``[loqed] accept_missing_timestamp`` is set. Bad or stale signatures get 401.
* ``POST /hooks/loqed/cloud/{secret}`` — what the LOQED backend sends (unsigned): the URL
  secret (``[service] loqed_webhook_secret``) is compared in constant time, 404 on mismatch.
  The lock is taken from ``?lock=<roomkey lock id>`` when the webhook URL carries it (the
  recommended registration), else from the payload's ``lock_id`` (LOQED id, or the numeric
  id once learned from an earlier ``?lock=`` delivery).

Both answer typed JSON errors (``{"error": {"type", "message"}}``), never 500 for bad input.

A receiver's duty is verify, store durably, answer: the event becomes a *receipt*
(:mod:`roomkey.service.loqed_receipt`; concurrent webhooks share one transaction and one
multi-row INSERT, committed before the 200) and is applied right after, off the request path,
in batches (:mod:`roomkey.service.loqed_apply`: duplicates dropped by the dedupe rules, lock
state, alerts, command lifecycle, reservation links). The answer is ``{"status": "stored",
"lock"}``; 503 ``storage_unavailable`` when the receipt could not be stored.
Rejected webhooks are logged as warnings, at most one per reason and lock every
:data:`WARN_EVERY` seconds (with a count of the ones held back).

The bridge receiver is the hot path: :class:`BridgeReceiver` serves it as a raw ASGI endpoint
that ``create_app`` tries before FastAPI's middleware and routing (:data:`FAST_RECEIVERS`); the
routed :func:`bridge_webhook` stays for other methods and mounts under a ``root_path``. Both
run the same checks (:func:`_bridge`) and give the same answers.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import Receive, Scope, Send

from roomkey.loqed import (
    BadSignatureError,
    InvalidPayloadError,
    InvalidRequestError,
    LockEvent,
    LoqedError,
    MissingTimestampError,
    StaleTimestampError,
    WebhookVerificationError,
    parse_event,
    verify_bridge_webhook,
)
from roomkey.service.db.kv import kv_get, kv_set
from roomkey.service.db.models import EventSource
from roomkey.service.executor import LoqedContext, context_for
from roomkey.service.loqed_receipt import (
    IngestResult,
    ingest_event,
    receipt_for,
    receive,
    receiver_for,
)
from roomkey.service.transports import BridgeTransport, CloudTransport, describe_error

__all__ = [
    "BRIDGE_PATH",
    "FAST_RECEIVERS",
    "MAX_BODY_BYTES",
    "WARN_EVERY",
    "BridgeReceiver",
    "IngestResult",
    "WebhookRegistration",
    "ingest_event",
    "register_webhooks",
    "router",
    "webhook_urls",
]

log = logging.getLogger(__name__)

router = APIRouter()

MAX_BODY_BYTES = 64 * 1024
"""Real events are ~150-600 bytes; anything far larger is refused (413)."""
NUMERIC_ID_KV = "loqed.numeric_lock_id."
WARN_EVERY = 10.0
"""Seconds between two warnings about rejected webhooks of one kind and lock."""


_warned: dict[str, tuple[float, int]] = {}


def _warn(ctx: LoqedContext, key: str, message: str, *args: object) -> None:
    """A rate-limited warning: at most one per ``key`` every :data:`WARN_EVERY` seconds."""
    now = ctx.clock.time()
    last, held = _warned.get(key, (None, 0))
    if last is not None and now - last < WARN_EVERY:
        _warned[key] = (last, held + 1)
        return
    if len(_warned) > 1024:
        _warned.clear()
    _warned[key] = (now, 0)
    if held:
        log.warning(message + " (%d more held back)", *args, held)
    else:
        log.warning(message, *args)


# --------------------------------------------------------------------------- HTTP

BRIDGE_PATH = "/hooks/loqed/bridge/"
_Answer = tuple[int, dict[str, Any]]
"""A status and the JSON body to answer with."""
_BodyReader = Callable[[], Awaitable[bytes | None]]


def _err(status: int, type_: str, message: str) -> _Answer:
    return status, {"error": {"type": type_, "message": message}}


def _respond(answer: _Answer) -> JSONResponse:
    return JSONResponse(answer[1], status_code=answer[0])


def _context(request: Request) -> LoqedContext | None:
    return _context_of(request.app)


def _context_of(app: Any) -> LoqedContext | None:
    state = getattr(app, "state", None)
    values = getattr(state, "_state", None)  # Starlette's State: a dict lookup, no exception
    if isinstance(values, dict):
        ctx = values.get("loqed")
        service = values.get("service")
    else:
        ctx = getattr(state, "loqed", None)
        service = getattr(state, "service", None)
    if isinstance(ctx, LoqedContext):
        return ctx
    if service is None:
        return None
    return context_for(service)


async def _read_body(request: Request) -> bytes | None:
    """The raw body, or None when it exceeds :data:`MAX_BODY_BYTES`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


_last_occurred: tuple[str, datetime | None] = ("", None)
"""The last ``TIMESTAMP`` header converted (a busy bridge sends many within one second)."""


def _occurred_at(headers: Mapping[str, str]) -> datetime | None:
    global _last_occurred
    value = headers.get("timestamp")
    if value is None:
        return None
    if value == _last_occurred[0]:
        return _last_occurred[1]
    if not value.strip().isdigit():
        return None
    try:
        at = datetime.fromtimestamp(int(value.strip()), tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    _last_occurred = (value, at)
    return at


async def _store(
    ctx: LoqedContext,
    lock_id: str | None,
    event: LockEvent,
    source: EventSource,
    occurred_at: datetime | None = None,
) -> _Answer:
    row = receipt_for(ctx, lock_id, event, source=source, occurred_at=occurred_at)
    try:
        await receive(ctx, row)
    except Exception:  # storage trouble is never the sender's fault: 503, it delivers again
        log.exception("could not store a LOQED %s event for lock %s", source.value, lock_id)
        return _err(503, "storage_unavailable", "the event could not be stored; retry later")
    return 200, IngestResult(False, lock_id).as_json()


async def _bridge(
    ctx: LoqedContext, lock_id: str, headers: Mapping[str, str], read_body: _BodyReader
) -> _Answer:
    """The bridge receiver's work, shared by the FastAPI route and :class:`BridgeReceiver`."""
    receiver = receiver_for(ctx)
    receiver.enter()
    try:
        return await _bridge_checked(ctx, lock_id, headers, read_body)
    finally:
        receiver.leave()


async def _bridge_checked(
    ctx: LoqedContext, lock_id: str, headers: Mapping[str, str], read_body: _BodyReader
) -> _Answer:
    lock_cfg = ctx.lock_config(lock_id)
    if lock_cfg is None or lock_cfg.bridge is None:
        _warn(ctx, "unknown-lock", "bridge webhook for unknown lock (or lock without a bridge)")
        return _err(404, "not_found", "no such lock with a bridge")
    body = await read_body()
    if body is None:
        return _err(413, "payload_too_large", f"bodies over {MAX_BODY_BYTES} bytes are refused")
    loqed = ctx.config.loqed
    try:
        verify_bridge_webhook(
            body,
            headers,
            bridge_key=lock_cfg.bridge.bridge_key.get_secret_value(),
            now=ctx.clock.time(),
            max_skew=loqed.max_clock_skew_seconds or None,
            accept_missing_timestamp=loqed.accept_missing_timestamp,
        )
    except MissingTimestampError:
        _warn(
            ctx,
            f"missing-ts:{lock_id}",
            "lock %s: bridge webhook without TIMESTAMP rejected (policy)",
            lock_id,
        )
        return _err(400, "missing_timestamp", "TIMESTAMP header missing and not accepted by policy")
    except StaleTimestampError:
        _warn(
            ctx,
            f"stale:{lock_id}",
            "lock %s: bridge webhook with a stale TIMESTAMP rejected",
            lock_id,
        )
        return _err(401, "stale_timestamp", "TIMESTAMP is outside the allowed clock skew")
    except BadSignatureError:
        _warn(ctx, f"hash:{lock_id}", "lock %s: bridge webhook with a bad HASH rejected", lock_id)
        return _err(401, "bad_signature", "HASH does not verify")
    except (WebhookVerificationError, InvalidRequestError):
        _warn(
            ctx, f"unverified:{lock_id}", "lock %s: bridge webhook could not be verified", lock_id
        )
        return _err(401, "unverified", "the webhook could not be verified")
    try:
        event = parse_event(body, source="bridge")
    except InvalidPayloadError as exc:
        return _err(400, "invalid_payload", str(exc))
    return await _store(ctx, lock_id, event, EventSource.BRIDGE, _occurred_at(headers))


@router.post("/hooks/loqed/bridge/{lock_id}", include_in_schema=False)
async def bridge_webhook(request: Request, lock_id: str) -> Response:
    """A webhook from the bridge of ``lock_id`` (roomkey's lock id)."""
    ctx = _context(request)
    if ctx is None:
        return _respond(_err(503, "not_ready", "the service is not ready"))
    headers = {k: v for k, v in reversed(request.headers.items())}  # the first of repeats
    return _respond(await _bridge(ctx, lock_id, headers, lambda: _read_body(request)))


class _Disconnected(Exception):
    """The client went away before its body arrived."""


class BridgeReceiver:
    """The bridge receiver as a raw ASGI endpoint (``create_app`` tries it before FastAPI's
    middleware and routing; same answers as the routed :func:`bridge_webhook`)."""

    def __init__(self, service: Any = None) -> None:
        self._service = service

    def match(self, scope: MutableMapping[str, Any]) -> bool:
        """A POST to ``/hooks/loqed/bridge/<lock id>``; sets ``path_params``."""
        path: str = scope["path"]
        if scope["method"] != "POST" or not path.startswith(BRIDGE_PATH):
            return False
        lock_id = path[len(BRIDGE_PATH) :]
        if not lock_id or "/" in lock_id:
            return False
        scope["path_params"] = {"lock_id": lock_id}
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = scope.get("app")
        ctx = _context_of(app) if app is not None else None
        if ctx is None and self._service is not None:
            ctx = context_for(self._service)
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        if ctx is None:
            answer = _err(503, "not_ready", "the service is not ready")
        else:
            lock_id = scope["path_params"]["lock_id"]
            try:
                answer = await _bridge(
                    ctx, lock_id, headers, lambda: _read_asgi_body(receive, headers)
                )
            except _Disconnected:
                return
        if answer[0] == 200 and answer[1].get("status") == "stored":
            lock = str(answer[1].get("lock"))
            encoded = _STORED_ANSWERS.get(lock)
            if encoded is None:
                encoded = _encode(answer)
                if len(_STORED_ANSWERS) < 4096:  # one per configured lock in practice
                    _STORED_ANSWERS[lock] = encoded
        else:
            encoded = _encode(answer)
        await send({"type": "http.response.start", "status": answer[0], "headers": encoded[0]})
        await send({"type": "http.response.body", "body": encoded[1]})


_Encoded = tuple[list[tuple[bytes, bytes]], bytes]
_STORED_ANSWERS: dict[str, _Encoded] = {}
"""The 200 answer of each lock, encoded once (the answer of every accepted webhook)."""


def _encode(answer: _Answer) -> _Encoded:
    body = json.dumps(answer[1], ensure_ascii=False, separators=(",", ":")).encode()
    headers = [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
    ]
    return headers, body


FAST_RECEIVERS = (BridgeReceiver,)
"""Raw ASGI shortcuts ``create_app`` tries before FastAPI (built with the service)."""


async def _read_asgi_body(receive: Receive, headers: Mapping[str, str]) -> bytes | None:
    declared = headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _secret_matches(given: str, expected: str | None) -> bool:
    if not expected:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


async def _cloud_lock(ctx: LoqedContext, event: LockEvent, hint: str | None) -> str | None:
    """Which configured lock a cloud event belongs to (see the module doc)."""
    if hint is not None and ctx.lock_config(hint) is not None:
        numeric = event.lock_id
        learned = receiver_for(ctx).learned  # what this process already stored: no write
        if numeric and numeric.isdigit() and learned.get(numeric) != hint:
            async with ctx.sessions() as session, session.begin():
                known = await kv_get(session, NUMERIC_ID_KV + numeric)
                if known != hint:
                    await kv_set(session, NUMERIC_ID_KV + numeric, hint, now=ctx.now())
            if len(learned) > 4096:
                learned.clear()
            learned[numeric] = hint
        return hint
    ref = event.lock_id
    if not ref:
        return None
    for lock in ctx.config.locks:
        if ref in (lock.id, lock.resolved_loqed_id):
            return lock.id
    async with ctx.sessions() as session:
        known = await kv_get(session, NUMERIC_ID_KV + ref[:64])
    return known if isinstance(known, str) and ctx.lock_config(known) is not None else None


@router.post("/hooks/loqed/cloud/{secret}", include_in_schema=False)
async def cloud_webhook(request: Request, secret: str) -> Response:
    """A webhook from the LOQED backend; the URL secret authenticates it."""
    ctx = _context(request)
    if ctx is None:
        return _respond(_err(503, "not_ready", "the service is not ready"))
    receiver = receiver_for(ctx)
    receiver.enter()
    try:
        return await _cloud(request, ctx, secret)
    finally:
        receiver.leave()


async def _cloud(request: Request, ctx: LoqedContext, secret: str) -> Response:
    expected = ctx.config.service.loqed_webhook_secret
    if not _secret_matches(secret, expected.get_secret_value() if expected else None):
        _warn(ctx, "cloud-secret", "LOQED cloud webhook with a wrong URL secret")
        return _respond(_err(404, "not_found", "Not Found"))
    body = await _read_body(request)
    if body is None:
        return _respond(
            _err(413, "payload_too_large", f"bodies over {MAX_BODY_BYTES} bytes are refused")
        )
    hints = request.query_params.getlist("lock")
    if len(hints) > 1:
        return _respond(_err(400, "invalid_lock", "give at most one lock parameter"))
    hint = hints[0] if hints else None
    if hint is not None and ctx.lock_config(hint) is None:
        return _respond(_err(404, "unknown_lock", "no such lock"))
    try:
        event = parse_event(body, source="cloud")
    except InvalidPayloadError as exc:
        return _respond(_err(400, "invalid_payload", str(exc)))
    try:
        lock_id = await _cloud_lock(ctx, event, hint)
    except SQLAlchemyError:
        log.exception("could not resolve the lock of a LOQED cloud event")
        return _respond(
            _err(503, "storage_unavailable", "the event could not be stored; retry later")
        )
    if lock_id is None:
        _warn(ctx, "cloud-unknown", "LOQED cloud event for an unknown lock stored without effects")
    return _respond(await _store(ctx, lock_id, event, EventSource.CLOUD))


# --------------------------------------------------------------------------- registration


@dataclass(frozen=True, slots=True)
class WebhookRegistration:
    """Whether one lock's webhook is registered on one surface (``error``: why not)."""

    lock_id: str
    surface: str
    ok: bool
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"lock": self.lock_id, "surface": self.surface, "ok": self.ok, "error": self.error}


def webhook_urls(ctx: LoqedContext, base_url: str) -> dict[str, dict[str, str]]:
    """The webhook URLs of every lock: ``{lock_id: {"bridge": url, "cloud": url}}``.

    The cloud URL embeds ``[service] loqed_webhook_secret``: treat it as a secret.
    """
    base = base_url.rstrip("/")
    secret = ctx.config.service.loqed_webhook_secret
    urls: dict[str, dict[str, str]] = {}
    for lock in ctx.config.locks:
        entry: dict[str, str] = {}
        if lock.bridge is not None:
            entry["bridge"] = f"{base}/hooks/loqed/bridge/{lock.id}"
        if lock.cloud is not None and secret is not None:
            entry["cloud"] = f"{base}/hooks/loqed/cloud/{secret.get_secret_value()}?lock={lock.id}"
        urls[lock.id] = entry
    return urls


async def register_webhooks(ctx: LoqedContext, base_url: str) -> list[WebhookRegistration]:
    """Make sure every lock's bridge and cloud send their events to this service.

    Idempotent: an identical registration is kept, never duplicated. Errors are reported per
    lock and surface (by error type only; URLs carry secrets).
    """
    report: list[WebhookRegistration] = []
    urls = webhook_urls(ctx, base_url)
    for lock in ctx.config.locks:
        wanted = urls.get(lock.id, {})
        for transport in ctx.cached_transports(lock.id):
            if isinstance(transport, BridgeTransport) and "bridge" in wanted:
                try:
                    await transport.client.ensure_webhook(wanted["bridge"])
                    report.append(WebhookRegistration(lock.id, "bridge", True))
                except LoqedError as exc:
                    failed = WebhookRegistration(lock.id, "bridge", False, describe_error(exc))
                    report.append(failed)
            elif isinstance(transport, CloudTransport) and "cloud" in wanted:
                try:
                    hooks = await transport.client.list_webhooks(transport.lock_id)
                    if not any(h.url == wanted["cloud"] for h in hooks):
                        await transport.client.create_webhook(transport.lock_id, wanted["cloud"])
                    report.append(WebhookRegistration(lock.id, "cloud", True))
                except LoqedError as exc:
                    failed = WebhookRegistration(lock.id, "cloud", False, describe_error(exc))
                    report.append(failed)
    for item in report:
        log.info(
            "lock %s: %s webhook %s",
            item.lock_id,
            item.surface,
            "registered" if item.ok else f"not registered ({item.error})",
        )
    return report
