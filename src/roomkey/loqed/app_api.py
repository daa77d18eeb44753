"""The older app.loqed.com "incoming webhook" API (``lock_status.php``/``lock_command.php``).

Two ways to use it:

* :meth:`AppApiClient.from_urls` with the four ready-made URLs LOQED shows (open, latch,
  night lock, status). They are used exactly as pasted and treated as secrets: they never
  appear in a repr, error or log line. The status URL must carry ``api_token`` and
  ``lock_id``.
* ``AppApiClient(api_token, lock_id, key_secret=..., local_key_id=...)``: roomkey signs
  ``lock_command.php`` itself, freshly for every attempt — 45 bytes (no message id, as the
  only public client does) by default, 53 bytes with ``short_command=False``.

``lock_status.php`` is the endpoint LOQED rate-limits hardest (12 reads per 12 h, then a
12-hour block): pass a :class:`~roomkey.loqed.budget.StatusBudget`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
from pydantic import SecretStr

from ._http import AsyncBase, Call, Op, SyncBase, check_status, decode_json
from ._secrets import SecretLike, check_key, normalise_base_url, reveal, secret
from .budget import CachedAnswer, StatusBudget, budgeted_read
from .errors import InvalidPayloadError, InvalidRequestError
from .models import BoltState, LockStatus
from .signing import Action, Clock, sign_command

__all__ = ["DEFAULT_APP_URL", "AppApiClient", "AppApiCore", "AsyncAppApiClient", "PastedUrls"]

DEFAULT_APP_URL = "https://app.loqed.com/API"


def _check_pasted(url: str, name: str) -> SecretStr:
    if not isinstance(url, str):
        raise InvalidRequestError(f"{name} must be a string")
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        raise InvalidRequestError(f"{name} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidRequestError(f"{name} must be an absolute http(s) URL")
    return SecretStr(url.strip())


@dataclass(frozen=True, slots=True)
class PastedUrls:
    """The four URLs shown by LOQED, kept as secrets."""

    open: SecretStr
    latch: SecretStr
    night_lock: SecretStr
    status: SecretStr

    @classmethod
    def parse(
        cls, open_url: str, latch_url: str, night_lock_url: str, status_url: str
    ) -> tuple[PastedUrls, str, str]:
        """Validate the URLs; return them with the status URL's ``api_token`` and ``lock_id``."""
        urls = cls(
            open=_check_pasted(open_url, "open_url"),
            latch=_check_pasted(latch_url, "latch_url"),
            night_lock=_check_pasted(night_lock_url, "night_lock_url"),
            status=_check_pasted(status_url, "status_url"),
        )
        query = parse_qs(urlsplit(reveal(urls.status)).query)
        tokens, locks = query.get("api_token", []), query.get("lock_id", [])
        if len(tokens) != 1 or len(locks) != 1 or not tokens[0] or not locks[0]:
            raise InvalidRequestError("status_url must contain one api_token and one lock_id")
        return urls, tokens[0], locks[0]


class AppApiCore:
    """Request building and response interpretation for app.loqed.com (no I/O)."""

    def __init__(
        self,
        api_token: SecretLike,
        lock_id: str,
        *,
        key_secret: SecretLike | None,
        local_key_id: int | None,
        base_url: str,
        short_command: bool,
        clock: Clock,
        status_budget: StatusBudget | None,
        urls: PastedUrls | None = None,
    ) -> None:
        token = secret(api_token)
        if token is None or not reveal(token).strip():
            raise InvalidRequestError("api_token must be a non-empty string")
        if not isinstance(lock_id, str) or not lock_id.strip():
            raise InvalidRequestError("lock_id must be a non-empty string")
        self._token = token
        self.lock_id = lock_id.strip()
        self._key_secret = secret(key_secret)
        check_key(self._key_secret, "key_secret")
        if local_key_id is not None and (
            isinstance(local_key_id, bool) or not 0 <= local_key_id <= 254
        ):
            raise InvalidRequestError("local_key_id must be within 0..254")
        self.local_key_id = local_key_id
        self.base_url = normalise_base_url(base_url, default_scheme="https")
        self.short_command = short_command
        self.clock = clock
        self.status_budget = status_budget
        self.urls = urls

    def repr_fields(self) -> dict[str, object]:
        mode = "pasted_urls" if self.urls is not None else "self_signed"
        return {"lock_id": self.lock_id, "mode": mode}

    def _query(self) -> str:
        return (
            f"api_token={quote(reveal(self._token), safe='')}"
            f"&lock_id={quote(self.lock_id, safe='')}"
        )

    # ------------------------------------------------------------------ status

    def _interpret_status(self, response: httpx.Response) -> tuple[LockStatus, Any]:
        what = "app.loqed.com lock_status.php"
        check_status(response, what, now=self.clock())
        data = decode_json(response, what)
        status = LockStatus.from_payload(data, fetched_at=self.clock())
        if status.lock_id is not None and status.lock_id != self.lock_id:
            raise InvalidPayloadError(f"{what}: answer is for another lock")
        return status, data

    @staticmethod
    def _from_cache(cached: CachedAnswer) -> LockStatus:
        return LockStatus.from_payload(cached.payload, cached=True, fetched_at=cached.fetched_at)

    def status(self) -> Op[LockStatus]:
        """``lock_status.php`` (pasted URL as-is, or built from token and lock id)."""
        if self.urls is not None:
            url = reveal(self.urls.status)
        else:
            url = f"{self.base_url}/lock_status.php?{self._query()}"
        call = Call("GET", url, "app.loqed.com lock_status.php")
        return (
            yield from budgeted_read(
                self.status_budget,
                f"app:{self.lock_id}",
                call,
                self._interpret_status,
                self._from_cache,
            )
        )

    # ------------------------------------------------------------------ commands

    def command(self, action: Action | BoltState | int) -> Op[None]:
        """Send one command: the pasted URL, or a freshly signed ``lock_command.php``."""
        if isinstance(action, BoltState):
            act = action.action
        else:
            try:
                act = Action(action)
            except ValueError:
                raise InvalidRequestError("action must be OPEN, DAY_LOCK or NIGHT_LOCK") from None
        if self.urls is not None:
            pasted = {
                Action.OPEN: self.urls.open,
                Action.DAY_LOCK: self.urls.latch,
                Action.NIGHT_LOCK: self.urls.night_lock,
            }[act]
            url = reveal(pasted)
            what = f"app.loqed.com pasted {act.name} URL"
        else:
            if self._key_secret is None or self.local_key_id is None:
                raise InvalidRequestError("self-signed commands need key_secret and local_key_id")
            signed = sign_command(
                reveal(self._key_secret),
                action=act,
                local_key_id=self.local_key_id,
                clock=self.clock,
                with_message_id=not self.short_command,
            )
            url = (
                f"{self.base_url}/lock_command.php?{self._query()}"
                f"&command_signed_base64={quote(signed, safe='')}"
            )
            what = f"app.loqed.com lock_command.php ({act.name})"
        response = yield Call("GET", url, what, close_connection=True)
        check_status(response, what, now=self.clock())


def _init_kwargs(
    *,
    key_secret: SecretLike | None,
    local_key_id: int | None,
    base_url: str,
    short_command: bool,
    clock: Clock,
    status_budget: StatusBudget | None,
) -> dict[str, Any]:
    return {
        "key_secret": key_secret,
        "local_key_id": local_key_id,
        "base_url": base_url,
        "short_command": short_command,
        "clock": clock,
        "status_budget": status_budget,
    }


class AppApiClient(SyncBase):
    """Synchronous app.loqed.com client (pasted URLs or self-signed commands)."""

    def __init__(
        self,
        api_token: str | SecretStr,
        lock_id: str,
        *,
        key_secret: str | SecretStr | None = None,
        local_key_id: int | None = None,
        base_url: str = DEFAULT_APP_URL,
        short_command: bool = True,
        http_client: httpx.Client | None = None,
        clock: Clock = time.time,
        timeout: float = 15.0,
        retries: int = 0,
        retry_delay: float = 0.0,
        status_budget: StatusBudget | None = None,
        _urls: PastedUrls | None = None,
    ) -> None:
        self._core = AppApiCore(
            api_token,
            lock_id,
            urls=_urls,
            **_init_kwargs(
                key_secret=key_secret,
                local_key_id=local_key_id,
                base_url=base_url,
                short_command=short_command,
                clock=clock,
                status_budget=status_budget,
            ),
        )
        super().__init__(http_client, timeout=timeout, retries=retries, retry_delay=retry_delay)

    @classmethod
    def from_urls(
        cls,
        open_url: str,
        latch_url: str,
        night_lock_url: str,
        status_url: str,
        *,
        http_client: httpx.Client | None = None,
        clock: Clock = time.time,
        timeout: float = 15.0,
        retries: int = 0,
        retry_delay: float = 0.0,
        status_budget: StatusBudget | None = None,
    ) -> AppApiClient:
        """Build a client from the four URLs LOQED shows (used as-is, kept secret)."""
        urls, token, lock_id = PastedUrls.parse(open_url, latch_url, night_lock_url, status_url)
        return cls(
            token,
            lock_id,
            http_client=http_client,
            clock=clock,
            timeout=timeout,
            retries=retries,
            retry_delay=retry_delay,
            status_budget=status_budget,
            _urls=urls,
        )

    def _repr_fields(self) -> dict[str, object]:
        return self._core.repr_fields()

    def status(self) -> LockStatus:
        """Read ``lock_status.php`` (rate-limited by LOQED: use a StatusBudget)."""
        return self._run(self._core.status)

    def command(self, action: Action | BoltState | int) -> None:
        """Send one command (never auto-retried once it may have left)."""
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


class AsyncAppApiClient(AsyncBase):
    """Asynchronous twin of :class:`AppApiClient`."""

    def __init__(
        self,
        api_token: str | SecretStr,
        lock_id: str,
        *,
        key_secret: str | SecretStr | None = None,
        local_key_id: int | None = None,
        base_url: str = DEFAULT_APP_URL,
        short_command: bool = True,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock = time.time,
        timeout: float = 15.0,
        retries: int = 0,
        retry_delay: float = 0.0,
        status_budget: StatusBudget | None = None,
        _urls: PastedUrls | None = None,
    ) -> None:
        self._core = AppApiCore(
            api_token,
            lock_id,
            urls=_urls,
            **_init_kwargs(
                key_secret=key_secret,
                local_key_id=local_key_id,
                base_url=base_url,
                short_command=short_command,
                clock=clock,
                status_budget=status_budget,
            ),
        )
        super().__init__(http_client, timeout=timeout, retries=retries, retry_delay=retry_delay)

    @classmethod
    def from_urls(
        cls,
        open_url: str,
        latch_url: str,
        night_lock_url: str,
        status_url: str,
        *,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock = time.time,
        timeout: float = 15.0,
        retries: int = 0,
        retry_delay: float = 0.0,
        status_budget: StatusBudget | None = None,
    ) -> AsyncAppApiClient:
        """Build a client from the four URLs LOQED shows (used as-is, kept secret)."""
        urls, token, lock_id = PastedUrls.parse(open_url, latch_url, night_lock_url, status_url)
        return cls(
            token,
            lock_id,
            http_client=http_client,
            clock=clock,
            timeout=timeout,
            retries=retries,
            retry_delay=retry_delay,
            status_budget=status_budget,
            _urls=urls,
        )

    def _repr_fields(self) -> dict[str, object]:
        return self._core.repr_fields()

    async def status(self) -> LockStatus:
        """Read ``lock_status.php`` (rate-limited by LOQED: use a StatusBudget)."""
        return await self._run(self._core.status)

    async def command(self, action: Action | BoltState | int) -> None:
        """Send one command (never auto-retried once it may have left)."""
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
