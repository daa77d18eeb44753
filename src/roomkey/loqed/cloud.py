"""LOQED Integrations API (``https://integrations.production.loqed.com``, Bearer token).

Behaviour that differs from a naive REST client (reference §4.1):

* redirects are **not** followed: LOQED redirects a bad token to its HTML login page, so any
  3xx, and any 2xx whose body is HTML, raises :class:`~roomkey.loqed.errors.UnauthorizedError`;
* ``bolt_state`` answers 204 when the command was *accepted*, not done (confirm via events);
* 404 ``No query results for model [App\\Models\\ApiKey]`` raises
  :class:`~roomkey.loqed.errors.KeyRevokedError` (the token's key was deleted in the app);
* 429 raises :class:`~roomkey.loqed.errors.RateLimitedError` with the wait from
  ``retry-after``/``x-ratelimit-*``;
* settings are whitelisted and range-checked (signed 32-bit) before anything is sent.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from ._http import AsyncBase, Call, Op, SyncBase, check_status, decode_json
from ._secrets import SecretLike, normalise_base_url, reveal, secret
from .budget import CachedAnswer, StatusBudget, budgeted_read
from .errors import InvalidPayloadError, InvalidRequestError
from .models import BoltState, CloudKey, CloudLock, CloudWebhook, parse_bolt_state
from .signing import Clock

__all__ = [
    "DEFAULT_CLOUD_URL",
    "SETTINGS",
    "AsyncCloudClient",
    "CloudClient",
    "CloudCore",
]

DEFAULT_CLOUD_URL = "https://integrations.production.loqed.com"
SETTINGS = frozenset(
    {"open_house_mode", "twist_assist", "touch_to_connect", "touch_to_lock", "hold_to_lock"}
)
_INT32 = (-(2**31), 2**31 - 1)


def _segment(value: str | int, name: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"{name} must be a non-empty string")
    return quote(value.strip(), safe="")


def _data(payload: Any, what: str) -> Any:
    if isinstance(payload, Mapping) and "data" in payload:
        return payload["data"]
    return payload


def _data_list(payload: Any, what: str) -> list[Any]:
    data = _data(payload, what)
    if not isinstance(data, list):
        raise InvalidPayloadError(f"{what}: answer has no data list")
    return data


class CloudCore:
    """Request building and response interpretation for the Integrations API (no I/O)."""

    def __init__(
        self,
        token: SecretLike,
        *,
        base_url: str,
        clock: Clock,
        bolt_state_case: Literal["lower", "upper"],
        locks_path: str,
        status_budget: StatusBudget | None,
    ) -> None:
        wrapped = secret(token)
        if wrapped is None or not reveal(wrapped).strip():
            raise InvalidRequestError("token must be a non-empty string")
        self._token = wrapped
        self.base_url = normalise_base_url(base_url, default_scheme="https")
        self.clock = clock
        if bolt_state_case not in ("lower", "upper"):
            raise InvalidRequestError("bolt_state_case must be 'lower' or 'upper'")
        self.bolt_state_case = bolt_state_case
        self.locks_path = "/" + locks_path.strip("/") + ("/" if locks_path.endswith("/") else "")
        self.status_budget = status_budget

    def repr_fields(self) -> dict[str, object]:
        return {"base_url": self.base_url}

    def _call(self, method: str, path: str, what: str, body: Any = None) -> Call:
        return Call(
            method,
            f"{self.base_url}{path}",
            f"cloud {what}",
            headers={
                "Authorization": f"Bearer {reveal(self._token)}",
                "Accept": "application/json",
            },
            json_body=body,
        )

    def _check(self, response: httpx.Response, call: Call) -> None:
        check_status(response, call.what, now=self.clock())

    def _json(self, response: httpx.Response, call: Call) -> Any:
        self._check(response, call)
        return decode_json(response, call.what)

    # ------------------------------------------------------------------ locks

    def list_locks(self) -> Op[list[CloudLock]]:
        """``GET /api/locks/``, through the status budget when one is configured."""
        call = self._call("GET", self.locks_path, "GET /api/locks")

        def interpret(response: httpx.Response) -> tuple[list[CloudLock], Any]:
            data = _data_list(self._json(response, call), call.what)
            return [CloudLock.from_payload(item) for item in data], data

        def from_cache(cached: CachedAnswer) -> list[CloudLock]:
            return [CloudLock.from_payload(item) for item in _data_list(cached.payload, "cache")]

        return (
            yield from budgeted_read(self.status_budget, "cloud:locks", call, interpret, from_cache)
        )

    def set_bolt_state(self, lock_id: str, state: BoltState | str) -> Op[None]:
        """``GET /api/locks/{id}/bolt_state/{state}``; 2xx (204) = accepted, not done."""
        target = parse_bolt_state(state)
        if target is None or target is BoltState.UNKNOWN:
            raise InvalidRequestError("state must be open, day_lock or night_lock")
        word = target.value.upper() if self.bolt_state_case == "upper" else target.value
        lock = _segment(lock_id, "lock_id")
        call = self._call(
            "GET", f"/api/locks/{lock}/bolt_state/{word}", f"GET bolt_state/{target.value}"
        )
        response = yield call
        self._check(response, call)

    def change_setting(self, lock_id: str, name: str, value: int) -> Op[None]:
        """``POST /api/locks/{id}/setting`` with a whitelisted name and an int32 value."""
        if name not in SETTINGS:
            raise InvalidRequestError(
                f"unknown setting {str(name)[:40]!r}; allowed: {', '.join(sorted(SETTINGS))}"
            )
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int) or not _INT32[0] <= value <= _INT32[1]:
            raise InvalidRequestError("setting value must be an int within the signed 32-bit range")
        lock = _segment(lock_id, "lock_id")
        call = self._call(
            "POST",
            f"/api/locks/{lock}/setting",
            f"POST setting/{name}",
            body={"setting_name": name, "setting_value": value},
        )
        response = yield call
        self._check(response, call)

    def list_keys(self, lock_id: str) -> Op[list[CloudKey]]:
        """``GET /api/locks/{id}/keys``."""
        call = self._call("GET", f"/api/locks/{_segment(lock_id, 'lock_id')}/keys", "GET keys")
        response = yield call
        return [CloudKey.from_payload(k) for k in _data_list(self._json(response, call), call.what)]

    # ------------------------------------------------------------------ cloud webhooks

    def list_webhooks(self, lock_id: str) -> Op[list[CloudWebhook]]:
        """``GET /api/locks/{id}/webhooks``."""
        lock = _segment(lock_id, "lock_id")
        call = self._call("GET", f"/api/locks/{lock}/webhooks", "GET webhooks")
        response = yield call
        data = _data_list(self._json(response, call), call.what)
        return [CloudWebhook.from_payload(item) for item in data]

    def create_webhook(
        self,
        lock_id: str,
        url: str,
        *,
        many: bool = True,
        info: bool = True,
        guest_access_mode: bool = True,
    ) -> Op[CloudWebhook | str]:
        """``POST /api/locks/{id}/webhooks/many`` (or plain ``/webhooks`` with ``many=False``).

        Returns the created webhook, or the raw answer text when it carries no webhook object.
        """
        if not isinstance(url, str) or not url.strip():
            raise InvalidRequestError("webhook url must be a non-empty string")
        lock = _segment(lock_id, "lock_id")
        body: dict[str, Any] = {"url": url, "info": info}
        path = f"/api/locks/{lock}/webhooks"
        if many:
            body["guest_access_mode"] = guest_access_mode
            path += "/many"
        call = self._call("POST", path, "POST webhooks" + ("/many" if many else ""), body=body)
        response = yield call
        self._check(response, call)
        if not response.content.strip():
            return ""
        try:
            payload = decode_json(response, call.what)
        except InvalidPayloadError:
            return response.text.strip()
        data = _data(payload, call.what)
        if isinstance(data, Mapping) and "id" in data:
            merged = {"url": url, **{str(k): v for k, v in data.items()}}
            return CloudWebhook.from_payload(merged)
        return response.text.strip()

    def delete_webhook(self, lock_id: str, webhook_id: int | str) -> Op[None]:
        """``DELETE /api/locks/{id}/webhooks/{webhookId}``."""
        lock = _segment(lock_id, "lock_id")
        hook = _segment(webhook_id, "webhook_id")
        call = self._call("DELETE", f"/api/locks/{lock}/webhooks/{hook}", "DELETE webhook")
        response = yield call
        self._check(response, call)


class CloudClient(SyncBase):
    """Synchronous Integrations API client (personal access token or OAuth token)."""

    def __init__(
        self,
        token: str | SecretStr,
        *,
        base_url: str = DEFAULT_CLOUD_URL,
        http_client: httpx.Client | None = None,
        clock: Clock = time.time,
        timeout: float = 15.0,
        retries: int = 0,
        retry_delay: float = 0.0,
        bolt_state_case: Literal["lower", "upper"] = "lower",
        locks_path: str = "/api/locks/",
        status_budget: StatusBudget | None = None,
    ) -> None:
        self._core = CloudCore(
            token,
            base_url=base_url,
            clock=clock,
            bolt_state_case=bolt_state_case,
            locks_path=locks_path,
            status_budget=status_budget,
        )
        super().__init__(http_client, timeout=timeout, retries=retries, retry_delay=retry_delay)

    def _repr_fields(self) -> dict[str, object]:
        return self._core.repr_fields()

    def list_locks(self) -> list[CloudLock]:
        """All locks the token can see (with its own key slot per lock)."""
        return self._run(self._core.list_locks)

    def set_bolt_state(self, lock_id: str, state: BoltState | str) -> None:
        """Ask the cloud to move a lock; returning means accepted, not done."""
        self._run(self._core.set_bolt_state, lock_id, state)

    def change_setting(self, lock_id: str, name: str, value: int) -> None:
        """Change one whitelisted lock setting."""
        self._run(self._core.change_setting, lock_id, name, value)

    def list_keys(self, lock_id: str) -> list[CloudKey]:
        """Keys of a lock."""
        return self._run(self._core.list_keys, lock_id)

    def list_webhooks(self, lock_id: str) -> list[CloudWebhook]:
        """Cloud webhooks of a lock."""
        return self._run(self._core.list_webhooks, lock_id)

    def create_webhook(
        self,
        lock_id: str,
        url: str,
        *,
        many: bool = True,
        info: bool = True,
        guest_access_mode: bool = True,
    ) -> CloudWebhook | str:
        """Register a cloud webhook."""
        return self._run(
            self._core.create_webhook,
            lock_id,
            url,
            many=many,
            info=info,
            guest_access_mode=guest_access_mode,
        )

    def delete_webhook(self, lock_id: str, webhook_id: int | str) -> None:
        """Delete a cloud webhook."""
        self._run(self._core.delete_webhook, lock_id, webhook_id)


class AsyncCloudClient(AsyncBase):
    """Asynchronous twin of :class:`CloudClient`."""

    def __init__(
        self,
        token: str | SecretStr,
        *,
        base_url: str = DEFAULT_CLOUD_URL,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock = time.time,
        timeout: float = 15.0,
        retries: int = 0,
        retry_delay: float = 0.0,
        bolt_state_case: Literal["lower", "upper"] = "lower",
        locks_path: str = "/api/locks/",
        status_budget: StatusBudget | None = None,
    ) -> None:
        self._core = CloudCore(
            token,
            base_url=base_url,
            clock=clock,
            bolt_state_case=bolt_state_case,
            locks_path=locks_path,
            status_budget=status_budget,
        )
        super().__init__(http_client, timeout=timeout, retries=retries, retry_delay=retry_delay)

    def _repr_fields(self) -> dict[str, object]:
        return self._core.repr_fields()

    async def list_locks(self) -> list[CloudLock]:
        """All locks the token can see (with its own key slot per lock)."""
        return await self._run(self._core.list_locks)

    async def set_bolt_state(self, lock_id: str, state: BoltState | str) -> None:
        """Ask the cloud to move a lock; returning means accepted, not done."""
        await self._run(self._core.set_bolt_state, lock_id, state)

    async def change_setting(self, lock_id: str, name: str, value: int) -> None:
        """Change one whitelisted lock setting."""
        await self._run(self._core.change_setting, lock_id, name, value)

    async def list_keys(self, lock_id: str) -> list[CloudKey]:
        """Keys of a lock."""
        return await self._run(self._core.list_keys, lock_id)

    async def list_webhooks(self, lock_id: str) -> list[CloudWebhook]:
        """Cloud webhooks of a lock."""
        return await self._run(self._core.list_webhooks, lock_id)

    async def create_webhook(
        self,
        lock_id: str,
        url: str,
        *,
        many: bool = True,
        info: bool = True,
        guest_access_mode: bool = True,
    ) -> CloudWebhook | str:
        """Register a cloud webhook."""
        return await self._run(
            self._core.create_webhook,
            lock_id,
            url,
            many=many,
            info=info,
            guest_access_mode=guest_access_mode,
        )

    async def delete_webhook(self, lock_id: str, webhook_id: int | str) -> None:
        """Delete a cloud webhook."""
        await self._run(self._core.delete_webhook, lock_id, webhook_id)
