"""Reconciliation: re-read Lockme and heal whatever the message stream missed.

Lockme redelivers an unread message for 24 hours only, so a roomkey that was down (or
unreachable) longer misses changes for good. Reconciliation reads each configured room's
reservations for today … today + N days (room-local dates) and:

* adds reservations the mirror lacks, updates changed ones (also reviving one wrongly
  marked deleted — Lockme's list is the truth);
* marks deleted what the mirror has in that range but Lockme no longer lists (only for rooms
  whose every day was read successfully: a failed read never deletes anything);
* re-plans the affected rooms, in the same transaction;
* re-arms Lockme messages that ran out of automatic retries.

Changes that happen while it runs win: a mirror row updated after the run began (by the
message worker) is left alone, so a stale list never overwrites a fresher message.

One replica at a time (lease ``reconcile``); periodic (``[service]
reconcile_interval_minutes``) and by hand with a progress callback (``roomkey sync``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roomkey.lockme.errors import LockmeError
from roomkey.lockme.models import Reservation as LockmeReservation
from roomkey.service.clock import utc_now
from roomkey.service.db.kv import kv_set
from roomkey.service.db.leases import release_lease, try_acquire_lease
from roomkey.service.db.models import Reservation
from roomkey.service.logging import redact
from roomkey.service.messages import rearm_failed_messages
from roomkey.service.mirror import MirrorChange, SnapshotInput, apply_snapshots, mark_deleted
from roomkey.service.replan import ReplanResult
from roomkey.service.slots import local_to_utc, resolve_timezone

if TYPE_CHECKING:
    from roomkey.service.runtime import Service

__all__ = [
    "LEASE_NAME",
    "ProgressCallback",
    "ReconcileProgress",
    "ReconcileReport",
    "ReconcileSettings",
    "Reconciler",
]

log = logging.getLogger(__name__)

LEASE_NAME = "reconcile"
LAST_RUN_KEY = "reconcile:last"


@dataclass(frozen=True)
class ReconcileSettings:
    days_ahead: int = 14
    """Read today … today + ``days_ahead`` (inclusive) in each room's time zone."""
    interval: float = 3600.0
    """Seconds between periodic runs."""
    lease_seconds: float = 900.0
    """How long one run may hold the lease (renewed per room)."""


@dataclass(frozen=True)
class ReconcileProgress:
    """Passed to the progress callback after each ``list_reservations`` call."""

    done: int
    total: int
    room_id: int
    date: dt.date
    error: str | None = None


ProgressCallback = Callable[[ReconcileProgress], None]


@dataclass
class ReconcileReport:
    """What one run did."""

    ran: bool
    reason: str | None = None
    """Why it did not run (another replica holds the lease)."""
    rooms: list[int] = field(default_factory=list)
    days: int = 0
    added: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    skipped_fresher: list[int] = field(default_factory=list)
    """Reservations left alone because a message updated them during the run."""
    failures: list[str] = field(default_factory=list)
    """``room/date: error`` for reads that failed (those rooms delete nothing)."""
    rearmed_messages: int = 0
    replan: ReplanResult = field(default_factory=ReplanResult)

    @property
    def healed(self) -> int:
        return len(self.added) + len(self.changed) + len(self.deleted)

    def as_dict(self) -> dict[str, object]:
        return {
            "ran": self.ran,
            "reason": self.reason,
            "rooms": self.rooms,
            "days": self.days,
            "added": self.added,
            "changed": self.changed,
            "deleted": self.deleted,
            "skipped_fresher": self.skipped_fresher,
            "failures": self.failures,
            "rearmed_messages": self.rearmed_messages,
            "replanned": self.replan.summary(),
        }


class Reconciler:
    """Runs reconciliation for a service; :meth:`step` is the periodic worker pass."""

    def __init__(self, service: Service, settings: ReconcileSettings | None = None) -> None:
        self.service = service
        self.settings = settings or ReconcileSettings(
            days_ahead=service.config.service.reconcile_days_ahead,
            interval=service.config.service.reconcile_interval_minutes * 60.0,
        )

    @property
    def owner(self) -> str:
        return f"{self.service.instance_id}:reconcile"

    async def step(self) -> float | None:
        report = await self.run()
        if report.failures:
            # Retry sooner than the full interval when Lockme could not be read.
            return min(self.settings.interval, 300.0)
        return None

    async def run(
        self,
        *,
        progress: ProgressCallback | None = None,
        days_ahead: int | None = None,
        force: bool = False,
    ) -> ReconcileReport:
        """One reconciliation. Without ``force`` it needs the lease (else ``ran=False``)."""
        service = self.service
        started = utc_now(service.clock)
        if not force and not await self._lease(started):
            service.metrics.reconcile_runs.labels("skipped_lease").inc()
            return ReconcileReport(ran=False, reason="another replica is reconciling")
        try:
            report = await self._run(started, progress, days_ahead, renew_lease=not force)
        except Exception:
            service.metrics.reconcile_runs.labels("failed").inc()
            raise
        finally:
            if not force:
                async with service.session_factory() as session, session.begin():
                    await release_lease(session, LEASE_NAME, owner=self.owner)
        service.metrics.reconcile_runs.labels("done").inc()
        for name, ids in (
            ("added", report.added),
            ("changed", report.changed),
            ("deleted", report.deleted),
        ):
            if ids:
                service.metrics.reconcile_healed.labels(name).inc(len(ids))
        if report.replan.changed:
            service.wakes.executor.set()
        if report.rearmed_messages:
            service.wakes.messages.set()
        level = logging.WARNING if report.healed or report.failures else logging.INFO
        log.log(
            level,
            "reconciliation: %d room(s) × %d day(s); healed added=%s changed=%s deleted=%s; "
            "%d read failure(s); %d message(s) re-armed",
            len(report.rooms),
            report.days,
            report.added,
            report.changed,
            report.deleted,
            len(report.failures),
            report.rearmed_messages,
        )
        return report

    async def _lease(self, now: dt.datetime) -> bool:
        async with self.service.session_factory() as session, session.begin():
            return await try_acquire_lease(
                session,
                LEASE_NAME,
                owner=self.owner,
                now=now,
                ttl=dt.timedelta(seconds=self.settings.lease_seconds),
            )

    async def _run(
        self,
        started: dt.datetime,
        progress: ProgressCallback | None,
        days_ahead: int | None,
        *,
        renew_lease: bool,
    ) -> ReconcileReport:
        service = self.service
        span = self.settings.days_ahead if days_ahead is None else days_ahead
        rooms = service.config.rooms
        report = ReconcileReport(ran=True, rooms=[r.id for r in rooms], days=span + 1)
        total = len(rooms) * (span + 1)
        done = 0
        seen: dict[int, tuple[int, LockmeReservation]] = {}
        complete: dict[int, tuple[dt.datetime, dt.datetime]] = {}
        for room in rooms:
            tz = resolve_timezone(room.timezone)
            today = started.astimezone(tz).date()
            days = [today + dt.timedelta(days=i) for i in range(span + 1)]
            ok = True
            for day in days:
                error: str | None = None
                try:
                    listed = await service.lockme.list_reservations(room.id, day.isoformat())
                except LockmeError as exc:
                    ok = False
                    error = redact(f"{type(exc).__name__}: {exc}")
                    report.failures.append(f"room {room.id} {day.isoformat()}: {error}")
                else:
                    for snapshot in listed:
                        if snapshot.reservationid is not None:
                            seen[snapshot.reservationid] = (room.id, snapshot)
                done += 1
                if progress is not None:
                    progress(ReconcileProgress(done, total, room.id, day, error))
            if ok:
                start = local_to_utc(days[0], dt.time(0, 0), tz)
                end = local_to_utc(days[-1] + dt.timedelta(days=1), dt.time(0, 0), tz)
                complete[room.id] = (start, end)
            if renew_lease and not await self._lease(utc_now(service.clock)):
                log.warning("reconciliation lease taken over by another replica; finishing")
        now = utc_now(service.clock)
        async with service.session_factory() as session, session.begin():
            affected = await self._heal(session, seen, complete, started, now, report)
            if affected:
                report.replan = await service.replan_rooms(session, affected, now=now)
            report.rearmed_messages = await rearm_failed_messages(session, now=now)
            await kv_set(session, LAST_RUN_KEY, {"at": now.isoformat(), **_kv(report)}, now=now)
        return report

    async def _heal(
        self,
        session: AsyncSession,
        seen: dict[int, tuple[int, LockmeReservation]],
        complete: dict[int, tuple[dt.datetime, dt.datetime]],
        started: dt.datetime,
        now: dt.datetime,
        report: ReconcileReport,
    ) -> set[int]:
        affected: set[int] = set()
        results = await apply_snapshots(
            session,
            [
                SnapshotInput(reservation_id, room_id, snapshot)
                for reservation_id, (room_id, snapshot) in sorted(seen.items())
            ],
            now=now,
            authoritative=True,
            unless_updated_after=started,
        )
        for result in results:
            reservation_id = result.reservation_id
            if result.change is MirrorChange.FRESHER:
                report.skipped_fresher.append(reservation_id)
            elif result.change is MirrorChange.ADDED:
                report.added.append(reservation_id)
            elif result.change is MirrorChange.CHANGED:
                report.changed.append(reservation_id)
            affected |= result.rooms
        for room_id, (start, end) in sorted(complete.items()):
            rows = (
                await session.execute(
                    select(Reservation).where(
                        Reservation.room_id == room_id,
                        Reservation.deleted.is_(False),
                        Reservation.start_at >= start,
                        Reservation.start_at < end,
                    )
                )
            ).scalars()
            for row in list(rows):
                if row.id in seen:
                    continue
                result = await mark_deleted(session, row.id, now=now, unless_updated_after=started)
                if result.change is MirrorChange.FRESHER:
                    report.skipped_fresher.append(row.id)
                elif result.change is MirrorChange.DELETED:
                    report.deleted.append(row.id)
                    affected |= result.rooms
        return affected


def _kv(report: ReconcileReport) -> dict[str, object]:
    return {
        "added": len(report.added),
        "changed": len(report.changed),
        "deleted": len(report.deleted),
        "failures": len(report.failures),
    }
