"""The Lockme webhook receiver: ``GET|POST /hooks/lockme/{secret}`` with ``X-MessageId``.

Lockme sends an empty body and the message id in a header; nothing is signed, so trust comes
from fetching the message with our own token later (the message worker). The receiver only:

1. checks the URL secret in constant time (404 on mismatch: the endpoint does not exist for
   strangers);
2. validates ``X-MessageId`` (400 with a typed JSON error);
3. stores the id with one idempotent ``INSERT … ON CONFLICT DO NOTHING`` (durable on commit);
4. answers 200 and wakes the message worker.

``/hooks/lockme?s=<secret>`` is accepted as well (the URL shape the WordPress plugin and the
simulator's examples use). The body is never read.
"""

from __future__ import annotations

import hmac
import logging
import re

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from roomkey.service.messages import record_delivery
from roomkey.service.runtime import Service

__all__ = ["MESSAGE_ID_RE", "router", "secret_matches"]

log = logging.getLogger(__name__)

MESSAGE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""What a message id may look like (Lockme's are decimal integers)."""

router = APIRouter()


def secret_matches(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; an unset expected secret matches nothing."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def _error(status: int, type_: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message}}, status_code=status)


async def _receive(request: Request, secret: str | None) -> Response:
    service: Service = request.app.state.service
    metrics = service.metrics
    if not secret_matches(secret, service.lockme_webhook_secret):
        metrics.lockme_webhooks.labels("not_found").inc()
        log.warning("lockme webhook with a wrong URL secret from %s", _peer(request))
        return _error(404, "not_found", "Not Found")
    values = request.headers.getlist("x-messageid")
    if not values:
        metrics.lockme_webhooks.labels("bad_request").inc()
        return _error(400, "missing_message_id", "the X-MessageId header is required")
    if len(values) > 1:
        metrics.lockme_webhooks.labels("bad_request").inc()
        return _error(400, "invalid_message_id", "exactly one X-MessageId header is allowed")
    message_id = values[0].strip()
    if not MESSAGE_ID_RE.fullmatch(message_id):
        metrics.lockme_webhooks.labels("bad_request").inc()
        return _error(
            400, "invalid_message_id", "X-MessageId must be 1-128 letters, digits, '_' or '-'"
        )
    try:
        stored = await record_delivery(service, message_id)
    except SQLAlchemyError:
        # Not the sender's fault: 503 so Lockme delivers again; nothing was acknowledged.
        metrics.lockme_webhooks.labels("unavailable").inc()
        log.exception("could not store Lockme message %s", message_id)
        return _error(503, "storage_unavailable", "the message could not be stored; retry later")
    metrics.lockme_webhooks.labels("stored" if stored else "duplicate").inc()
    service.wakes.messages.set()
    log.info(
        "lockme message %s %s", message_id, "stored" if stored else "already known (duplicate)"
    )
    return JSONResponse({"status": "accepted", "message_id": message_id, "duplicate": not stored})


@router.api_route("/hooks/lockme/{secret}", methods=["GET", "POST"], include_in_schema=False)
async def lockme_webhook(request: Request, secret: str) -> Response:
    """Lockme webhook with the secret as the last path segment."""
    return await _receive(request, secret)


@router.api_route("/hooks/lockme", methods=["GET", "POST"], include_in_schema=False)
async def lockme_webhook_query(request: Request) -> Response:
    """Lockme webhook with the secret in the ``s`` query parameter."""
    values = request.query_params.getlist("s")
    return await _receive(request, values[0] if len(values) == 1 else None)


def _peer(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"
