"""Webhook delivery: an empty-body request per attempt, redelivered until read or 24 h pass.

Lockme documents only that an unread message "is repeated for 24 hours at increasing
intervals"; the exact schedule is unknown, so :data:`DEFAULT_SCHEDULE` is our guess and
configurable. A receiver that is down simply misses that attempt (nothing is queued beyond the
schedule). Whether Lockme looks at the receiver's status code is unknown too: here only
mark-read stops redelivery, a 2xx answer does not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import httpx

from roomkey.sim.clock import SimClock, Timer
from roomkey.sim.lockme.faults import Faults
from roomkey.sim.lockme.models import DeliveryAttempt, Department, Message

__all__ = ["DEFAULT_SCHEDULE", "USER_AGENT", "WebhookDispatcher"]

log = logging.getLogger(__name__)

USER_AGENT = "LockMe/1.0"
DEFAULT_SCHEDULE: tuple[float, ...] = (0, 60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600,
                                       24 * 3600)
"""Attempt times in seconds after the message is created: now, 1 min, 5 min, 15 min, 1 h,
3 h, 6 h, 12 h and 24 h (the last one)."""


def _safe_url(url: str) -> str:
    """The URL without its query (webhook URLs carry secrets there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class WebhookDispatcher:
    """Schedules and performs deliveries on the simulator clock."""

    def __init__(
        self,
        clock: SimClock,
        faults: Faults,
        department: Callable[[int], Department | None],
        *,
        client: httpx.AsyncClient | None = None,
        schedule: Sequence[float] = DEFAULT_SCHEDULE,
        timeout: float = 10.0,
        max_parallel: int = 16,
    ) -> None:
        self._clock = clock
        self._faults = faults
        self._department = department
        self._client = client
        self._owns_client = client is None
        self.schedule = tuple(sorted(float(s) for s in schedule))
        if not self.schedule or self.schedule[0] < 0:
            raise ValueError("the redelivery schedule needs at least one offset >= 0")
        self.timeout = timeout
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self.max_parallel = max_parallel
        """Deliveries in flight at once at most (Lockme's own figure is unknown). Unbounded,
        hundreds of queued requests made httpcore's pool scan quadratic: 1,000 bookings at
        once took the simulator over a minute to deliver."""
        self._slots: asyncio.Semaphore | None = None
        self._timers: dict[int, list[Timer]] = {}
        self._tasks: set[asyncio.Task[DeliveryAttempt | None]] = set()

    def start(self, message: Message) -> None:
        """Schedule every attempt of a new message."""
        message.schedule = [message.created + off for off in self.schedule]
        self._timers[message.id] = [
            self._clock.call_at(when, self._attempt_callback(message)) for when in message.schedule
        ]

    def stop(self, message: Message) -> None:
        """Cancel the remaining attempts (the message was marked read)."""
        for timer in self._timers.pop(message.id, []):
            timer.cancel()

    def pending(self) -> int:
        return sum(1 for ts in self._timers.values() for t in ts if not t.cancelled)

    def _attempt_callback(self, message: Message) -> Callable[[], Awaitable[None]]:
        async def fire() -> None:
            if message.read:
                return
            if self._clock.manual:
                await self.deliver(message)
            else:  # never let a slow receiver hold up the warped clock
                task = asyncio.create_task(self.deliver(message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        return fire

    async def deliver(self, message: Message) -> DeliveryAttempt | None:
        """Make one delivery attempt now; returns it (``None`` when no webhook is configured)."""
        dept = self._department(message.department_id)
        if dept is None or not dept.webhook_url or not dept.webhook_active:
            return None
        now = self._clock.time()
        if self._faults.drop_delivery():
            attempt = DeliveryAttempt(now, "dropped")
        else:
            attempt = await self._send(dept, message, now)
        message.attempts.append(attempt)
        return attempt

    async def _send(self, dept: Department, message: Message, now: float) -> DeliveryAttempt:
        assert dept.webhook_url is not None
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_parallel)
        headers = {"User-Agent": USER_AGENT, "X-MessageId": str(message.id)}
        try:
            async with self._slots:
                response = await self._client.request(
                    dept.webhook_method, dept.webhook_url, headers=headers, content=b"",
                    timeout=self.timeout,
                )
        except httpx.HTTPError as exc:
            log.info("webhook delivery of message %s to %s failed: %s", message.id,
                     _safe_url(dept.webhook_url), type(exc).__name__)
            return DeliveryAttempt(now, "failed", error=type(exc).__name__)
        return DeliveryAttempt(now, "delivered", status_code=response.status_code)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for timers in self._timers.values():
            for t in timers:
                t.cancel()
        self._timers.clear()
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
