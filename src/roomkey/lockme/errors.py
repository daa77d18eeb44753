"""One error tree for everything the Lockme SDK raises.

Mirrors httpx's split between "the request was certainly not sent" and "it may have been
delivered", and the PHP client's error surfacing: an HTTP status >= 400, or any answer whose
JSON body carries an ``error`` key, becomes an :class:`ApiError` carrying the status, the body's
``message``/``error`` and the raw body. Messages never contain tokens or the client secret.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "AuthError",
    "InvalidRequestError",
    "InvalidResponseError",
    "LockmeError",
    "MaybeDeliveredError",
    "NoTokenError",
    "NotFoundError",
    "NotSentError",
    "OAuthError",
    "RateLimitedError",
    "RefusedError",
    "ServerError",
    "StateMismatchError",
    "TransportError",
    "ValidationError",
]


class LockmeError(Exception):
    """Base class of every error raised by :mod:`roomkey.lockme`."""


class TransportError(LockmeError):
    """The request did not produce a usable HTTP answer."""


class NotSentError(TransportError):
    """Certainly not sent: DNS/connect failure, connect or pool timeout."""


class MaybeDeliveredError(TransportError):
    """The request may have reached Lockme (read/write timeout, dropped connection)."""


class ApiError(LockmeError):
    """An HTTP answer we could not accept.

    ``status`` is the HTTP status (``None`` if unknown), ``message`` and ``error`` the body's
    keys of that name (when present), ``body`` the raw body text.
    """

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        message: str | None = None,
        error: str | None = None,
        body: str = "",
        data: Any = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.message = message
        self.error = error
        self.body = body
        self.data = data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, status={self.status!r})"


class AuthError(ApiError):
    """401/403: the token is missing, expired, revoked or lacks the scope."""


class NotFoundError(ApiError):
    """404: unknown room, reservation, ext id or message."""


class ValidationError(ApiError):
    """400/422: Lockme rejected the request's content."""


class RefusedError(ApiError):
    """Lockme refused the operation (409/423), e.g. deleting a reservation paid via Lockme."""


class RateLimitedError(ApiError):
    """429. ``retry_after`` is the ``Retry-After`` header in seconds, when given."""

    def __init__(self, detail: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx."""


class InvalidResponseError(ApiError):
    """A successful answer whose body is not what the endpoint returns (wrong JSON kind/shape)."""


class OAuthError(LockmeError):
    """The token endpoint answered with an OAuth error (``error``/``error_description``)."""

    def __init__(
        self,
        error: str,
        description: str | None = None,
        *,
        status: int | None = None,
        body: str = "",
    ) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.status = status
        self.body = body

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, status={self.status!r})"


class NoTokenError(OAuthError):
    """No usable token in the store (never logged in, or no refresh token to renew it)."""


class InvalidRequestError(LockmeError, ValueError):
    """Client-side validation failed; nothing was sent."""


class StateMismatchError(LockmeError):
    """The OAuth ``state`` returned to the redirect URI is not the one we issued."""
