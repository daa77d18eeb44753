"""Lockme webhook messages: fetch by ``X-MessageId``, dispatch by action, ack after success.

Lockme POSTs (some integrations see GET) an empty body with ``X-MessageId``; the message itself
is fetched over the authenticated API, and marking it read is the acknowledgement. Until then
Lockme redelivers it for 24 hours. So the helper:

1. validates the id (positive integer, else :class:`InvalidRequestError`, nothing fetched);
2. claims it in a :class:`SeenStore`: a delivery of an id that is already being handled returns
   ``IN_PROGRESS`` (no second handler run); one already handled returns ``DUPLICATE`` after
   (re-)acking it, without running the handler again;
3. fetches the message and calls the handler registered for its ``action``;
4. marks the message read only after the handler returned (``False`` = "not handled": leave
   it unread). A raising handler leaves it unread too, so Lockme redelivers it.

Unknown actions (no handler registered) follow ``on_unknown``: ``"raise"`` (default: leave unread
and raise :class:`UnknownActionError`), ``"ignore"`` (leave unread, no error) or ``"ack"``. A
``test`` message is acked without a handler unless one is registered for it.
"""

from __future__ import annotations

import enum
import inspect
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal, Protocol

from .client import AsyncLockmeClient, LockmeClient
from .errors import LockmeError
from .models import Message
from .validation import validate_message_id

__all__ = [
    "AsyncMessageHandler",
    "AsyncSeenStore",
    "Claim",
    "MemorySeenStore",
    "MessageHandler",
    "Outcome",
    "SeenStore",
    "UnknownActionError",
    "parse_message_id",
]

ACTIONS = ("add", "edit", "delete", "test")
OnUnknown = Literal["raise", "ignore", "ack"]
SyncHandler = Callable[[Message], bool | None]
AsyncHandler = Callable[[Message], Awaitable[bool | None] | bool | None]


class UnknownActionError(LockmeError):
    """A message whose action has no handler (left unread)."""

    def __init__(self, message_id: int, action: str) -> None:
        super().__init__(f"message {message_id}: no handler for action {action!r}")
        self.message_id = message_id
        self.action = action


class Claim(enum.Enum):
    """What the seen-store says about a message id."""

    NEW = "new"  # nobody has it: you now own it
    BUSY = "busy"  # someone is handling it right now
    HANDLED = "handled"  # handled, but the ack may not have reached Lockme
    ACKED = "acked"  # handled and marked read


class Outcome(enum.Enum):
    """What :meth:`MessageHandler.handle` did."""

    HANDLED = "handled"  # handler succeeded, message marked read
    DUPLICATE = "duplicate"  # already handled earlier: (re-)acked, handler not called
    IN_PROGRESS = "in_progress"  # the same id is being handled concurrently: nothing done
    NOT_HANDLED = "not_handled"  # handler returned False: left unread
    IGNORED = "ignored"  # unknown action with on_unknown="ignore": left unread
    ACKED_UNKNOWN = "acked_unknown"  # unknown action with on_unknown="ack": marked read


class SeenStore(Protocol):
    """Remembers message ids across deliveries. Implementations must be atomic per id."""

    def claim(self, message_id: int) -> Claim: ...

    def mark_handled(self, message_id: int) -> None: ...

    def mark_acked(self, message_id: int) -> None: ...

    def release(self, message_id: int) -> None: ...


class AsyncSeenStore(Protocol):
    """Async variant of :class:`SeenStore` (e.g. backed by a database)."""

    async def claim(self, message_id: int) -> Claim: ...

    async def mark_handled(self, message_id: int) -> None: ...

    async def mark_acked(self, message_id: int) -> None: ...

    async def release(self, message_id: int) -> None: ...


class MemorySeenStore:
    """In-process seen-store; remembers the last ``capacity`` finished ids."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._busy: set[int] = set()
        self._done: OrderedDict[int, Claim] = OrderedDict()
        self._capacity = capacity

    def claim(self, message_id: int) -> Claim:
        with self._lock:
            if message_id in self._busy:
                return Claim.BUSY
            state = self._done.get(message_id)
            if state is not None:
                self._done.move_to_end(message_id)
                if state is Claim.HANDLED:
                    self._busy.add(message_id)  # the caller re-acks it
                return state
            self._busy.add(message_id)
            return Claim.NEW

    def mark_handled(self, message_id: int) -> None:
        with self._lock:
            self._remember(message_id, Claim.HANDLED)

    def mark_acked(self, message_id: int) -> None:
        with self._lock:
            self._remember(message_id, Claim.ACKED)
            self._busy.discard(message_id)

    def release(self, message_id: int) -> None:
        with self._lock:
            self._busy.discard(message_id)

    def state(self, message_id: int) -> Claim:
        """Current state (``NEW`` if unknown), for inspection."""
        with self._lock:
            if message_id in self._busy and self._done.get(message_id) is not Claim.HANDLED:
                return Claim.BUSY
            return self._done.get(message_id, Claim.NEW)

    def _remember(self, message_id: int, state: Claim) -> None:
        self._done[message_id] = state
        self._done.move_to_end(message_id)
        while len(self._done) > self._capacity:
            self._done.popitem(last=False)


class _AsyncMemorySeenStore:
    """Adapts :class:`MemorySeenStore` to :class:`AsyncSeenStore`."""

    def __init__(self, inner: MemorySeenStore) -> None:
        self.inner = inner

    async def claim(self, message_id: int) -> Claim:
        return self.inner.claim(message_id)

    async def mark_handled(self, message_id: int) -> None:
        self.inner.mark_handled(message_id)

    async def mark_acked(self, message_id: int) -> None:
        self.inner.mark_acked(message_id)

    async def release(self, message_id: int) -> None:
        self.inner.release(message_id)


def parse_message_id(value: str | int | None) -> int:
    """The ``X-MessageId`` header as a positive int; else :class:`InvalidRequestError`."""
    return validate_message_id(value)


def _pick(
    handlers: Mapping[str, Callable[[Message], object]], message: Message
) -> Callable[[Message], object] | None:
    handler = handlers.get(message.action)
    if handler is None and message.action == "test":
        return _ack_test
    return handler


def _ack_test(message: Message) -> None:
    return None


class MessageHandler:
    """Blocking webhook helper. ``handlers`` maps an action to a callable taking the message."""

    def __init__(
        self,
        client: LockmeClient,
        handlers: Mapping[str, SyncHandler],
        *,
        seen: SeenStore | None = None,
        on_unknown: OnUnknown = "raise",
    ) -> None:
        self.client = client
        self.handlers = dict(handlers)
        self.seen: SeenStore = seen if seen is not None else MemorySeenStore()
        self.on_unknown = on_unknown

    def handle(self, message_id: str | int | None) -> Outcome:
        """Process one delivery (the raw ``X-MessageId`` value)."""
        mid = parse_message_id(message_id)
        claim = self.seen.claim(mid)
        if claim is Claim.BUSY:
            return Outcome.IN_PROGRESS
        if claim is Claim.ACKED:
            return Outcome.DUPLICATE
        try:
            if claim is Claim.HANDLED:
                self._ack(mid)
                return Outcome.DUPLICATE
            message = self.client.get_message(mid)
            handler = _pick(self.handlers, message)
            if handler is None:
                return self._unknown(mid, message)
            if handler(message) is False:
                return Outcome.NOT_HANDLED
            self.seen.mark_handled(mid)
            self._ack(mid)
            return Outcome.HANDLED
        finally:
            self.seen.release(mid)

    def _ack(self, mid: int) -> None:
        # Lockme answering ``false`` leaves the id in HANDLED: a redelivery re-acks it.
        if self.client.mark_message_read(mid):
            self.seen.mark_acked(mid)

    def _unknown(self, mid: int, message: Message) -> Outcome:
        if self.on_unknown == "ack":
            self._ack(mid)
            return Outcome.ACKED_UNKNOWN
        if self.on_unknown == "ignore":
            return Outcome.IGNORED
        raise UnknownActionError(mid, message.action)


class AsyncMessageHandler:
    """Asyncio webhook helper; handlers may be coroutine functions or plain callables."""

    def __init__(
        self,
        client: AsyncLockmeClient,
        handlers: Mapping[str, AsyncHandler],
        *,
        seen: AsyncSeenStore | MemorySeenStore | None = None,
        on_unknown: OnUnknown = "raise",
    ) -> None:
        self.client = client
        self.handlers = dict(handlers)
        if seen is None:
            seen = MemorySeenStore()
        self.seen: AsyncSeenStore = (
            _AsyncMemorySeenStore(seen) if isinstance(seen, MemorySeenStore) else seen
        )
        self.on_unknown = on_unknown

    async def handle(self, message_id: str | int | None) -> Outcome:
        """Process one delivery (the raw ``X-MessageId`` value)."""
        mid = parse_message_id(message_id)
        claim = await self.seen.claim(mid)
        if claim is Claim.BUSY:
            return Outcome.IN_PROGRESS
        if claim is Claim.ACKED:
            return Outcome.DUPLICATE
        try:
            if claim is Claim.HANDLED:
                await self._ack(mid)
                return Outcome.DUPLICATE
            message = await self.client.get_message(mid)
            handler = _pick(self.handlers, message)
            if handler is None:
                return await self._unknown(mid, message)
            result = handler(message)
            if inspect.isawaitable(result):
                result = await result
            if result is False:
                return Outcome.NOT_HANDLED
            await self.seen.mark_handled(mid)
            await self._ack(mid)
            return Outcome.HANDLED
        finally:
            await self.seen.release(mid)

    async def _ack(self, mid: int) -> None:
        if await self.client.mark_message_read(mid):
            await self.seen.mark_acked(mid)

    async def _unknown(self, mid: int, message: Message) -> Outcome:
        if self.on_unknown == "ack":
            await self._ack(mid)
            return Outcome.ACKED_UNKNOWN
        if self.on_unknown == "ignore":
            return Outcome.IGNORED
        raise UnknownActionError(mid, message.action)
