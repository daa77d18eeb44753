"""One error tree for every LOQED surface.

The split that matters for door safety is under :class:`TransportError`:

* :class:`NotSentError` — the request certainly never left (DNS or connect failure, connect
  timeout, no free pooled connection). Safe to retry, even a command.
* :class:`MaybeDeliveredError` — the request may have reached the bridge or the cloud (timeout
  or dropped connection after writing). Never retry a command blindly: an OPEN sent twice
  unlatches the door twice.

No message or repr in this module ever contains a key, a token or a URL: signed command URLs are
replayable, so errors carry a redacted description of the call (``"bridge GET /to_lock"``) and
the name of the underlying exception type, nothing more. Errors are raised without a chained
``__cause__``/``__context__`` for the same reason.
"""

from __future__ import annotations

import httpx

__all__ = [
    "ApiError",
    "BadSignatureError",
    "InvalidPayloadError",
    "InvalidRequestError",
    "KeyRevokedError",
    "LoqedError",
    "MaybeDeliveredError",
    "MissingTimestampError",
    "NotFoundError",
    "NotSentError",
    "RateLimitedError",
    "ServerError",
    "StaleTimestampError",
    "StatusBudgetExhaustedError",
    "TransportError",
    "UnauthorizedError",
    "WebhookVerificationError",
    "map_transport_error",
]


class LoqedError(Exception):
    """Base class of every error raised by :mod:`roomkey.loqed`."""


class InvalidRequestError(LoqedError, ValueError):
    """An argument was rejected before anything was sent (bad setting, missing key, ...)."""


class TransportError(LoqedError):
    """The request did not produce a usable HTTP answer.

    ``cause`` names the underlying exception type (e.g. ``"ReadTimeout"``), never its message.
    """

    def __init__(self, message: str, *, cause: str | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class NotSentError(TransportError):
    """Certainly not sent: DNS failure, connect failure/timeout, pool timeout."""


class MaybeDeliveredError(TransportError):
    """The request may have reached the device (read/write timeout, dropped connection)."""


class ApiError(LoqedError):
    """An HTTP answer we could not accept. ``status`` is the HTTP status (None if not HTTP)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UnauthorizedError(ApiError):
    """401/403, any 3xx redirect (LOQED redirects bad tokens to its login page) or HTML."""


class KeyRevokedError(ApiError):
    """404 ``No query results for model [App\\Models\\ApiKey]``: the token's key was deleted."""


class RateLimitedError(ApiError):
    """429, ``x-ratelimit-*``/``retry-after`` or a remembered status-read block.

    ``retry_after`` is the wait in seconds when known.
    """

    def __init__(
        self, message: str, *, status: int | None = 429, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class NotFoundError(ApiError):
    """404 for anything but a revoked key (unknown lock, webhook, path)."""


class ServerError(ApiError):
    """5xx from the bridge or the cloud."""


class StatusBudgetExhaustedError(LoqedError):
    """The local status-read budget is spent and no cached answer exists yet.

    ``retry_after`` is the number of seconds until the next read becomes available.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WebhookVerificationError(LoqedError):
    """A bridge webhook failed verification."""


class BadSignatureError(WebhookVerificationError):
    """``HASH`` missing, malformed or not matching the raw body."""


class StaleTimestampError(WebhookVerificationError):
    """``TIMESTAMP`` is further from our clock than the allowed skew."""


class MissingTimestampError(WebhookVerificationError):
    """No ``TIMESTAMP`` header (new gateway) and the policy is to reject."""


class InvalidPayloadError(LoqedError):
    """A JSON body, event or model could not be parsed."""


# httpx exceptions raised before a single byte of the request could have left.
_NOT_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.ProxyError,
)


def map_transport_error(exc: Exception, what: str) -> LoqedError:
    """Translate an httpx exception into our tree without leaking its message.

    ``what`` is a redacted description of the call. The original message is dropped on
    purpose: httpx messages may contain the request URL, which for ``/to_lock`` and the
    app.loqed.com endpoints is a secret.
    """
    name = type(exc).__name__
    if isinstance(exc, httpx.InvalidURL):
        return InvalidRequestError(f"{what}: invalid URL")
    if isinstance(exc, _NOT_SENT):
        return NotSentError(f"{what}: not sent ({name})", cause=name)
    if isinstance(exc, httpx.TimeoutException):
        return MaybeDeliveredError(
            f"{what}: no answer, may have been delivered ({name})", cause=name
        )
    # ReadError, WriteError, CloseError, RemoteProtocolError, DecodingError, anything else:
    # the request may have left, so assume it did.
    return MaybeDeliveredError(f"{what}: connection failed after sending ({name})", cause=name)
