"""What the sync and async clients share: request building, answer interpretation, token rules.

Nothing here does I/O. The clients call :meth:`ClientCore.api_request` / ``token_request`` to
get an :class:`httpx.Request`, send it their own way, and hand the response back to
:meth:`ClientCore.interpret` / ``interpret_token``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from ._endpoints import ApiCall, Decoded
from ._refresh import RefreshLock
from .errors import (
    ApiError,
    AuthError,
    InvalidRequestError,
    InvalidResponseError,
    MaybeDeliveredError,
    NotFoundError,
    NoTokenError,
    NotSentError,
    OAuthError,
    RateLimitedError,
    RefusedError,
    ServerError,
    TransportError,
    ValidationError,
)
from .oauth import OAuthConfig, code_grant_body, refresh_grant_body
from .token import LockingTokenStore, Token, TokenStore, dumps_redacted

__all__ = ["DEFAULT_REFRESH_MARGIN", "ClientCore", "transport_error"]

log = logging.getLogger("roomkey.lockme")

T = TypeVar("T")

DEFAULT_REFRESH_MARGIN = 60.0
_FORM = "application/x-www-form-urlencoded"


def transport_error(exc: httpx.TransportError, what: str) -> TransportError:
    """Map an httpx failure to not-sent vs maybe-delivered (message without URL or secrets)."""
    name = type(exc).__name__
    not_sent = (
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.PoolTimeout,
        httpx.UnsupportedProtocol,
        httpx.LocalProtocolError,
        httpx.ProxyError,
    )
    if isinstance(exc, not_sent):
        return NotSentError(f"{what} was not sent ({name})")
    return MaybeDeliveredError(f"{what} may have been delivered; no usable answer ({name})")


class ClientCore:
    """Configuration and pure logic shared by :class:`LockmeClient` and the async client."""

    def __init__(
        self,
        oauth: OAuthConfig,
        store: TokenStore,
        *,
        clock: Callable[[], float] = time.time,
        venue_tz: str | ZoneInfo = "Europe/Warsaw",
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        lock_timeout: float = 60.0,
        default_duration: int = 60,
    ) -> None:
        self.oauth = oauth
        self.store = store
        self.clock = clock
        self.venue_tz = _zone(venue_tz)
        self.refresh_margin = refresh_margin
        self.default_duration = default_duration
        self.refresh_lock = RefreshLock(
            key=f"store-{id(store)}",
            lock_path=getattr(store, "lock_path", None),
            timeout=lock_timeout,
            store_lock=store if isinstance(store, LockingTokenStore) else None,
        )

    # ------------------------------------------------------------ tokens

    def load_token(self) -> Token:
        return self.require(self.store.load())

    def require(self, token: Token | None) -> Token:
        """``token``, or :class:`NoTokenError` when nothing is stored."""
        if token is None:
            raise NoTokenError("no_token", "no Lockme token stored; log in first")
        return token

    def needs_refresh(self, token: Token) -> bool:
        return token.expires_within(self.refresh_margin, now=self.clock())

    def is_expired(self, token: Token) -> bool:
        return token.expires_within(0.0, now=self.clock())

    def reusable(self, current: Token | None, *, stale: str | None, force: bool) -> Token | None:
        """Under the refresh lock: the stored token if it can be used as is, else ``None``.

        Forced (after a 401 with access token ``stale``): reuse only a token someone else
        rotated in since. Otherwise: reuse while not within the refresh margin.
        """
        if current is None:
            raise NoTokenError("no_token", "no Lockme token stored; log in first")
        if force:
            return current if stale is not None and current.access_token != stale else None
        return None if self.needs_refresh(current) else current

    def refresh_request(self, current: Token) -> httpx.Request:
        if not current.refresh_token:
            raise NoTokenError("no_refresh_token", "the stored token has no refresh token")
        return self._token_request(refresh_grant_body(self.oauth, current.refresh_token))

    def code_request(self, code: str) -> httpx.Request:
        return self._token_request(code_grant_body(self.oauth, code))

    def _token_request(self, body: str) -> httpx.Request:
        return httpx.Request(
            "POST",
            self.oauth.token_endpoint,
            content=body.encode("ascii"),
            headers={"Content-Type": _FORM, "Accept": "application/json"},
        )

    def interpret_token(self, response: httpx.Response, *, previous: Token | None) -> Token:
        """Read a token-endpoint answer. Keeps the old refresh token if none is returned."""
        text = response.text
        try:
            payload: Any = json.loads(text) if text.strip() else None
        except ValueError:
            payload = None
        # Never keep a non-JSON token answer: it could be a form-encoded token.
        redacted = dumps_redacted(payload) if payload is not None else f"<{len(text)} chars>"
        status = response.status_code
        if status >= 500:
            raise ServerError(f"token endpoint answered {status}", status=status, body=redacted)
        if status == 429:
            raise RateLimitedError(
                "token endpoint rate limited",
                status=status,
                body=redacted,
                retry_after=_retry_after(response),
            )
        if status >= 300 or (isinstance(payload, dict) and payload.get("error") is not None):
            error = payload.get("error") if isinstance(payload, dict) else None
            description = None
            if isinstance(payload, dict):
                description = payload.get("error_description") or payload.get("message")
            raise OAuthError(
                str(error or f"http_{status}"),
                str(description) if description is not None else None,
                status=status,
                body=redacted,
            )
        if not isinstance(payload, dict) or not payload.get("access_token"):
            raise OAuthError(
                "invalid_response",
                "token endpoint answer is not a JSON object with access_token",
                status=status,
                body=redacted,
            )
        if not payload.get("refresh_token") and previous is not None and previous.refresh_token:
            payload = {**payload, "refresh_token": previous.refresh_token}
        try:
            return Token.from_response(payload, now=self.clock())
        except (ValueError, TypeError):
            raise OAuthError(
                "invalid_response",
                "token fields have the wrong types",
                status=status,
                body=redacted,
            ) from None

    # ------------------------------------------------------------ REST

    def api_request(self, call: ApiCall[Any], token: Token) -> httpx.Request:
        headers = {"Authorization": f"Bearer {token.access_token}"}
        content = call.body_bytes()
        if content is not None:
            headers["Content-Type"] = "application/json"
        return httpx.Request(
            call.method, self.oauth.api_base + call.path, headers=headers, content=content
        )

    def interpret(self, call: ApiCall[T], response: httpx.Response) -> T:
        """Turn an answer into the endpoint's result or raise the matching :class:`ApiError`."""
        text = response.text
        content_type = response.headers.get("content-type", "")
        value: Any = text
        is_json = False
        if text.strip():
            try:
                value = json.loads(text)
                is_json = True
            except ValueError:
                if "json" in content_type and response.status_code < 400:
                    raise ApiError(
                        "answer claims JSON but is not", status=response.status_code, body=text
                    ) from None
        status = response.status_code
        body_dict = value if is_json and isinstance(value, dict) else {}
        message = _str_or_none(body_dict.get("message"))
        error = _str_or_none(body_dict.get("error"))
        if status >= 300 or (is_json and body_dict.get("error") not in (None, False)):
            raise _api_error(call, response, message=message, error=error, data=value)
        decoded = Decoded(
            value=value,
            is_json=is_json,
            text=text,
            context={"venue_tz": self.venue_tz, "default_duration": self.default_duration},
        )
        try:
            return call.parse(decoded)
        except InvalidResponseError as exc:
            exc.status = status
            raise


def _api_error(
    call: ApiCall[Any],
    response: httpx.Response,
    *,
    message: str | None,
    error: str | None,
    data: Any,
) -> ApiError:
    status = response.status_code
    reason = message or error or response.reason_phrase or f"HTTP {status}"
    detail = f"{call.method} {call.path}: {status} {reason}"
    kwargs: dict[str, Any] = {
        "status": status,
        "message": message,
        "error": error,
        "body": response.text,
        "data": data,
    }
    cls: type[ApiError]
    if status in (401, 403):
        cls = AuthError
    elif status == 404:
        cls = NotFoundError
    elif status in (400, 422):
        cls = ValidationError
    elif status in (409, 423):
        cls = RefusedError
    elif status == 429:
        return RateLimitedError(detail, retry_after=_retry_after(response), **kwargs)
    elif status >= 500:
        cls = ServerError
    else:
        cls = ApiError
    return cls(detail, **kwargs)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _str_or_none(value: Any) -> str | None:
    if value is None or value is False:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _zone(value: str | ZoneInfo) -> ZoneInfo:
    if isinstance(value, ZoneInfo):
        return value
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequestError(f"unknown venue time zone {value!r}") from None
