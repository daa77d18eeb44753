"""The shared core of every sync/async client pair.

Each API operation is written **once** as a generator (an "op"): it validates arguments,
yields a :class:`Call` describing one HTTP request, receives the :class:`httpx.Response` and
returns the parsed result. Transport failures are thrown into the op as our own errors so it
can react (e.g. refund a status-budget read) before they propagate. The sync and async client
bases below only drive ops: they are the single place that touches the network.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, ParamSpec, Self, TypeVar

import httpx

from .errors import (
    ApiError,
    InvalidPayloadError,
    InvalidRequestError,
    KeyRevokedError,
    LoqedError,
    NotFoundError,
    NotSentError,
    RateLimitedError,
    ServerError,
    UnauthorizedError,
    map_transport_error,
)

log = logging.getLogger("roomkey.loqed")

T = TypeVar("T")
P = ParamSpec("P")


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request an op wants sent. ``url`` may be secret; ``what`` never is."""

    method: str
    url: str = field(repr=False)
    what: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    json_body: Any = field(default=None, repr=False)
    close_connection: bool = False


Op = Generator[Call, httpx.Response, T]
"""An operation: yields calls, receives responses, returns a result."""


# --------------------------------------------------------------------------- response helpers

_KEY_REVOKED_MARK = "App\\Models\\ApiKey"


def looks_like_html(response: httpx.Response) -> bool:
    """True for a login page or any other HTML answer where JSON (or nothing) was expected."""
    head = response.content[:512].lstrip()
    return head.startswith(b"<")


def decode_json(response: httpx.Response, what: str) -> Any:
    """Decode the body as JSON whatever the content type; raises InvalidPayloadError."""
    try:
        return json.loads(response.content.decode("utf-8-sig"))
    except (ValueError, RecursionError):
        raise InvalidPayloadError(f"{what}: answer is not valid JSON") from None


def retry_after_seconds(response: httpx.Response, now: float) -> float | None:
    """Wait time from ``retry-after`` (seconds or HTTP date) or ``x-ratelimit-reset``."""
    value = response.headers.get("retry-after")
    if value is not None:
        text = value.strip()
        try:
            return max(0.0, float(text))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - now)
    reset = response.headers.get("x-ratelimit-reset")
    if reset is not None:
        try:
            number = float(reset.strip())
        except ValueError:
            number = None
        if number is not None:
            # Large values are absolute Unix times, small ones a delay in seconds.
            return max(0.0, number - now) if number > 1_000_000_000 else max(0.0, number)
    if response.headers.get("x-ratelimit-remaining", "").strip() == "0":
        # LOQED's throttle is per minute (x-ratelimit-limit: 60) and names no reset time.
        return 60.0
    return None


def _message_of(response: httpx.Response) -> str:
    try:
        data = json.loads(response.content)
    except (ValueError, RecursionError):
        return ""
    if isinstance(data, Mapping):
        message = data.get("message")
        if isinstance(message, str):
            return message
    return ""


def check_status(
    response: httpx.Response, what: str, *, now: float, html_is_auth_error: bool = True
) -> None:
    """Raise the matching :class:`ApiError` unless ``response`` is an acceptable 2xx answer.

    3xx, 401, 403 and (when ``html_is_auth_error``) a 2xx HTML page → UnauthorizedError;
    404 naming ``App\\Models\\ApiKey`` → KeyRevokedError; other 404 → NotFoundError;
    429 → RateLimitedError with the wait; 5xx → ServerError; other codes → ApiError.
    Messages carry the status and the call description only.
    """
    status = response.status_code
    if 300 <= status < 400:
        raise UnauthorizedError(
            f"{what}: redirected ({status}); the token is invalid or expired", status=status
        )
    if status in (401, 403):
        raise UnauthorizedError(f"{what}: unauthorized ({status})", status=status)
    if status == 404:
        if _KEY_REVOKED_MARK in response.text or _KEY_REVOKED_MARK in _message_of(response):
            raise KeyRevokedError(f"{what}: the API key was deleted (404 ApiKey)", status=404)
        raise NotFoundError(f"{what}: not found (404)", status=404)
    if status == 429:
        wait = retry_after_seconds(response, now)
        suffix = f", retry after {wait:.0f} s" if wait is not None else ""
        raise RateLimitedError(f"{what}: rate limited (429){suffix}", retry_after=wait)
    if status >= 500:
        raise ServerError(f"{what}: server error ({status})", status=status)
    if not 200 <= status < 300:
        raise ApiError(f"{what}: unexpected HTTP status {status}", status=status)
    if html_is_auth_error and looks_like_html(response):
        raise UnauthorizedError(
            f"{what}: got an HTML page (login?) instead of an API answer", status=status
        )


# --------------------------------------------------------------------------- log redaction

_SECRET_PARAMS = ("command_signed_base64", "api_token", "token", "key", "secret")


def _redact_log_url(value: Any) -> Any:
    if isinstance(value, httpx.URL) and value.query:
        path = value.path
        params = {name.lower() for name in value.params}
        if path.endswith(("to_lock", ".php")) or params.intersection(_SECRET_PARAMS):
            return value.copy_with(query=b"redacted")
    return value


class _RedactHttpxUrls(logging.Filter):
    """Strip secret query strings from httpx's ``HTTP Request: GET <url>`` log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_redact_log_url(arg) for arg in record.args)
        return True


_FILTER = _RedactHttpxUrls()


def install_log_redaction() -> None:
    """Attach the redacting filter to the ``httpx`` logger (idempotent)."""
    logger = logging.getLogger("httpx")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


# --------------------------------------------------------------------------- drivers


def _build(client: httpx.Client | httpx.AsyncClient, call: Call, timeout: float) -> httpx.Request:
    headers = dict(call.headers)
    if call.close_connection:
        headers["Connection"] = "close"
    kwargs: dict[str, Any] = {"headers": headers, "timeout": timeout}
    if call.json_body is not None:
        kwargs["json"] = call.json_body
    return client.build_request(call.method, httpx.URL(call.url), **kwargs)


class _Base:
    """What the sync and async bases share: configuration, ownership, repr."""

    _client_name = "LoqedClient"

    def __init__(
        self,
        *,
        timeout: float,
        retries: int,
        retry_delay: float,
    ) -> None:
        if retries < 0:
            raise InvalidRequestError("retries must be >= 0")
        self._timeout = timeout
        self._retries = retries
        self._retry_delay = retry_delay
        install_log_redaction()

    def _repr_fields(self) -> dict[str, object]:
        return {}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._repr_fields().items())
        return f"{type(self).__name__}({fields})"


class SyncBase(_Base):
    """Runs ops over an :class:`httpx.Client` (injected or owned)."""

    def __init__(
        self,
        http_client: httpx.Client | None,
        *,
        timeout: float,
        retries: int = 0,
        retry_delay: float = 0.0,
    ) -> None:
        super().__init__(timeout=timeout, retries=retries, retry_delay=retry_delay)
        self._owns_client = http_client is None
        self._http = http_client if http_client is not None else httpx.Client()

    def _drive(self, op: Op[T]) -> T:
        try:
            call = next(op)
            while True:
                error: LoqedError | None = None
                response: httpx.Response | None = None
                try:
                    request = _build(self._http, call, self._timeout)
                    response = self._http.send(request, follow_redirects=False)
                except (httpx.HTTPError, httpx.InvalidURL) as exc:
                    error = map_transport_error(exc, call.what)
                if error is not None:
                    call = op.throw(error)
                else:
                    assert response is not None
                    log.debug("%s -> %d", call.what, response.status_code)
                    call = op.send(response)
        except StopIteration as stop:
            result: T = stop.value
            return result
        finally:
            op.close()

    def _run(self, make_op: Callable[P, Op[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run an op; retry it (re-building, so re-signing) only after NotSentError."""
        attempt = 0
        while True:
            try:
                return self._drive(make_op(*args, **kwargs))
            except NotSentError:
                if attempt >= self._retries:
                    raise
            attempt += 1
            if self._retry_delay > 0:
                time.sleep(self._retry_delay)

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_client:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncBase(_Base):
    """Runs ops over an :class:`httpx.AsyncClient` (injected or owned)."""

    def __init__(
        self,
        http_client: httpx.AsyncClient | None,
        *,
        timeout: float,
        retries: int = 0,
        retry_delay: float = 0.0,
    ) -> None:
        super().__init__(timeout=timeout, retries=retries, retry_delay=retry_delay)
        self._owns_client = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient()

    async def _drive(self, op: Op[T]) -> T:
        try:
            call = next(op)
            while True:
                error: LoqedError | None = None
                response: httpx.Response | None = None
                try:
                    request = _build(self._http, call, self._timeout)
                    response = await self._http.send(request, follow_redirects=False)
                except (httpx.HTTPError, httpx.InvalidURL) as exc:
                    error = map_transport_error(exc, call.what)
                if error is not None:
                    call = op.throw(error)
                else:
                    assert response is not None
                    log.debug("%s -> %d", call.what, response.status_code)
                    call = op.send(response)
        except StopIteration as stop:
            result: T = stop.value
            return result
        finally:
            op.close()

    async def _run(self, make_op: Callable[P, Op[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run an op; retry it (re-building, so re-signing) only after NotSentError."""
        attempt = 0
        while True:
            try:
                return await self._drive(make_op(*args, **kwargs))
            except NotSentError:
                if attempt >= self._retries:
                    raise
            attempt += 1
            if self._retry_delay > 0:
                await asyncio.sleep(self._retry_delay)

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_client:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


__all__ = [
    "AsyncBase",
    "Call",
    "Op",
    "SyncBase",
    "check_status",
    "decode_json",
    "install_log_redaction",
    "looks_like_html",
    "retry_after_seconds",
]
