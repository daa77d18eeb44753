"""Sync and async Lockme clients over one shared core.

Both clients expose the same methods; each is a one-line delegation to a request description
from :mod:`._endpoints`. Token handling: proactive single-flight refresh shortly before expiry,
and on a 401 one forced refresh (reusing a token another caller rotated in meanwhile) and one
retry of the call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
from pydantic import BaseModel

from . import _endpoints as ep
from ._core import DEFAULT_REFRESH_MARGIN, ClientCore, log, transport_error
from ._endpoints import ApiCall
from .errors import RateLimitedError, ServerError, TransportError
from .models import Message, Reservation, Room, Slot, User
from .oauth import OAuthConfig, authorization_url, check_state
from .token import AsyncTokenStore, Token, TokenStore

__all__ = ["AsyncLockmeClient", "LockmeClient"]

T = TypeVar("T")
Data = Mapping[str, Any] | BaseModel
SlotsIn = Sequence[Slot | Mapping[str, Any]]
_DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
_SOFT_REFRESH_FAILURES = (TransportError, ServerError, RateLimitedError)


class _Base:
    """Constructor and OAuth helpers common to both clients."""

    _core: ClientCore

    def _setup(
        self,
        oauth: OAuthConfig,
        store: TokenStore,
        *,
        clock: Callable[[], float],
        venue_tz: str | ZoneInfo,
        refresh_margin: float,
        lock_timeout: float,
        default_duration: int,
    ) -> None:
        self._core = ClientCore(
            oauth,
            store,
            clock=clock,
            venue_tz=venue_tz,
            refresh_margin=refresh_margin,
            lock_timeout=lock_timeout,
            default_duration=default_duration,
        )

    @property
    def oauth(self) -> OAuthConfig:
        return self._core.oauth

    @property
    def store(self) -> TokenStore:
        return self._core.store

    @property
    def venue_tz(self) -> ZoneInfo:
        return self._core.venue_tz

    def authorization_url(
        self, *, state: str | None = None, scopes: Sequence[str] | None = None
    ) -> tuple[str, str]:
        """``(url, state)`` to send the user to; keep ``state`` for :meth:`fetch_token`."""
        return authorization_url(self._core.oauth, state=state, scopes=scopes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_base={self._core.oauth.api_base!r})"


class LockmeClient(_Base):
    """Blocking client. ``http_client`` is injectable (and then not closed by us)."""

    def __init__(
        self,
        oauth: OAuthConfig,
        store: TokenStore,
        *,
        http_client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        venue_tz: str | ZoneInfo = "Europe/Warsaw",
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        lock_timeout: float = 60.0,
        default_duration: int = 60,
        timeout: httpx.Timeout | float = _DEFAULT_TIMEOUT,
    ) -> None:
        self._setup(
            oauth,
            store,
            clock=clock,
            venue_tz=venue_tz,
            refresh_margin=refresh_margin,
            lock_timeout=lock_timeout,
            default_duration=default_duration,
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> LockmeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ I/O

    def _send(self, request: httpx.Request, what: str) -> httpx.Response:
        try:
            response = self._http.send(request)
            response.read()
        except httpx.TransportError as exc:
            raise transport_error(exc, what) from None
        return response

    def _grant(self, request: httpx.Request, previous: Token | None) -> Token:
        response = self._send(request, "token request")
        return self._core.interpret_token(response, previous=previous)

    # ------------------------------------------------------------ tokens

    def fetch_token(self, code: str, *, state: str | None, expected_state: str | None) -> Token:
        """Check ``state`` (constant time), exchange ``code`` and save the token."""
        check_state(expected_state, state)
        token = self._grant(self._core.code_request(code), None)
        with self._core.refresh_lock.hold():
            self._core.store.save(token)
        return token

    def refresh_token(self, *, force: bool = True) -> Token:
        """Refresh now (single-flight). ``force=False`` refreshes only if due."""
        current = self._core.load_token()
        return self._refresh(stale=current.access_token if force else None, force=force)

    def token(self) -> Token:
        """The current token, refreshed first if it expires within the margin."""
        token = self._core.load_token()
        if not self._core.needs_refresh(token):
            return token
        try:
            return self._refresh(stale=None, force=False)
        except _SOFT_REFRESH_FAILURES:
            if self._core.is_expired(token):
                raise
            log.warning("proactive Lockme token refresh failed; using the still-valid token")
            return token

    def _refresh(self, *, stale: str | None, force: bool) -> Token:
        with self._core.refresh_lock.hold():
            current = self._core.store.load()
            reuse = self._core.reusable(current, stale=stale, force=force)
            if reuse is not None:
                return reuse
            assert current is not None
            new = self._grant(self._core.refresh_request(current), current)
            self._core.store.save(new)
            log.info("Lockme token refreshed")
            return new

    def _call(self, call: ApiCall[T]) -> T:
        token = self.token()
        what = f"{call.method} {call.path}"
        response = self._send(self._core.api_request(call, token), what)
        if response.status_code == 401:
            token = self._refresh(stale=token.access_token, force=True)
            response = self._send(self._core.api_request(call, token), what)
        return self._core.interpret(call, response)

    # ------------------------------------------------------------ endpoints

    def test(self) -> str:
        return self._call(ep.test())

    def me(self) -> User:
        return self._call(ep.me())

    def list_rooms(self) -> list[Room]:
        return self._call(ep.list_rooms())

    def get_room(self, room_id: int) -> Room:
        return self._call(ep.get_room(room_id))

    def edit_room(self, room_id: int, data: Data) -> dict[str, Any]:
        return self._call(ep.edit_room(room_id, data))

    def get_reservation(self, room_id: int, reservation_id: int | str) -> Reservation:
        return self._call(ep.get_reservation(room_id, reservation_id))

    def add_reservation(self, data: Data) -> int:
        return self._call(ep.add_reservation(data))

    def edit_reservation(
        self, room_id: int, reservation_id: int | str, data: Data
    ) -> dict[str, Any]:
        return self._call(ep.edit_reservation(room_id, reservation_id, data))

    def delete_reservation(self, room_id: int, reservation_id: int | str) -> bool:
        return self._call(ep.delete_reservation(room_id, reservation_id))

    def move_reservation(
        self, room_id: int, reservation_id: int | str, *, roomid: int, date: str, hour: str
    ) -> dict[str, Any]:
        return self._call(
            ep.move_reservation(room_id, reservation_id, roomid=roomid, date=date, hour=hour)
        )

    def list_reservations(self, room_id: int, date: str) -> list[Reservation]:
        return self._call(ep.list_reservations(room_id, date))

    def get_message(self, message_id: int | str) -> Message:
        return self._call(ep.get_message(message_id))

    def mark_message_read(self, message_id: int | str) -> bool:
        return self._call(ep.mark_message_read(message_id))

    def get_date_settings(self, room_id: int, date: str) -> list[Slot]:
        return self._call(ep.get_date_settings(room_id, date))

    def set_date_settings(self, room_id: int, date: str, slots: SlotsIn) -> list[Slot]:
        return self._call(ep.set_date_settings(room_id, date, slots))

    def remove_date_settings(self, room_id: int, date: str) -> list[Slot]:
        return self._call(ep.remove_date_settings(room_id, date))

    def get_day_settings(self, room_id: int, day: int) -> list[Slot]:
        return self._call(ep.get_day_settings(room_id, day))

    def set_day_settings(self, room_id: int, day: int, slots: SlotsIn) -> list[Slot]:
        return self._call(ep.set_day_settings(room_id, day, slots))


class AsyncLockmeClient(_Base):
    """Asyncio client; waiting for the refresh lock never blocks the event loop.

    With an :class:`~roomkey.lockme.token.AsyncTokenStore` the token is loaded and saved
    through its awaitable ``aload``/``asave``; other stores are called directly.
    """

    def __init__(
        self,
        oauth: OAuthConfig,
        store: TokenStore,
        *,
        http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        venue_tz: str | ZoneInfo = "Europe/Warsaw",
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        lock_timeout: float = 60.0,
        default_duration: int = 60,
        timeout: httpx.Timeout | float = _DEFAULT_TIMEOUT,
    ) -> None:
        self._setup(
            oauth,
            store,
            clock=clock,
            venue_tz=venue_tz,
            refresh_margin=refresh_margin,
            lock_timeout=lock_timeout,
            default_duration=default_duration,
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncLockmeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ I/O

    async def _send(self, request: httpx.Request, what: str) -> httpx.Response:
        try:
            return await self._transmit(request)
        except httpx.TransportError as exc:
            raise transport_error(exc, what) from None

    async def _transmit(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and read the whole answer (a subclass may send another way;
        httpx transport errors propagate)."""
        response = await self._http.send(request)
        await response.aread()
        return response

    async def _grant(self, request: httpx.Request, previous: Token | None) -> Token:
        response = await self._send(request, "token request")
        return self._core.interpret_token(response, previous=previous)

    # ------------------------------------------------------------ tokens

    async def fetch_token(
        self, code: str, *, state: str | None, expected_state: str | None
    ) -> Token:
        """Check ``state`` (constant time), exchange ``code`` and save the token."""
        check_state(expected_state, state)
        token = await self._grant(self._core.code_request(code), None)
        async with self._core.refresh_lock.hold_async():
            await self._save(token)
        return token

    async def _load(self) -> Token | None:
        store = self._core.store
        return await store.aload() if isinstance(store, AsyncTokenStore) else store.load()

    async def _save(self, token: Token) -> None:
        store = self._core.store
        if isinstance(store, AsyncTokenStore):
            await store.asave(token)
        else:
            store.save(token)

    async def refresh_token(self, *, force: bool = True) -> Token:
        """Refresh now (single-flight). ``force=False`` refreshes only if due."""
        current = self._core.require(await self._load())
        return await self._refresh(stale=current.access_token if force else None, force=force)

    async def token(self) -> Token:
        """The current token, refreshed first if it expires within the margin."""
        token = self._core.require(await self._load())
        if not self._core.needs_refresh(token):
            return token
        try:
            return await self._refresh(stale=None, force=False)
        except _SOFT_REFRESH_FAILURES:
            if self._core.is_expired(token):
                raise
            log.warning("proactive Lockme token refresh failed; using the still-valid token")
            return token

    async def _refresh(self, *, stale: str | None, force: bool) -> Token:
        async with self._core.refresh_lock.hold_async():
            current = await self._load()
            reuse = self._core.reusable(current, stale=stale, force=force)
            if reuse is not None:
                return reuse
            assert current is not None
            new = await self._grant(self._core.refresh_request(current), current)
            await self._save(new)
            log.info("Lockme token refreshed")
            return new

    async def _call(self, call: ApiCall[T]) -> T:
        token = await self.token()
        what = f"{call.method} {call.path}"
        response = await self._send(self._core.api_request(call, token), what)
        if response.status_code == 401:
            token = await self._refresh(stale=token.access_token, force=True)
            response = await self._send(self._core.api_request(call, token), what)
        return self._core.interpret(call, response)

    # ------------------------------------------------------------ endpoints

    async def test(self) -> str:
        return await self._call(ep.test())

    async def me(self) -> User:
        return await self._call(ep.me())

    async def list_rooms(self) -> list[Room]:
        return await self._call(ep.list_rooms())

    async def get_room(self, room_id: int) -> Room:
        return await self._call(ep.get_room(room_id))

    async def edit_room(self, room_id: int, data: Data) -> dict[str, Any]:
        return await self._call(ep.edit_room(room_id, data))

    async def get_reservation(self, room_id: int, reservation_id: int | str) -> Reservation:
        return await self._call(ep.get_reservation(room_id, reservation_id))

    async def add_reservation(self, data: Data) -> int:
        return await self._call(ep.add_reservation(data))

    async def edit_reservation(
        self, room_id: int, reservation_id: int | str, data: Data
    ) -> dict[str, Any]:
        return await self._call(ep.edit_reservation(room_id, reservation_id, data))

    async def delete_reservation(self, room_id: int, reservation_id: int | str) -> bool:
        return await self._call(ep.delete_reservation(room_id, reservation_id))

    async def move_reservation(
        self, room_id: int, reservation_id: int | str, *, roomid: int, date: str, hour: str
    ) -> dict[str, Any]:
        return await self._call(
            ep.move_reservation(room_id, reservation_id, roomid=roomid, date=date, hour=hour)
        )

    async def list_reservations(self, room_id: int, date: str) -> list[Reservation]:
        return await self._call(ep.list_reservations(room_id, date))

    async def get_message(self, message_id: int | str) -> Message:
        return await self._call(ep.get_message(message_id))

    async def mark_message_read(self, message_id: int | str) -> bool:
        return await self._call(ep.mark_message_read(message_id))

    async def get_date_settings(self, room_id: int, date: str) -> list[Slot]:
        return await self._call(ep.get_date_settings(room_id, date))

    async def set_date_settings(self, room_id: int, date: str, slots: SlotsIn) -> list[Slot]:
        return await self._call(ep.set_date_settings(room_id, date, slots))

    async def remove_date_settings(self, room_id: int, date: str) -> list[Slot]:
        return await self._call(ep.remove_date_settings(room_id, date))

    async def get_day_settings(self, room_id: int, day: int) -> list[Slot]:
        return await self._call(ep.get_day_settings(room_id, day))

    async def set_day_settings(self, room_id: int, day: int, slots: SlotsIn) -> list[Slot]:
        return await self._call(ep.set_day_settings(room_id, day, slots))
