"""The Lockme webhook receiver: ``GET|POST /hooks/lockme/{secret}`` with ``X-MessageId``.

Lockme sends an empty body and the message id in a header; nothing is signed, so trust comes
from fetching the message with our own token later (the message worker). The receiver only:

1. checks the URL secret in constant time (404 on mismatch: the endpoint does not exist for
   strangers);
2. validates ``X-MessageId`` (400 with a typed JSON error);
3. stores the id durably (:func:`~roomkey.service.messages.record_delivery`: group-committed
   with concurrent deliveries, one ``INSERT … ON CONFLICT DO NOTHING`` per batch, committed
   before the answer);
4. answers 200 and wakes the message worker.

``/hooks/lockme?s=<secret>`` is accepted as well (the URL shape the WordPress plugin and the
simulator's examples use). The body is never read.

It is the hottest path of the service, so :class:`LockmeReceiver` is a raw ASGI endpoint with
pre-encoded answers. ``create_app`` tries it (:meth:`LockmeReceiver.match`) before FastAPI's
middleware, routing and dependency machinery; the same endpoint is also in :data:`router` as
plain Starlette routes, which serve what the shortcut leaves to FastAPI (a ``root_path``) and
give other methods their typed 405. Stored ids are logged per batch by the intake
(:mod:`roomkey.service.message_intake`); a wrong secret is logged per request (WARNING).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter
from sqlalchemy.exc import SQLAlchemyError
from starlette.routing import Route

from roomkey.service.group_commit import BatchNotWritten
from roomkey.service.messages import record_delivery

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from roomkey.service.runtime import Service

__all__ = ["MESSAGE_ID_RE", "PATH", "LockmeReceiver", "router", "secret_matches"]

log = logging.getLogger(__name__)

MESSAGE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""What a message id may look like (Lockme's are decimal integers)."""

PATH = "/hooks/lockme"
"""The receiver's path: ``PATH/{secret}`` or ``PATH?s={secret}``."""

_METHODS = ("GET", "POST")


def secret_matches(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; an unset expected secret matches nothing."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


# --------------------------------------------------------------------------- answers


def _json(value: object) -> bytes:
    # exactly what JSONResponse renders
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _error_body(type_: str, message: str) -> bytes:
    return _json({"error": {"type": type_, "message": message}})


_NOT_FOUND = _error_body("not_found", "Not Found")
_MISSING_ID = _error_body("missing_message_id", "the X-MessageId header is required")
_TWO_IDS = _error_body("invalid_message_id", "exactly one X-MessageId header is allowed")
_BAD_ID = _error_body("invalid_message_id", "X-MessageId must be 1-128 letters, digits, '_' or '-'")
_METHOD_NOT_ALLOWED = _error_body("method_not_allowed", "Method Not Allowed")
_UNAVAILABLE = _error_body("storage_unavailable", "the message could not be stored; retry later")
_ACCEPTED_HEAD = b'{"status":"accepted","message_id":"'
_ACCEPTED_NEW = b'","duplicate":false}'
_ACCEPTED_DUPLICATE = b'","duplicate":true}'
_CONTENT_TYPE = (b"content-type", b"application/json")


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode()), _CONTENT_TYPE],
        }
    )
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------- the endpoint


class _Counters:
    """The receiver's labelled metric children, resolved once per metrics registry."""

    __slots__ = ("bad_request", "duplicate", "metrics", "not_found", "stored", "unavailable")

    def __init__(self, metrics: Any) -> None:
        family = metrics.lockme_webhooks
        self.metrics = metrics
        self.not_found = family.labels("not_found")
        self.bad_request = family.labels("bad_request")
        self.unavailable = family.labels("unavailable")
        self.stored = family.labels("stored")
        self.duplicate = family.labels("duplicate")


class LockmeReceiver:
    """The receiver as a raw ASGI endpoint.

    Bound to a service (``LockmeReceiver(service)``) it is the shortcut ``create_app`` tries
    first; unbound it finds the service at ``scope["app"].state.service`` (inside FastAPI).
    The secret is ``scope["path_params"]["secret"]``; without that key it is the ``s`` query
    parameter (exactly one)."""

    def __init__(self, service: Service | None = None) -> None:
        self._service = service
        self._counters: _Counters | None = None

    def match(self, scope: MutableMapping[str, Any]) -> bool:
        """Whether this is a GET/POST to the receiver's path; sets ``path_params``."""
        path: str = scope["path"]
        if not path.startswith(PATH) or scope["method"] not in _METHODS:
            return False
        rest = path[len(PATH) :]
        if not rest:
            scope["path_params"] = {}
            return True
        if rest[0] == "/" and len(rest) > 1 and "/" not in rest[1:]:
            scope["path_params"] = {"secret": rest[1:]}
            return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = self._service
        if service is None:
            service = scope["app"].state.service
        if scope["method"] not in _METHODS:  # HEAD, which Starlette routes add to GET
            await _answer(send, 405, _METHOD_NOT_ALLOWED)
            return
        counters = self._counters
        if counters is None or counters.metrics is not service.metrics:
            counters = self._counters = _Counters(service.metrics)
        params = scope.get("path_params") or {}
        if "secret" in params:
            secret: str | None = params["secret"]
        else:
            query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            given = [value for name, value in query if name == "s"]
            secret = given[0] if len(given) == 1 else None
        if not secret_matches(secret, service.lockme_webhook_secret):
            counters.not_found.inc()
            client = scope.get("client")
            log.warning(
                "lockme webhook with a wrong URL secret from %s",
                client[0] if client else "unknown",
            )
            await _answer(send, 404, _NOT_FOUND)
            return
        values = [value for name, value in scope["headers"] if name == b"x-messageid"]
        if len(values) != 1:
            counters.bad_request.inc()
            await _answer(send, 400, _TWO_IDS if values else _MISSING_ID)
            return
        message_id = values[0].decode("latin-1").strip()
        if not MESSAGE_ID_RE.fullmatch(message_id):
            counters.bad_request.inc()
            await _answer(send, 400, _BAD_ID)
            return
        try:
            stored = await record_delivery(service, message_id)
        except (SQLAlchemyError, BatchNotWritten):
            # Not the sender's fault: 503 so Lockme delivers again; nothing was acknowledged.
            # (The intake logged the failure once for its whole batch.)
            counters.unavailable.inc()
            await _answer(send, 503, _UNAVAILABLE)
            return
        (counters.stored if stored else counters.duplicate).inc()
        service.wakes.messages.set()
        await _answer(
            send,
            200,
            _ACCEPTED_HEAD
            + message_id.encode("ascii")
            + (_ACCEPTED_NEW if stored else _ACCEPTED_DUPLICATE),
        )


_ROUTED = LockmeReceiver()
router = APIRouter(
    routes=[
        Route(f"{PATH}/{{secret}}", _ROUTED, methods=list(_METHODS), include_in_schema=False),
        Route(PATH, _ROUTED, methods=list(_METHODS), include_in_schema=False),
    ]
)
"""The receiver's routes inside FastAPI (behind the ``create_app`` shortcut)."""
