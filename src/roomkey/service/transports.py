"""How a command reaches a lock: one adapter per LOQED surface, in the configured order.

Each adapter wraps one async SDK client (local bridge, Integrations API, app.loqed.com) and
sends one :class:`~roomkey.service.commands.DoorCommand`. :func:`send_one` never raises: every
SDK error becomes a :class:`SendOutcome` carrying the lifecycle's
:class:`~roomkey.service.commands.SendResult`:

* ``accepted_by_transport`` — the surface took the request (bridge 200, cloud 204); only lock
  events tell whether the lock acted on it;
* ``not_sent`` — the request certainly never left (connect/DNS failure, connect timeout):
  the only result after which the lifecycle tries the next transport;
* ``maybe_delivered`` — it may have reached the lock (timeout after writing, dropped
  connection, 5xx, or an error we do not understand): never retried;
* ``rejected`` / ``unauthorized`` / ``key_revoked`` / ``rate_limited`` — definite refusals.

The SDK signs every call afresh with the injected clock, so each attempt carries a new
signature. Outcome details name the error type and HTTP status only, never a URL or a key.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx
from pydantic import SecretStr

from roomkey.loqed import (
    ApiError,
    AsyncAppApiClient,
    AsyncBridgeClient,
    AsyncCloudClient,
    BoltState,
    InvalidRequestError,
    KeyRevokedError,
    LoqedError,
    MaybeDeliveredError,
    NotSentError,
    RateLimitedError,
    ServerError,
    StatusBudget,
    UnauthorizedError,
)
from roomkey.service.clock import Clock
from roomkey.service.commands import DoorCommand, SendResult, Transport
from roomkey.service.config import LockConfig

__all__ = [
    "AppTransport",
    "BridgeTransport",
    "CloudTransport",
    "LockTransport",
    "SendOutcome",
    "build_transports",
    "classify_error",
    "describe_error",
    "send_one",
    "transport_order",
]

log = logging.getLogger(__name__)

OPEN_HOUSE_SETTING = "open_house_mode"


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """The result of one attempt on one transport. ``detail`` is safe to log and store."""

    transport: Transport
    result: SendResult
    detail: str = ""
    retry_after: float | None = None


class LockTransport(Protocol):
    """One way to reach one lock."""

    @property
    def kind(self) -> Transport: ...

    @property
    def key_local_id(self) -> int | None:
        """The key slot the lock names in events for commands sent this way (None: unknown)."""
        ...

    def supports(self, command: DoorCommand) -> bool:
        """Whether this surface can carry ``command`` at all."""
        ...

    async def send(self, command: DoorCommand) -> None:
        """Send ``command`` once, freshly signed; raise SDK errors."""
        ...


def describe_error(exc: BaseException) -> str:
    """An error's type and HTTP status: safe to log and store (never its message)."""
    status = getattr(exc, "status", None)
    name = type(exc).__name__
    return f"{name} (HTTP {status})" if isinstance(status, int) else name


def classify_error(kind: Transport, exc: BaseException) -> SendOutcome:
    """Map an exception raised while sending to an outcome, never leaking its message."""
    detail = describe_error(exc)
    retry_after: float | None = None
    result: SendResult
    if isinstance(exc, NotSentError):
        result = SendResult.NOT_SENT
    elif isinstance(exc, MaybeDeliveredError):
        result = SendResult.MAYBE_DELIVERED
    elif isinstance(exc, UnauthorizedError):
        result = SendResult.UNAUTHORIZED
    elif isinstance(exc, KeyRevokedError):
        result = SendResult.KEY_REVOKED
    elif isinstance(exc, RateLimitedError):
        result, retry_after = SendResult.RATE_LIMITED, exc.retry_after
    elif isinstance(exc, ServerError):
        # A 5xx may come after the cloud relayed the command to the lock.
        result = SendResult.MAYBE_DELIVERED
    elif isinstance(exc, ApiError | InvalidRequestError):
        # 404/other 4xx, or an argument the SDK refused before sending: definitely not done.
        result = SendResult.REJECTED
    else:
        # Anything we do not understand may have happened after the request left.
        result = SendResult.MAYBE_DELIVERED
    return SendOutcome(kind, result, detail, retry_after)


async def send_one(transport: LockTransport, command: DoorCommand) -> SendOutcome:
    """One attempt on one transport; never raises (except cancellation)."""
    try:
        await transport.send(command)
    except LoqedError as exc:
        return classify_error(transport.kind, exc)
    except Exception as exc:  # a bug in an adapter or the SDK: the request may have left
        log.error("unexpected %s sending via %s", type(exc).__name__, transport.kind.value)
        return classify_error(transport.kind, exc)
    return SendOutcome(transport.kind, SendResult.ACCEPTED_BY_TRANSPORT)


def _bolt(command: DoorCommand) -> BoltState:
    target = command.target
    if target is None:
        raise InvalidRequestError(f"{command.value} is not a bolt command")
    return BoltState(target.value)


class BridgeTransport:
    """The local bridge: ``GET /to_lock`` with a command signed per call."""

    def __init__(self, client: AsyncBridgeClient, *, key_local_id: int) -> None:
        self._client = client
        self._key_local_id = key_local_id

    @property
    def kind(self) -> Transport:
        return Transport.BRIDGE

    @property
    def key_local_id(self) -> int | None:
        return self._key_local_id

    @property
    def client(self) -> AsyncBridgeClient:
        return self._client

    def supports(self, command: DoorCommand) -> bool:
        return not command.is_setting

    async def send(self, command: DoorCommand) -> None:
        await self._client.command(_bolt(command))

    def __repr__(self) -> str:
        return f"BridgeTransport(key_local_id={self._key_local_id!r})"


class CloudTransport:
    """The Integrations API: bolt state changes and the open-house setting, with a token.

    ``key_local_id`` is the key slot LOQED gave the token on this lock (cloud commands show
    up in events under it); None when not known.
    """

    def __init__(
        self, client: AsyncCloudClient, *, lock_id: str, key_local_id: int | None = None
    ) -> None:
        self._client = client
        self._lock_id = lock_id
        self._key_local_id = key_local_id

    @property
    def kind(self) -> Transport:
        return Transport.CLOUD

    @property
    def key_local_id(self) -> int | None:
        return self._key_local_id

    @property
    def client(self) -> AsyncCloudClient:
        return self._client

    @property
    def lock_id(self) -> str:
        return self._lock_id

    def with_key(self, key_local_id: int | None) -> CloudTransport:
        """The same transport with the token's key slot filled in."""
        return CloudTransport(self._client, lock_id=self._lock_id, key_local_id=key_local_id)

    def supports(self, command: DoorCommand) -> bool:
        return True

    async def send(self, command: DoorCommand) -> None:
        if command is DoorCommand.OPEN_HOUSE_ON:
            await self._client.change_setting(self._lock_id, OPEN_HOUSE_SETTING, 1)
        elif command is DoorCommand.OPEN_HOUSE_OFF:
            await self._client.change_setting(self._lock_id, OPEN_HOUSE_SETTING, 0)
        else:
            await self._client.set_bolt_state(self._lock_id, _bolt(command))

    def __repr__(self) -> str:
        return f"CloudTransport(lock_id={self._lock_id!r}, key_local_id={self._key_local_id!r})"


class AppTransport:
    """The app.loqed.com API (``lock_command.php``), signed per call."""

    def __init__(self, client: AsyncAppApiClient, *, key_local_id: int | None) -> None:
        self._client = client
        self._key_local_id = key_local_id

    @property
    def kind(self) -> Transport:
        return Transport.APP

    @property
    def key_local_id(self) -> int | None:
        return self._key_local_id

    def supports(self, command: DoorCommand) -> bool:
        return not command.is_setting

    async def send(self, command: DoorCommand) -> None:
        await self._client.command(_bolt(command))

    def __repr__(self) -> str:
        return f"AppTransport(key_local_id={self._key_local_id!r})"


def _reveal(value: SecretStr | None) -> str:
    # The config validator guarantees presence; an empty string makes the SDK refuse.
    return "" if value is None else value.get_secret_value()


def build_transports(
    lock: LockConfig,
    *,
    order: Sequence[str],
    http_client: httpx.AsyncClient | None,
    clock: Clock,
    cloud_key_local_id: int | None = None,
    timeout: float = 10.0,
    status_budget: StatusBudget | None = None,
) -> list[LockTransport]:
    """The lock's configured transports, in ``order`` (kinds the lock lacks are left out).

    Every client signs with ``clock`` (the lock rejects commands ≥60 s old, so a warped demo
    clock must sign too) and never retries by itself. ``status_budget`` (LOQED allows about
    12 cloud status reads per 12 h) guards the cloud client's ``GET /api/locks``.

    All the lock's clients share one HTTP client (``http_client``, else one made here): one
    connection pool and TLS context instead of one per surface. Timeouts and base URLs stay
    per SDK client (the SDK puts them on every request). Pass one client to share it across
    locks too (:meth:`roomkey.service.executor.LoqedContext.shared_http` does).
    """
    sign_clock = clock.time
    kinds = {"bridge": lock.bridge, "cloud": lock.cloud, "app": lock.app}
    if http_client is None and any(kinds.get(name) is not None for name in order):
        http_client = httpx.AsyncClient()
    built: list[LockTransport] = []
    for name in order:
        if name == "bridge" and lock.bridge is not None:
            b = lock.bridge
            bridge_client = AsyncBridgeClient(
                b.url,
                key_secret=b.key_secret.get_secret_value(),
                local_key_id=b.local_key_id,
                bridge_key=b.bridge_key.get_secret_value(),
                http_client=http_client,
                clock=sign_clock,
                timeout=timeout,
            )
            built.append(BridgeTransport(bridge_client, key_local_id=b.local_key_id))
        elif name == "cloud" and lock.cloud is not None:
            c = lock.cloud
            cloud_client = AsyncCloudClient(
                c.token.get_secret_value(),
                base_url=c.base_url,
                http_client=http_client,
                clock=sign_clock,
                timeout=timeout,
                status_budget=status_budget,
            )
            built.append(
                CloudTransport(cloud_client, lock_id=c.lock_id, key_local_id=cloud_key_local_id)
            )
        elif name == "app" and lock.app is not None:
            a = lock.app
            app_client: AsyncAppApiClient
            if a.uses_urls:
                app_client = AsyncAppApiClient.from_urls(
                    _reveal(a.open_url),
                    _reveal(a.latch_url),
                    _reveal(a.night_lock_url),
                    _reveal(a.status_url),
                    http_client=http_client,
                    clock=sign_clock,
                    timeout=timeout,
                )
            else:
                app_client = AsyncAppApiClient(
                    _reveal(a.api_token),
                    a.lock_id or "",
                    key_secret=_reveal(a.key_secret),
                    local_key_id=a.local_key_id,
                    base_url=a.base_url,
                    http_client=http_client,
                    clock=sign_clock,
                    timeout=timeout,
                )
            built.append(AppTransport(app_client, key_local_id=a.local_key_id))
    return built


def transport_order(
    transports: Sequence[LockTransport], command: DoorCommand
) -> tuple[Transport, ...]:
    """The lifecycle's retry order for ``command``: the transports able to carry it."""
    return tuple(t.kind for t in transports if t.supports(command))
