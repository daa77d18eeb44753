"""Manual door actions: open, unlock or lock every lock of a room, audited with the actor.

Used by ``roomkey open|unlock|lock ROOM`` and later the dashboard. A manual command goes
through the same pipeline as planned ones (one pending command per lock, latest wins, equal
commands coalesce, never a second OPEN while one may be on the wire) and is sent at once by
the calling process; lock events confirm it as usual.

* ``open`` — one OPEN (pull the latch once);
* ``unlock`` — DAY_LOCK (latch only; the door opens with the handle);
* ``lock`` — the room policy's lock action (NIGHT_LOCK by default).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from roomkey.service import commands as lc
from roomkey.service.config import RoomConfig
from roomkey.service.db.audit import write_audit
from roomkey.service.db.commands import get_command
from roomkey.service.db.models import TERMINAL_COMMAND_STATES, CommandOrigin, CommandState
from roomkey.service.executor import Executor, LoqedContext, enqueue_command
from roomkey.service.policy import LockAction

__all__ = [
    "ManualAction",
    "ManualError",
    "ManualResult",
    "UnknownRoomError",
    "command_for",
    "manual_action",
    "resolve_room",
    "wait_for_commands",
]

log = logging.getLogger(__name__)


class ManualAction(enum.StrEnum):
    OPEN = "open"
    UNLOCK = "unlock"
    LOCK = "lock"


class ManualError(Exception):
    """A manual action could not be started."""


class UnknownRoomError(ManualError, KeyError):
    """No configured room has that id or name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown room"


@dataclass(frozen=True, slots=True)
class ManualResult:
    """One lock's command for a manual action, and where it stands."""

    room_id: int
    lock_id: str
    command_id: str
    command: str
    decision: str
    """``independent``/``supersede`` (a new command), ``coalesce`` (an equal command was
    already pending or in flight: that one does the job) or ``queue`` (waits for the lock's
    in-flight command)."""
    state: str
    reason: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "room": self.room_id,
            "lock": self.lock_id,
            "command_id": self.command_id,
            "command": self.command,
            "decision": self.decision,
            "state": self.state,
            "reason": self.reason,
        }


def resolve_room(ctx: LoqedContext, room: int | str) -> RoomConfig:
    """A configured room by Lockme id (int or digits) or by name (case-insensitive)."""
    text = str(room).strip()
    for candidate in ctx.config.rooms:
        if text.isdigit() and candidate.id == int(text):
            return candidate
    for candidate in ctx.config.rooms:
        if candidate.name.casefold() == text.casefold():
            return candidate
    raise UnknownRoomError(f"no room {text[:80]!r} in the configuration")


def command_for(ctx: LoqedContext, room: RoomConfig, action: ManualAction) -> lc.DoorCommand:
    """The lock command a manual action stands for in this room."""
    if action is ManualAction.OPEN:
        return lc.DoorCommand.OPEN
    if action is ManualAction.UNLOCK:
        return lc.DoorCommand.DAY_LOCK
    policy = ctx.config.policy_for(room)
    if policy.lock_action is LockAction.NIGHT_LOCK:
        return lc.DoorCommand.NIGHT_LOCK
    return lc.DoorCommand.DAY_LOCK


async def manual_action(
    ctx: LoqedContext,
    room: int | str,
    action: ManualAction | str,
    *,
    actor: str,
    send: bool = True,
    executor: Executor | None = None,
) -> list[ManualResult]:
    """Command every lock of ``room``; audited as ``manual.<action>`` by ``actor``.

    With ``send`` the new commands are sent now by this process (waiting for the transport's
    answer, not for the lock's confirmation: see :func:`wait_for_commands`); otherwise the
    running executor sends them (it is woken).
    """
    if not actor.strip():
        raise ManualError("an actor is required for the audit log")
    act = ManualAction(action)
    cfg = resolve_room(ctx, room)
    command = command_for(ctx, cfg, act)
    created: list[tuple[str, str, str]] = []
    for lock_id in cfg.locks:
        async with ctx.sessions() as session, session.begin():
            now = ctx.now()
            result = await enqueue_command(
                session,
                ctx,
                lock_id,
                command,
                now=now,
                origin=CommandOrigin.MANUAL,
                actor=actor[:128],
            )
            if result.blocked_by_slot:
                raise ManualError(
                    f"lock {lock_id} has an open-house change pending; try again in a moment"
                )
            await write_audit(
                session,
                at=now,
                actor=actor[:128],
                action=f"manual.{act.value}",
                target=f"room:{cfg.id}/lock:{lock_id}",
                details={
                    "command": command.value,
                    "command_id": result.command_id,
                    "decision": result.decision.value,
                    "superseded": list(result.superseded),
                },
            )
        created.append((lock_id, result.command_id, result.decision.value))
        log.info(
            "manual %s of room %s lock %s by %s → command %s (%s)",
            act.value,
            cfg.id,
            lock_id,
            actor,
            result.command_id,
            result.decision.value,
        )
    if send:
        await (executor or Executor(ctx)).send_now([cid for _, cid, _ in created])
    else:
        ctx.poke()
    return await _results(ctx, cfg.id, command, created)


async def _results(
    ctx: LoqedContext,
    room_id: int,
    command: lc.DoorCommand,
    created: Sequence[tuple[str, str, str]],
) -> list[ManualResult]:
    results: list[ManualResult] = []
    async with ctx.sessions() as session:
        for lock_id, command_id, decision in created:
            row = await get_command(session, command_id)
            results.append(
                ManualResult(
                    room_id=room_id,
                    lock_id=lock_id,
                    command_id=command_id,
                    command=row.action.value if row is not None else command.value,
                    decision=decision,
                    state=row.state.value if row is not None else "unknown",
                    reason=row.reason.value if row is not None and row.reason else None,
                )
            )
    return results


async def wait_for_commands(
    ctx: LoqedContext, command_ids: Sequence[str], *, within: float, poll: float = 0.5
) -> dict[str, CommandState]:
    """Wait (on the context's clock) until every command ended or ``within`` seconds passed;
    returns each command's state."""
    deadline = ctx.clock.time() + within
    while True:
        states: dict[str, CommandState] = {}
        async with ctx.sessions() as session:
            for command_id in command_ids:
                row = await get_command(session, command_id)
                if row is not None:
                    states[command_id] = row.state
        if all(s in TERMINAL_COMMAND_STATES for s in states.values()):
            return states
        if ctx.clock.time() >= deadline:
            return states
        await ctx.clock.sleep(poll)
