"""Operator actions shared by the pages and the JSON API (each audited with its actor).

* manual open / unlock / lock of a room — :func:`roomkey.service.manual.manual_action`; the
  commands are queued and the running executor sends them (the request never waits on a lock);
* re-run reconciliation — :meth:`roomkey.service.runtime.Service.reconcile` (one replica at a
  time through its lease), waited for a bounded time;
* acknowledge an alert.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from roomkey.service.clock import utc_now
from roomkey.service.db.alerts import acknowledge_alert
from roomkey.service.db.audit import write_audit
from roomkey.service.executor import context_for
from roomkey.service.manual import ManualAction, ManualError, manual_action
from roomkey.service.reconcile import ReconcileReport
from roomkey.service.runtime import Service

from .schemas import ActionAccepted, ManualCommandOut

__all__ = [
    "ActionError",
    "ReconcileOutcome",
    "acknowledge",
    "manual_door_action",
    "run_reconciliation",
]

log = logging.getLogger(__name__)


class ActionError(Exception):
    """An action was refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


async def manual_door_action(
    service: Service, room_id: int, action: ManualAction, *, actor: str
) -> ActionAccepted:
    """Queue ``action`` on every lock of the room; the executor sends it at once."""
    if all(room.id != room_id for room in service.config.rooms):
        raise ActionError(f"no room {room_id}", status=404)
    try:
        results = await manual_action(
            context_for(service), room_id, action, actor=actor, send=False
        )
    except ManualError as exc:
        raise ActionError(str(exc)) from None
    service.wakes.executor.set()
    commands = [
        ManualCommandOut(
            room_id=r.room_id,
            lock_id=r.lock_id,
            command_id=r.command_id,
            command=r.command,
            decision=r.decision,
            state=r.state,
            reason=r.reason,
        )
        for r in results
    ]
    return ActionAccepted(
        message=f"{action.value} queued for {len(commands)} lock(s) of room {room_id}",
        commands=commands,
    )


@dataclass(frozen=True)
class ReconcileOutcome:
    finished: bool
    report: ReconcileReport | None
    message: str


_running: dict[int, asyncio.Task[ReconcileReport]] = {}


async def run_reconciliation(
    service: Service, *, actor: str, wait_seconds: float = 20.0
) -> ReconcileOutcome:
    """Start a reconciliation (audited); wait up to ``wait_seconds`` wall-clock seconds for
    it. A run still going then carries on in the background."""
    async with service.session_factory() as session, session.begin():
        await write_audit(
            session, at=utc_now(service.clock), actor=actor, action="web.reconcile", target=None
        )
    task = _running.get(id(service))
    if task is None or task.done():
        task = asyncio.create_task(service.reconcile(), name="roomkey-web-reconcile")
        _running[id(service)] = task
        task.add_done_callback(_log_failure)
    done, _ = await asyncio.wait({task}, timeout=wait_seconds)
    if not done:
        return ReconcileOutcome(False, None, "reconciliation is running in the background")
    try:
        report = task.result()
    except Exception as exc:
        return ReconcileOutcome(True, None, f"reconciliation failed: {type(exc).__name__}")
    if not report.ran:
        return ReconcileOutcome(True, report, f"not run: {report.reason}")
    message = (
        f"reconciled {len(report.rooms)} room(s): {len(report.added)} added, "
        f"{len(report.changed)} changed, {len(report.deleted)} deleted"
    )
    if report.failures:
        message += f"; {len(report.failures)} read(s) failed"
    return ReconcileOutcome(True, report, message)


def _log_failure(task: asyncio.Task[ReconcileReport]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("reconciliation started from the dashboard failed", exc_info=task.exception())


async def acknowledge(service: Service, alert_id: int, *, actor: str) -> bool:
    """Close an open alert (audited); False when unknown or already closed."""
    now = utc_now(service.clock)
    async with service.session_factory() as session, session.begin():
        done = await acknowledge_alert(session, alert_id, by=actor[:128], now=now)
        if done:
            await write_audit(
                session,
                at=now,
                actor=actor[:128],
                action="web.alert_ack",
                target=f"alert:{alert_id}",
            )
    return done
