"""Local bridge HTTP API: ``/status``, signed ``/to_lock`` commands, webhook management.

:class:`BridgeClient` and :class:`AsyncBridgeClient` share one core (:class:`BridgeCore`);
they differ only in how requests are sent. Door-safety rules enforced here:

* every command attempt is signed afresh from the injected clock;
* a command is never retried once it may have left; with ``retries=N`` only
  :class:`~roomkey.loqed.errors.NotSentError` attempts are repeated (re-signed);
* commands go out with ``Connection: close`` so a pooled connection can never replay one;
* neither the key nor the signed URL appears in errors, logs or reprs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
from pydantic import SecretStr

from ._http import AsyncBase, Call, Op, SyncBase, check_status, decode_json
from ._secrets import SecretLike, check_key, normalise_base_url, reveal, secret
from .budget import CachedAnswer, StatusBudget, budgeted_read
from .errors import InvalidPayloadError, InvalidRequestError
from .events import verify_bridge_webhook
from .models import BoltState, BridgeWebhook, LockStatus, WebhookTriggers
from .signing import (
    Action,
    Clock,
    decode_key,
    encode_command_param,
    sign_command,
    webhook_create_hash,
    webhook_delete_hash,
    webhook_list_hash,
)

__all__ = ["AsyncBridgeClient", "BridgeClient", "BridgeCore", "TriggersLike"]

TriggersLike = WebhookTriggers | int | Iterable[str | int | WebhookTriggers]


def _action(action: Action | BoltState | int | str) -> Action:
    if isinstance(action, BoltState):
        return action.action
    if isinstance(action, str):
        name = action.strip().upper()
        if name in Action.__members__:
            return Action[name]
        raise InvalidRequestError("action must be OPEN, DAY_LOCK or NIGHT_LOCK")
    try:
        return Action(action)
    except ValueError:
        raise InvalidRequestError("action must be 1 (OPEN), 2 (DAY_LOCK) or 3 (NIGHT_LOCK)") from (
            None
        )


class BridgeCore:
    """Request building and response interpretation for one bridge (no I/O)."""

    def __init__(
        self,
        base_url: str,
        *,
        key_secret: SecretLike | None,
        local_key_id: int | None,
        bridge_key: SecretLike | None,
        clock: Clock,
        encode_slash: bool,
        status_budget: StatusBudget | None,
    ) -> None:
        self.base_url = normalise_base_url(base_url)
        self._key_secret = secret(key_secret)
        self._bridge_key = secret(bridge_key)
        check_key(self._key_secret, "key_secret")
        check_key(self._bridge_key, "bridge_key")
        if local_key_id is not None and (
            isinstance(local_key_id, bool) or not 0 <= local_key_id <= 254
        ):
            raise InvalidRequestError("local_key_id must be within 0..254")
        self.local_key_id = local_key_id
        self.clock = clock
        self.encode_slash = encode_slash
        self.status_budget = status_budget
        self.budget_key = f"bridge:{httpx.URL(self.base_url).host}{httpx.URL(self.base_url).path}"

    def repr_fields(self) -> dict[str, object]:
        return {
            "base_url": self.base_url,
            "local_key_id": self.local_key_id,
            "signing": self._key_secret is not None,
        }

    # ------------------------------------------------------------------ status

    def _interpret_status(self, response: httpx.Response) -> tuple[LockStatus, Any]:
        what = "bridge GET /status"
        check_status(response, what, now=self.clock(), html_is_auth_error=False)
        data = decode_json(response, what)
        return LockStatus.from_payload(data, fetched_at=self.clock()), data

    @staticmethod
    def _status_from_cache(cached: CachedAnswer) -> LockStatus:
        return LockStatus.from_payload(cached.payload, cached=True, fetched_at=cached.fetched_at)

    def status(self) -> Op[LockStatus]:
        """``GET /status`` (JSON whatever the content type), through the budget if any."""
        call = Call("GET", f"{self.base_url}/status", "bridge GET /status")
        return (
            yield from budgeted_read(
                self.status_budget,
                self.budget_key,
                call,
                self._interpret_status,
                self._status_from_cache,
            )
        )

    # ------------------------------------------------------------------ commands

    def command(self, action: Action | BoltState | int | str) -> Op[None]:
        """Sign ``action`` now and send ``GET /to_lock``; 200 means "passed to the lock"."""
        act = _action(action)
        if self._key_secret is None or self.local_key_id is None:
            raise InvalidRequestError("commands need key_secret and local_key_id")
        signed = sign_command(
            reveal(self._key_secret),
            action=act,
            local_key_id=self.local_key_id,
            clock=self.clock,
        )
        param = encode_command_param(signed, encode_slash=self.encode_slash)
        what = f"bridge GET /to_lock ({act.name})"
        response = yield Call(
            "GET",
            f"{self.base_url}/to_lock?command_signed_base64={param}",
            what,
            close_connection=True,
        )
        check_status(response, what, now=self.clock(), html_is_auth_error=False)

    # ------------------------------------------------------------------ webhooks

    def _signed_headers(self, make_hash: Any, *args: Any) -> dict[str, str]:
        if self._bridge_key is None:
            raise InvalidRequestError("webhook management needs bridge_key")
        timestamp = int(self.clock())
        digest = make_hash(decode_key(reveal(self._bridge_key)), timestamp, *args)
        return {"TIMESTAMP": str(timestamp), "HASH": digest}

    def list_webhooks(self) -> Op[list[BridgeWebhook]]:
        """``GET /webhooks``."""
        what = "bridge GET /webhooks"
        headers = self._signed_headers(webhook_list_hash)
        response = yield Call("GET", f"{self.base_url}/webhooks", what, headers=headers)
        check_status(response, what, now=self.clock(), html_is_auth_error=False)
        data = decode_json(response, what)
        if isinstance(data, Mapping) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise InvalidPayloadError(f"{what}: answer is not a JSON list")
        return [BridgeWebhook.from_payload(item) for item in data]

    def create_webhook(self, url: str, triggers: TriggersLike = WebhookTriggers.ALL) -> Op[None]:
        """``POST /webhooks``; the bridge returns no id (list again to find it)."""
        if not isinstance(url, str) or not url.strip():
            raise InvalidRequestError("webhook url must be a non-empty string")
        flags = WebhookTriggers.coerce(triggers)
        what = "bridge POST /webhooks"
        headers = self._signed_headers(webhook_create_hash, url, int(flags))
        body: dict[str, Any] = {"url": url, **flags.to_fields()}
        response = yield Call(
            "POST", f"{self.base_url}/webhooks", what, headers=headers, json_body=body
        )
        check_status(response, what, now=self.clock(), html_is_auth_error=False)

    def delete_webhook(self, webhook_id: int) -> Op[None]:
        """``DELETE /webhooks/{id}``."""
        if isinstance(webhook_id, bool) or not isinstance(webhook_id, int) or webhook_id < 0:
            raise InvalidRequestError("webhook_id must be a non-negative int")
        what = f"bridge DELETE /webhooks/{webhook_id}"
        headers = self._signed_headers(webhook_delete_hash, webhook_id)
        response = yield Call(
            "DELETE", f"{self.base_url}/webhooks/{webhook_id}", what, headers=headers
        )
        check_status(response, what, now=self.clock(), html_is_auth_error=False)

    def ensure_webhook(
        self, url: str, triggers: TriggersLike = WebhookTriggers.ALL
    ) -> Op[BridgeWebhook]:
        """Create ``url`` unless an identical registration exists; return the registration."""
        flags = WebhookTriggers.coerce(triggers)
        existing = yield from self.list_webhooks()
        for hook in existing:
            if hook.url == url and hook.triggers == flags:
                return hook
        yield from self.create_webhook(url, flags)
        for hook in (yield from self.list_webhooks()):
            if hook.url == url and hook.triggers == flags:
                return hook
        raise InvalidPayloadError("bridge POST /webhooks: the new webhook is not listed")

    def verify_webhook(
        self,
        raw_body: bytes,
        headers: Mapping[str, str],
        *,
        max_skew: float | None = 10.0,
        accept_missing_timestamp: bool = False,
    ) -> None:
        """:func:`~roomkey.loqed.events.verify_bridge_webhook` with this bridge's key/clock."""
        if self._bridge_key is None:
            raise InvalidRequestError("verifying webhooks needs bridge_key")
        verify_bridge_webhook(
            raw_body,
            headers,
            bridge_key=reveal(self._bridge_key),
            now=self.clock(),
            max_skew=max_skew,
            accept_missing_timestamp=accept_missing_timestamp,
        )


class _BridgeMixin:
    _core: BridgeCore

    def verify_webhook(
        self,
        raw_body: bytes,
        headers: Mapping[str, str],
        *,
        max_skew: float | None = 10.0,
        accept_missing_timestamp: bool = False,
    ) -> None:
        """Verify a webhook this bridge sent (raises WebhookVerificationError subclasses)."""
        self._core.verify_webhook(
            raw_body,
            headers,
            max_skew=max_skew,
            accept_missing_timestamp=accept_missing_timestamp,
        )


class BridgeClient(_BridgeMixin, SyncBase):
    """Synchronous client of one LOQED bridge (``http://<bridge_ip>``).

    ``key_secret``/``local_key_id`` are needed for commands, ``bridge_key`` for webhook
    management. ``status_budget`` (optional) rations ``/status`` reads.
    """

    def __init__(
        self,
        base_url: str,
        *,
        key_secret: str | SecretStr | None = None,
        local_key_id: int | None = None,
        bridge_key: str | SecretStr | None = None,
        http_client: httpx.Client | None = None,
        clock: Clock = time.time,
        encode_slash: bool = False,
        timeout: float = 10.0,
        retries: int = 0,
        retry_delay: float = 0.0,
        status_budget: StatusBudget | None = None,
    ) -> None:
        self._core = BridgeCore(
            base_url,
            key_secret=key_secret,
            local_key_id=local_key_id,
            bridge_key=bridge_key,
            clock=clock,
            encode_slash=encode_slash,
            status_budget=status_budget,
        )
        super().__init__(http_client, timeout=timeout, retries=retries, retry_delay=retry_delay)

    def _repr_fields(self) -> dict[str, object]:
        return self._core.repr_fields()

    def status(self) -> LockStatus:
        """Read ``/status``."""
        return self._run(self._core.status)

    def command(self, action: Action | BoltState | int | str) -> None:
        """Send one signed command (never auto-retried once it may have left)."""
        self._run(self._core.command, action)

    def open(self) -> None:
        """Pull the latch (OPEN)."""
        self.command(Action.OPEN)

    def day_lock(self) -> None:
        """Unlock to the latch (DAY_LOCK)."""
        self.command(Action.DAY_LOCK)

    def night_lock(self) -> None:
        """Lock (NIGHT_LOCK)."""
        self.command(Action.NIGHT_LOCK)

    def list_webhooks(self) -> list[BridgeWebhook]:
        """List the bridge's webhooks."""
        return self._run(self._core.list_webhooks)

    def create_webhook(self, url: str, triggers: TriggersLike = WebhookTriggers.ALL) -> None:
        """Register a webhook (flags, bitmap or trigger names)."""
        self._run(self._core.create_webhook, url, triggers)

    def delete_webhook(self, webhook_id: int) -> None:
        """Delete a webhook by id."""
        self._run(self._core.delete_webhook, webhook_id)

    def ensure_webhook(
        self, url: str, triggers: TriggersLike = WebhookTriggers.ALL
    ) -> BridgeWebhook:
        """Register ``url`` unless already registered with the same triggers."""
        return self._run(self._core.ensure_webhook, url, triggers)


class AsyncBridgeClient(_BridgeMixin, AsyncBase):
    """Asynchronous twin of :class:`BridgeClient` (same core, same arguments)."""

    def __init__(
        self,
        base_url: str,
        *,
        key_secret: str | SecretStr | None = None,
        local_key_id: int | None = None,
        bridge_key: str | SecretStr | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock = time.time,
        encode_slash: bool = False,
        timeout: float = 10.0,
        retries: int = 0,
        retry_delay: float = 0.0,
        status_budget: StatusBudget | None = None,
    ) -> None:
        self._core = BridgeCore(
            base_url,
            key_secret=key_secret,
            local_key_id=local_key_id,
            bridge_key=bridge_key,
            clock=clock,
            encode_slash=encode_slash,
            status_budget=status_budget,
        )
        super().__init__(http_client, timeout=timeout, retries=retries, retry_delay=retry_delay)

    def _repr_fields(self) -> dict[str, object]:
        return self._core.repr_fields()

    async def status(self) -> LockStatus:
        """Read ``/status``."""
        return await self._run(self._core.status)

    async def command(self, action: Action | BoltState | int | str) -> None:
        """Send one signed command (never auto-retried once it may have left)."""
        await self._run(self._core.command, action)

    async def open(self) -> None:
        """Pull the latch (OPEN)."""
        await self.command(Action.OPEN)

    async def day_lock(self) -> None:
        """Unlock to the latch (DAY_LOCK)."""
        await self.command(Action.DAY_LOCK)

    async def night_lock(self) -> None:
        """Lock (NIGHT_LOCK)."""
        await self.command(Action.NIGHT_LOCK)

    async def list_webhooks(self) -> list[BridgeWebhook]:
        """List the bridge's webhooks."""
        return await self._run(self._core.list_webhooks)

    async def create_webhook(self, url: str, triggers: TriggersLike = WebhookTriggers.ALL) -> None:
        """Register a webhook (flags, bitmap or trigger names)."""
        await self._run(self._core.create_webhook, url, triggers)

    async def delete_webhook(self, webhook_id: int) -> None:
        """Delete a webhook by id."""
        await self._run(self._core.delete_webhook, webhook_id)

    async def ensure_webhook(
        self, url: str, triggers: TriggersLike = WebhookTriggers.ALL
    ) -> BridgeWebhook:
        """Register ``url`` unless already registered with the same triggers."""
        return await self._run(self._core.ensure_webhook, url, triggers)
