"""Group commit: many concurrent callers, one transaction per batch.

A receiver that commits one transaction per request pays BEGIN/COMMIT (and, on SQLite, a turn
at the single write lock) for every webhook. :class:`GroupCommit` lets each caller
``await submit(item)`` and get its own result, while one drain task writes whatever has queued
in one call to ``run_batch`` (one transaction). There is no timer: while a batch is being
written the next one gathers, so an idle system answers at once and a busy one batches more.

With ``hold`` (an async context manager factory, e.g. "open a transaction and wait for the
database's write turn") the batch is taken only once ``hold`` has been entered, and the callers
are answered only after it has been left without error (e.g. committed): what queued while the
writer waited for its turn joins this batch instead of waiting for the next one.

Every caller is answered only after the batch holding its item has run, so "durable before the
answer" still holds. When ``run_batch`` raises, every caller of that batch gets the exception
and nothing of the batch is acknowledged; later batches are unaffected. A caller that gives up
(is cancelled) does not take its item back: it is written with its batch all the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any, Generic, TypeVar

__all__ = ["BatchNotWritten", "GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


class BatchNotWritten(RuntimeError):
    """The drain task was cancelled (shutdown) before the caller's batch was written."""


class GroupCommit(Generic[T, R]):
    """Batches concurrent ``submit`` calls into calls of ``run_batch(items) -> results``.

    ``run_batch`` must return one result per item, in order. ``max_batch`` bounds a batch
    (and so a transaction's size). ``hold`` (optional) is entered before a batch is taken and
    left after ``run_batch`` returned; an error entering, inside or leaving it fails the
    batch. Usable again after :meth:`aclose` (a later ``submit`` starts a new drain task)."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = 256,
        name: str = "group-commit",
        hold: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._name = name
        self._hold = hold
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._drain: asyncio.Task[None] | None = None
        self.batches = 0
        """Batches written so far (for tests and metrics)."""
        self.items = 0
        """Items written so far."""
        self.failed_batches = 0
        """Batches whose ``run_batch`` raised."""

    @property
    def pending(self) -> int:
        """Items queued and not yet handed to ``run_batch``."""
        return len(self._pending)

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait until the batch holding it has been written.

        Cancelling the wait does not withdraw the item: it is written with its batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        drain = self._drain
        if drain is None or drain.done():
            self._drain = loop.create_task(self._drain_all(), name=self._name)
        return await future

    async def _drain_all(self) -> None:
        # Let the callers that are already runnable queue their items first.
        await asyncio.sleep(0)
        while self._pending:
            batch: list[tuple[T, asyncio.Future[R]]] = []
            try:
                async with self._hold() if self._hold is not None else nullcontext():
                    batch = self._take()
                    results = await self._run_batch([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(
                            f"{self._name}: run_batch returned {len(results)} results "
                            f"for {len(batch)} items"
                        )
            except asyncio.CancelledError:
                error = BatchNotWritten(f"{self._name}: stopped before the batch was written")
                for _, future in batch + self._pending:
                    if not future.done():
                        future.set_exception(error)
                self._pending.clear()
                raise
            except Exception as exc:  # every caller of the batch sees the failure
                if not batch:  # ``hold`` failed before the batch was taken
                    batch = self._take()
                self.failed_batches += 1
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        return batch

    async def aclose(self) -> None:
        """Write what is queued, then return (the drain task has ended)."""
        task = self._drain
        if task is not None and not task.done():
            try:
                await asyncio.shield(task)
            except Exception:  # already delivered to the callers
                log.debug("%s: last batch failed", self._name, exc_info=True)
