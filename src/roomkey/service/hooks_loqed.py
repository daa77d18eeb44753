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

:func:`ingest_event` does the work for both, in one transaction serialised per lock: drop a
duplicate (equal to the lock's latest event within ``[loqed] dedupe_window_seconds``: cloud
and bridge copies of one event, cloud redeliveries), store the event (PII dropped unless
``[loqed] keep_event_pii``), fold it into the lock's live state, open/resolve lock alerts,
advance the command it belongs to (accepted / confirmed / failed: stalled) and link the event
to that command and to the reservation whose door window contains the moment.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from roomkey.loqed import (
    BadSignatureError,
    BoltState,
    EventKind,
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
from roomkey.service import commands as lc
from roomkey.service.alerts import apply_alert_changes, lock_alert_changes
from roomkey.service.db._sql import serialize_scope
from roomkey.service.db.commands import in_flight_commands, list_attempts
from roomkey.service.db.events import (
    PII_FIELDS,
    event_dedupe_key,
    link_event,
    record_event_if_new,
)
from roomkey.service.db.kv import kv_get, kv_set
from roomkey.service.db.models import EventSource, Lock
from roomkey.service.db.models import LockEvent as StoredEvent
from roomkey.service.db.reservations import reservation_for_lock_at
from roomkey.service.executor import (
    LoqedContext,
    command_ended,
    context_for,
    persist_transition,
    to_domain,
)
from roomkey.service.lock_state import apply_event, save_snapshot, snapshot_of
from roomkey.service.transports import BridgeTransport, CloudTransport, describe_error

__all__ = [
    "MAX_BODY_BYTES",
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
EXTRA_PII_FIELDS = frozenset({"value2", "value3", "key_account_e-mail"})
"""Cloud (IFTTT-style) fields that carry key names and e-mail addresses."""
_LIFECYCLE_KINDS = {
    EventKind.GO_TO_STATE: lc.EventKind.GO_TO_STATE,
    EventKind.STATE_CHANGED: lc.EventKind.STATE_CHANGED,
    EventKind.MOTOR_STALL: lc.EventKind.MOTOR_STALL,
}


def _error(status: int, type_: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message}}, status_code=status)


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What happened to one delivered event."""

    duplicate: bool
    event_id: int | None = None
    lock_id: str | None = None
    command_id: str | None = None
    command_state: str | None = None
    reservation_id: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "duplicate" if self.duplicate else "stored",
            "event_id": self.event_id,
            "lock": self.lock_id,
            "command_id": self.command_id,
            "command_state": self.command_state,
            "reservation_id": self.reservation_id,
        }


# --------------------------------------------------------------------------- storage hygiene


def _clean(value: Any, depth: int = 0) -> Any:
    """JSON any backend stores: no NUL or lone surrogates in strings, no NaN/∞, bounded depth."""
    if depth > 32:
        return None
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8")
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(_clean(str(k))): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v, depth + 1) for v in value]
    return _clean(str(value), depth)


def _stored_payload(event: LockEvent, keep_pii: bool) -> dict[str, Any]:
    raw = dict(event.raw)
    if not keep_pii:
        drop = PII_FIELDS | EXTRA_PII_FIELDS
        raw = {
            k: ({ik: iv for ik, iv in v.items() if ik not in drop} if isinstance(v, dict) else v)
            for k, v in raw.items()
            if k not in drop
        }
        if isinstance(raw.get("value1"), str):
            raw["value1"] = raw["value1"][:200]
    cleaned: dict[str, Any] = _clean(raw)
    return cleaned


def _dedupe_key(lock_id: str | None, event: LockEvent, event_type: str) -> str:
    base = event_dedupe_key(
        lock_id,
        event_type,
        event.bolt_state.value if event.bolt_state is not None else None,
        event.key_local_id,
    )
    if event.kind is EventKind.BATTERY:
        return f"{base}|b{event.battery_percentage}"[:256]
    if event.kind is EventKind.ONLINE:
        return f"{base}|o{event.online}"[:256]
    return base


# --------------------------------------------------------------------------- ingestion


async def ingest_event(
    ctx: LoqedContext,
    lock_id: str | None,
    event: LockEvent,
    *,
    source: EventSource,
    occurred_at: datetime | None = None,
) -> IngestResult:
    """Store one event and apply its effects (see the module doc). ``lock_id`` None stores
    an event no configured lock claims (kept for the record, no effects)."""
    received_at = ctx.now()
    loqed = ctx.config.loqed
    event_type = str(_clean(event.event_type))[:64]
    key_ids: dict[str, int | None] = {}
    if lock_id is not None:
        await ctx.transports(lock_id)  # picks up a learned cloud key slot, if any
        key_ids = ctx.key_ids(lock_id)
    ended = False
    window = timedelta(seconds=loqed.dedupe_window_seconds)
    payload = _stored_payload(event, loqed.keep_event_pii)
    dedupe = _dedupe_key(lock_id, event, event_type)
    async with ctx.sessions() as session, session.begin():
        lock = await _lock_row(session, lock_id)
        if source is EventSource.CLOUD and await _cloud_redelivery(
            session, lock_id, dedupe, payload, since=received_at - window
        ):
            return IngestResult(duplicate=True, lock_id=lock_id)
        stored = await record_event_if_new(
            session,
            lock_id=lock_id,
            source=source,
            event_type=event_type,
            kind=event.kind.value,
            received_at=received_at,
            window=window,
            raw=payload,
            bolt_state=event.bolt_state.value if event.bolt_state is not None else None,
            key_local_id=event.key_local_id,
            occurred_at=occurred_at,
            dedupe_key=dedupe,
        )
        if stored is None:
            return IngestResult(duplicate=True, lock_id=lock_id)
        if lock is None or lock_id is None:
            return IngestResult(duplicate=False, event_id=stored.id, lock_id=lock_id)
        before = snapshot_of(lock)
        after = apply_event(before, event)
        await save_snapshot(session, lock_id, after, now=received_at)
        changes = lock_alert_changes(before, after, event, low_battery=ctx.low_battery_percent)
        await apply_alert_changes(session, lock_id, changes, now=received_at)
        command_id, command_state = await _advance_command(
            session, lock_id, event, key_ids, before_state=before.bolt_state, now=received_at
        )
        reservation_id = await reservation_for_lock_at(session, lock_id, received_at)
        await link_event(session, stored.id, command_id=command_id, reservation_id=reservation_id)
        ended = command_state is not None and lc.CommandState(command_state).terminal
        result = IngestResult(
            duplicate=False,
            event_id=stored.id,
            lock_id=lock_id,
            command_id=command_id,
            command_state=command_state,
            reservation_id=reservation_id,
        )
    if ended:
        ctx.poke()
    log.info(
        "lock %s event %s (%s)%s",
        lock_id,
        event_type,
        source.value,
        f" → command {command_id} {command_state}" if command_id else "",
    )
    return result


async def _cloud_redelivery(
    session: AsyncSession,
    lock_id: str | None,
    dedupe: str,
    payload: dict[str, Any],
    *,
    since: datetime,
) -> bool:
    """True when the cloud already delivered this very payload within the window.

    LOQED's backend often delivers each event twice about 4 s apart; by then the lock may
    have sent another event (GO_TO, then STATE_CHANGED), so "equal to the latest event"
    alone would keep the second copy.
    """
    stmt = select(StoredEvent.raw).where(
        StoredEvent.lock_id.is_(None) if lock_id is None else StoredEvent.lock_id == lock_id,
        StoredEvent.source == EventSource.CLOUD,
        StoredEvent.dedupe_key == dedupe,
        StoredEvent.received_at > since,
    )
    return any(raw == payload for raw in (await session.execute(stmt.limit(20))).scalars())


async def _lock_row(session: AsyncSession, lock_id: str | None) -> Lock | None:
    if lock_id is None:
        return None
    await serialize_scope(session, f"lock-state:{lock_id}")
    stmt = select(Lock).where(Lock.id == lock_id).execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


async def _advance_command(
    session: AsyncSession,
    lock_id: str,
    event: LockEvent,
    key_ids: dict[str, int | None],
    *,
    before_state: BoltState | None,
    now: datetime,
) -> tuple[str | None, str | None]:
    """Feed a bolt event to the lock's in-flight commands; the one it moved (id, new state)."""
    kind = _LIFECYCLE_KINDS.get(event.kind)
    if kind is None:
        return None, None
    view = lc.LockEventView(
        kind=kind,
        state=lc.DoorState(event.bolt_state.value) if event.bolt_state is not None else None,
        key_local_id=event.key_local_id,
    )
    current = lc.DoorState(before_state.value) if before_state is not None else None
    for row in await in_flight_commands(session, lock_id):
        domain = to_domain(row, await list_attempts(session, row.id), key_ids)
        after = lc.on_lock_event(domain, view, now=now, current_state=current)
        if after.state is domain.state:
            continue
        detail = f"{event.event_type[:64]} (key {event.key_local_id})"
        if await persist_transition(session, domain, after, now=now, detail=detail):
            if after.state.terminal:
                await command_ended(session, after, now=now, detail=event.event_type[:64])
            return row.id, after.state.value
    return None, None


# --------------------------------------------------------------------------- HTTP


def _context(request: Request) -> LoqedContext | None:
    ctx = getattr(request.app.state, "loqed", None)
    if isinstance(ctx, LoqedContext):
        return ctx
    service = getattr(request.app.state, "service", None)
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


def _occurred_at(headers: Mapping[str, str]) -> datetime | None:
    value = headers.get("timestamp")
    if value is None or not value.strip().isdigit():
        return None
    try:
        return datetime.fromtimestamp(int(value.strip()), tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


async def _store(
    ctx: LoqedContext,
    lock_id: str | None,
    event: LockEvent,
    source: EventSource,
    occurred_at: datetime | None = None,
) -> Response:
    try:
        result = await ingest_event(ctx, lock_id, event, source=source, occurred_at=occurred_at)
    except SQLAlchemyError:
        log.exception("could not store a LOQED %s event for lock %s", source.value, lock_id)
        return _error(503, "storage_unavailable", "the event could not be stored; retry later")
    return JSONResponse(result.as_json())


@router.post("/hooks/loqed/bridge/{lock_id}", include_in_schema=False)
async def bridge_webhook(request: Request, lock_id: str) -> Response:
    """A webhook from the bridge of ``lock_id`` (roomkey's lock id)."""
    ctx = _context(request)
    if ctx is None:
        return _error(503, "not_ready", "the service is not ready")
    lock_cfg = ctx.lock_config(lock_id)
    if lock_cfg is None or lock_cfg.bridge is None:
        log.warning("bridge webhook for unknown lock (or lock without a bridge)")
        return _error(404, "not_found", "no such lock with a bridge")
    body = await _read_body(request)
    if body is None:
        return _error(413, "payload_too_large", f"bodies over {MAX_BODY_BYTES} bytes are refused")
    loqed = ctx.config.loqed
    try:
        verify_bridge_webhook(
            body,
            request.headers,
            bridge_key=lock_cfg.bridge.bridge_key.get_secret_value(),
            now=ctx.clock.time(),
            max_skew=loqed.max_clock_skew_seconds or None,
            accept_missing_timestamp=loqed.accept_missing_timestamp,
        )
    except MissingTimestampError:
        log.warning("lock %s: bridge webhook without TIMESTAMP rejected (policy)", lock_id)
        return _error(
            400, "missing_timestamp", "TIMESTAMP header missing and not accepted by policy"
        )
    except StaleTimestampError:
        log.warning("lock %s: bridge webhook with a stale TIMESTAMP rejected", lock_id)
        return _error(401, "stale_timestamp", "TIMESTAMP is outside the allowed clock skew")
    except BadSignatureError:
        log.warning("lock %s: bridge webhook with a bad HASH rejected", lock_id)
        return _error(401, "bad_signature", "HASH does not verify")
    except (WebhookVerificationError, InvalidRequestError):
        log.warning("lock %s: bridge webhook could not be verified", lock_id)
        return _error(401, "unverified", "the webhook could not be verified")
    try:
        event = parse_event(body, source="bridge")
    except InvalidPayloadError as exc:
        return _error(400, "invalid_payload", str(exc))
    return await _store(ctx, lock_id, event, EventSource.BRIDGE, _occurred_at(request.headers))


def _secret_matches(given: str, expected: str | None) -> bool:
    if not expected:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


async def _cloud_lock(ctx: LoqedContext, event: LockEvent, hint: str | None) -> str | None:
    """Which configured lock a cloud event belongs to (see the module doc)."""
    if hint is not None and ctx.lock_config(hint) is not None:
        if event.lock_id and event.lock_id.isdigit():
            async with ctx.sessions() as session, session.begin():
                known = await kv_get(session, NUMERIC_ID_KV + event.lock_id)
                if known != hint:
                    await kv_set(session, NUMERIC_ID_KV + event.lock_id, hint, now=ctx.now())
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
        return _error(503, "not_ready", "the service is not ready")
    expected = ctx.config.service.loqed_webhook_secret
    if not _secret_matches(secret, expected.get_secret_value() if expected else None):
        log.warning("LOQED cloud webhook with a wrong URL secret")
        return _error(404, "not_found", "Not Found")
    body = await _read_body(request)
    if body is None:
        return _error(413, "payload_too_large", f"bodies over {MAX_BODY_BYTES} bytes are refused")
    hints = request.query_params.getlist("lock")
    if len(hints) > 1:
        return _error(400, "invalid_lock", "give at most one lock parameter")
    hint = hints[0] if hints else None
    if hint is not None and ctx.lock_config(hint) is None:
        return _error(404, "unknown_lock", "no such lock")
    try:
        event = parse_event(body, source="cloud")
    except InvalidPayloadError as exc:
        return _error(400, "invalid_payload", str(exc))
    try:
        lock_id = await _cloud_lock(ctx, event, hint)
    except SQLAlchemyError:
        log.exception("could not resolve the lock of a LOQED cloud event")
        return _error(503, "storage_unavailable", "the event could not be stored; retry later")
    if lock_id is None:
        log.warning("LOQED cloud event for an unknown lock stored without effects")
    return await _store(ctx, lock_id, event, EventSource.CLOUD)


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
