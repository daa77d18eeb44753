"""The running service: one container for config, database, clock, SDK clients and workers.

Workers are small "passes" (``async def step() -> float | None``) that a :class:`Supervisor`
runs in a loop: after each pass it waits for the worker's wake event, the idle interval or the
delay the pass asked for, whichever comes first. A pass that raises is logged and retried with
exponential backoff, so a crashing worker is restarted, never lost and never spinning. Time is
the injected clock's, so tests drive workers with ``SimClock(manual=True)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from roomkey.lockme import AsyncLockmeClient, TokenStore
from roomkey.service.clock import Clock, SystemClock, utc_now
from roomkey.service.config import Config
from roomkey.service.crypto import SecretBox, SecretKeyError, generate_key
from roomkey.service.db.engine import create_engine, create_session_factory
from roomkey.service.db.inventory import sync_inventory
from roomkey.service.db.messages import count_messages_by_state
from roomkey.service.db.migrate import head_revision, upgrade_async
from roomkey.service.db.models import MessageState
from roomkey.service.lockme_gateway import build_lockme_client
from roomkey.service.logging import register_secret
from roomkey.service.message_intake import create_message_intake
from roomkey.service.messages import MessageSettings, MessageWorker
from roomkey.service.metrics import Metrics
from roomkey.service.reconcile import (
    ProgressCallback,
    Reconciler,
    ReconcileReport,
    ReconcileSettings,
)
from roomkey.service.replan import ReplanResult, replan_rooms

__all__ = [
    "OPTIONAL_WORKER_MODULES",
    "Readiness",
    "Service",
    "Signal",
    "StepFn",
    "Supervisor",
    "Wakes",
    "Worker",
    "WorkerStatus",
]

log = logging.getLogger(__name__)

StepFn = Callable[[], Awaitable[float | None]]
"""One pass of a worker. Returns seconds until it wants to run again (``None``: its interval)."""


@dataclass
class Worker:
    """A named periodic job with an optional wake-up event."""

    name: str
    step: StepFn
    interval: float = 60.0
    """Longest idle wait between passes."""
    wake: asyncio.Event | None = None
    """Set it to run the next pass now (e.g. a message arrived, a plan changed)."""
    backoff_initial: float = 1.0
    backoff_max: float = 60.0


@dataclass
class WorkerStatus:
    """What a worker has been doing; shown by ``/ready`` and exported as metrics."""

    name: str
    running: bool = False
    passes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_success: float | None = None


class Signal(asyncio.Event):
    """An :class:`asyncio.Event` that can also resolve plain futures when set.

    A sleeping worker waits on one future that its wake event, the stop event and its timer
    all resolve, so a wake reaches it in one event-loop turn (with ``Event.wait()`` tasks and
    ``asyncio.wait`` it took five or six, each costly while webhooks flood the loop)."""

    def __init__(self) -> None:
        super().__init__()
        self._futures: list[asyncio.Future[None]] = []

    def notify(self, future: asyncio.Future[None]) -> None:
        """Resolve ``future`` when this is set (at once if it already is)."""
        if self.is_set():
            if not future.done():
                future.set_result(None)
        else:
            self._futures.append(future)

    def forget(self, future: asyncio.Future[None]) -> None:
        """Stop resolving ``future`` (its waiter woke up another way)."""
        with contextlib.suppress(ValueError):
            self._futures.remove(future)

    def set(self) -> None:
        super().set()
        futures, self._futures = self._futures, []
        for future in futures:
            if not future.done():
                future.set_result(None)


@dataclass
class Wakes:
    """Events that wake workers early. Setting one is cheap and safe from any coroutine."""

    messages: asyncio.Event = field(default_factory=lambda: Signal())
    """A Lockme message was stored by the receiver."""
    executor: asyncio.Event = field(default_factory=lambda: Signal())
    """Door actions changed (replan) or a lock event arrived."""
    reconcile: asyncio.Event = field(default_factory=lambda: Signal())
    """Run a reconciliation pass now."""


FailureHook = Callable[[str, BaseException], None]


class Supervisor:
    """Runs workers as asyncio tasks, restarts failing passes with backoff, stops cleanly."""

    def __init__(self, clock: Clock, *, on_failure: FailureHook | None = None) -> None:
        self._clock = clock
        self._on_failure = on_failure
        self._workers: dict[str, Worker] = {}
        self._status: dict[str, WorkerStatus] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping: asyncio.Event | None = None

    # -- registration -----------------------------------------------------------------
    def add(self, worker: Worker) -> Worker:
        """Register a worker (started by :meth:`start`, or at once if already running)."""
        if worker.name in self._workers:
            raise ValueError(f"worker {worker.name!r} already registered")
        self._workers[worker.name] = worker
        self._status[worker.name] = WorkerStatus(worker.name)
        if self._stopping is not None and not self._stopping.is_set():
            self._spawn(worker)
        return worker

    @property
    def workers(self) -> dict[str, Worker]:
        return dict(self._workers)

    def status(self) -> list[WorkerStatus]:
        return [self._status[name] for name in self._workers]

    @property
    def running(self) -> bool:
        return self._stopping is not None and not self._stopping.is_set()

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if self.running:
            return
        self._stopping = Signal()
        for worker in self._workers.values():
            self._spawn(worker)

    async def stop(self, *, grace: float = 5.0) -> None:
        """Ask every worker to stop after its current pass; cancel those still busy after
        ``grace`` real seconds."""
        if self._stopping is None:
            return
        self._stopping.set()
        tasks = list(self._tasks.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._tasks.clear()
        self._stopping = None

    async def run_once(self, name: str) -> float | None:
        """Run one pass of a worker in the caller's task (tests, ``roomkey sync``)."""
        return await self._workers[name].step()

    # -- internals ---------------------------------------------------------------------
    def _spawn(self, worker: Worker) -> None:
        self._tasks[worker.name] = asyncio.create_task(
            self._loop(worker), name=f"roomkey-worker-{worker.name}"
        )

    async def _loop(self, worker: Worker) -> None:
        status = self._status[worker.name]
        status.running = True
        assert self._stopping is not None
        stopping = self._stopping
        try:
            while not stopping.is_set():
                if worker.wake is not None:
                    worker.wake.clear()
                try:
                    delay = await worker.step()
                except Exception as exc:
                    status.failures += 1
                    status.consecutive_failures += 1
                    status.last_error = f"{type(exc).__name__}: {exc}"
                    backoff = min(
                        worker.backoff_max,
                        worker.backoff_initial * 2 ** (status.consecutive_failures - 1),
                    )
                    log.exception(
                        "worker %s failed (%d in a row); restarting in %.1fs",
                        worker.name,
                        status.consecutive_failures,
                        backoff,
                    )
                    if self._on_failure is not None:
                        with contextlib.suppress(Exception):
                            self._on_failure(worker.name, exc)
                    await self._pause(stopping, None, backoff)
                    continue
                status.passes += 1
                status.consecutive_failures = 0
                status.last_success = self._clock.time()
                wait = worker.interval if delay is None else max(0.0, min(delay, worker.interval))
                if wait > 0:
                    await self._pause(stopping, worker.wake, wait)
                else:
                    await asyncio.sleep(0)  # let others run between back-to-back passes
        finally:
            status.running = False

    async def _pause(
        self, stopping: asyncio.Event, wake: asyncio.Event | None, seconds: float
    ) -> None:
        if stopping.is_set() or (wake is not None and wake.is_set()):
            return
        events = [stopping] if wake is None else [stopping, wake]
        if not all(isinstance(event, Signal) for event in events):
            await self._pause_slow(events, seconds)
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for event in events:
            assert isinstance(event, Signal)
            event.notify(woken)

        def ring(_timer: asyncio.Future[None]) -> None:
            if not woken.done():
                woken.set_result(None)

        timer = asyncio.ensure_future(self._clock.sleep(seconds))
        timer.add_done_callback(ring)
        try:
            await woken
        finally:
            timer.cancel()
            for event in events:
                assert isinstance(event, Signal)
                event.forget(woken)

    async def _pause_slow(self, events: list[asyncio.Event], seconds: float) -> None:
        # a wake event that is a plain asyncio.Event (set by code outside roomkey)
        waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(self._clock.sleep(seconds))]
        waiters += [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)


# --------------------------------------------------------------------------- the service


@dataclass
class Readiness:
    """``/ready``: the database answers, its schema is at head, the workers run."""

    database: bool
    migrations: bool
    workers: bool
    detail: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.database and self.migrations and self.workers

    def as_dict(self) -> dict[str, object]:
        return {
            "status": "ready" if self.ok else "not_ready",
            "database": self.database,
            "migrations": self.migrations,
            "workers": self.workers,
            **({"detail": self.detail} if self.detail else {}),
        }


WorkerFactory = Callable[["Service"], Worker]
"""Builds one worker for a service. Other parts register theirs with
:meth:`Service.add_worker` or list a module in :data:`OPTIONAL_WORKER_MODULES`."""

OPTIONAL_WORKER_MODULES: tuple[str, ...] = (
    "roomkey.service.executor",
    "roomkey.service.loqed_apply",
)
"""Modules that may contribute workers: each exposes ``create_worker(service) -> Worker`` (or
``create_workers(service) -> list[Worker]``); a module not built yet is skipped."""


class Service:
    """roomkey running in one process: config, database, clock, SDK clients and workers.

    Construct it from a :class:`~roomkey.service.config.Config`; everything else is optional
    and injectable (tests and the demo pass a ``SimClock``, in-process HTTP clients and a
    ready engine)::

        service = Service(config, clock=clock, lockme_http=httpx.AsyncClient(...))
        await service.start()        # syncs rooms/locks into the DB, starts the workers
        ...
        await service.stop()

    ``create_app(service)`` (:mod:`roomkey.service.app`) serves its webhooks and probes.
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        engine: AsyncEngine | None = None,
        secret_box: SecretBox | None = None,
        lockme: AsyncLockmeClient | None = None,
        lockme_http: httpx.AsyncClient | None = None,
        lockme_token_store: TokenStore | None = None,
        loqed_http: httpx.AsyncClient | None = None,
        metrics: Metrics | None = None,
        message_settings: MessageSettings | None = None,
        reconcile_settings: ReconcileSettings | None = None,
        instance_id: str | None = None,
        load_optional_workers: bool = True,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._owns_engine = engine is None
        self.engine = engine if engine is not None else create_engine(config.service.db_url())
        self.session_factory = create_session_factory(self.engine)
        if secret_box is None:
            try:
                secret_box = SecretBox.from_env()
            except SecretKeyError:
                secret_box = None  # sync_inventory() insists when there are credentials
        self.secret_box = secret_box
        self._owns_lockme = lockme is None
        self._owns_token_store = lockme is None and lockme_token_store is None
        self.lockme = lockme or build_lockme_client(
            config,
            clock=self.clock.time,
            box=secret_box,
            store=lockme_token_store,
            http_client=lockme_http,
            engine_url=self.engine.url,
        )
        self.loqed_http = loqed_http
        """Injected HTTP client for LOQED transports (tests/demo); None: real network."""
        self.metrics = metrics or Metrics()
        self.message_intake = create_message_intake(self)
        """Group-committed durable insert of delivered Lockme message ids (the receiver)."""
        self.wakes = Wakes()
        self.instance_id = instance_id or config.service.resolved_replica_id
        self.supervisor = Supervisor(
            self.clock,
            on_failure=lambda name, _exc: self.metrics.worker_failures.labels(name).inc(),
        )
        self.messages = MessageWorker(
            self,
            message_settings or MessageSettings(max_concurrency=config.lockme.max_concurrency),
        )
        self.reconciler = Reconciler(self, reconcile_settings)
        self.add_worker(
            Worker(
                "lockme-messages",
                self.messages.step,
                interval=self.messages.settings.idle_interval,
                wake=self.wakes.messages,
            )
        )
        self.add_worker(
            Worker(
                "reconcile",
                self.reconciler.step,
                interval=self.reconciler.settings.interval,
                wake=self.wakes.reconcile,
                backoff_initial=30.0,
                backoff_max=15 * 60.0,
            )
        )
        if load_optional_workers:
            self._load_optional_workers()
        self._started = False
        for secret in (
            config.service.lockme_webhook_secret,
            config.service.loqed_webhook_secret,
            config.lockme.client_secret,
        ):
            if secret is not None:
                register_secret(secret.get_secret_value())

    # -- configuration views ------------------------------------------------------------
    @property
    def lockme_webhook_secret(self) -> str | None:
        secret = self.config.service.lockme_webhook_secret
        return secret.get_secret_value() if secret is not None else None

    @property
    def loqed_webhook_secret(self) -> str | None:
        secret = self.config.service.loqed_webhook_secret
        return secret.get_secret_value() if secret is not None else None

    # -- workers ------------------------------------------------------------------------
    def add_worker(self, worker: Worker) -> Worker:
        """Register a worker; it runs while the service runs."""
        return self.supervisor.add(worker)

    def _load_optional_workers(self) -> None:
        for name in OPTIONAL_WORKER_MODULES:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name != name:
                    raise
                continue
            many = getattr(module, "create_workers", None)
            one = getattr(module, "create_worker", None)
            if callable(many):
                for worker in many(self):
                    self.add_worker(worker)
            elif callable(one):
                self.add_worker(one(self))

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self, *, migrate: bool = False) -> None:
        """Optionally migrate, mirror the config's rooms/locks into the database, start
        the workers. Idempotent."""
        if self._started:
            return
        if migrate:
            await upgrade_async(self.engine.url)
        await self.sync_inventory()
        await self.supervisor.start()
        self._started = True
        log.info("roomkey service %s started", self.instance_id)

    async def stop(self, *, grace: float = 5.0) -> None:
        """Stop the workers (current passes finish within ``grace``), close clients."""
        await self.supervisor.stop(grace=grace)
        await self.message_intake.aclose()  # deliveries already queued get written
        if self._started:
            log.info("roomkey service %s stopped", self.instance_id)
        self._started = False

    async def aclose(self) -> None:
        """:meth:`stop`, then release owned clients and the engine."""
        await self.stop()
        if self._owns_lockme:
            await self.lockme.aclose()
        if self._owns_token_store:
            close = getattr(self.lockme.store, "close", None)  # the database store's engine
            if callable(close):
                close()
        if self._owns_engine:
            await self.engine.dispose()

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def sync_inventory(self) -> None:
        """Mirror rooms, locks and their links from the config into the database."""
        box = self.secret_box
        if box is None:
            try:
                box = SecretBox.from_env()
            except SecretKeyError:
                if self.config.locks:
                    raise
                box = SecretBox([generate_key()])  # nothing secret to store
            self.secret_box = box
        async with self.session_factory() as session, session.begin():
            report = await sync_inventory(session, self.config, box, now=utc_now(self.clock))
        if report.changed:
            log.info("configuration synced into the database: %s", report)
            changed_rooms = set(report.rooms_added + report.rooms_updated)
            if changed_rooms:
                async with self.session_factory() as session, session.begin():
                    await self.replan_rooms(session, changed_rooms, now=utc_now(self.clock))

    # -- pipeline helpers -----------------------------------------------------------------
    async def replan_rooms(
        self, session: AsyncSession, rooms: Iterable[int], *, now: datetime
    ) -> ReplanResult:
        """Re-plan rooms inside ``session``'s transaction; counts changes in the metrics.

        The caller commits, then should ``wakes.executor.set()`` when ``result.changed``.
        """
        result = await replan_rooms(session, rooms, now=now)
        for name, keys in (
            ("created", result.created),
            ("updated", result.updated),
            ("superseded", result.superseded),
            ("skipped", result.skipped),
        ):
            if keys:
                self.metrics.door_actions_changed.labels(name).inc(len(keys))
        return result

    async def reconcile(
        self,
        *,
        progress: ProgressCallback | None = None,
        days_ahead: int | None = None,
        force: bool = False,
    ) -> ReconcileReport:
        """Run one reconciliation now (``roomkey sync``)."""
        return await self.reconciler.run(progress=progress, days_ahead=days_ahead, force=force)

    # -- probes -------------------------------------------------------------------------
    async def readiness(self) -> Readiness:
        detail: dict[str, str] = {}
        database = migrations = False
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                database = True
                current = await conn.run_sync(
                    lambda sync: MigrationContext.configure(sync).get_current_revision()
                )
            head = head_revision()
            migrations = current == head
            if not migrations:
                detail["migrations"] = f"database at {current or 'nothing'}, code at {head}"
        except Exception as exc:
            detail["database"] = type(exc).__name__
        workers = self.supervisor.running and all(s.running for s in self.supervisor.status())
        if not workers:
            detail["workers"] = "not running"
        return Readiness(database, migrations, workers, detail)

    async def refresh_gauges(self) -> None:
        """Update gauges read from the database (called by ``/metrics``)."""
        try:
            async with self.session_factory() as session:
                counts = await count_messages_by_state(session)
        except Exception:
            log.warning("could not read the message backlog for /metrics", exc_info=True)
            return
        for state, count in counts.items():
            if state is not MessageState.ACKED:
                self.metrics.message_backlog.labels(state.value).set(count)
