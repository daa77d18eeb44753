"""Storage of lock commands, their state transitions and send attempts.

The lifecycle rules (what may follow what, when to retry) live in
``roomkey.service.commands``; this module stores them safely across replicas:

* at most one ``pending`` command per lock (a partial unique index; :func:`insert_command`
  supersedes the older one in the same transaction — latest wins);
* :func:`claim_due_commands` hands each due pending command to exactly one executor;
* :func:`transition_command` is a compare-and-set on ``state`` (and optionally the claim
  owner), so a late or duplicate writer cannot move a command backwards.

Commit ``pending → sending`` *before* sending, so a crash never leads to a blind resend.
All functions run inside the caller's transaction and never commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .claims import claim_rows
from .models import (
    TERMINAL_COMMAND_STATES,
    Command,
    CommandAction,
    CommandAttempt,
    CommandOrigin,
    CommandReason,
    CommandState,
)

__all__ = [
    "ACTIVE_COMMAND_STATES",
    "begin_attempt",
    "claim_due_commands",
    "commands_past_deadline",
    "finish_attempt",
    "get_command",
    "in_flight_commands",
    "insert_command",
    "list_attempts",
    "list_commands",
    "supersede_pending_commands",
    "transition_command",
]

ACTIVE_COMMAND_STATES = frozenset(CommandState) - TERMINAL_COMMAND_STATES

_TIMESTAMP_FOR: dict[CommandState, str] = {
    CommandState.SENDING: "sending_at",
    CommandState.SENT: "sent_at",
    CommandState.ACCEPTED: "accepted_at",
    CommandState.CONFIRMED: "confirmed_at",
}


async def supersede_pending_commands(
    session: AsyncSession, lock_id: str, *, now: datetime, by: str | None
) -> list[str]:
    """Supersede the lock's pending command(s); returns their ids."""
    result = await session.execute(
        update(Command)
        .where(Command.lock_id == lock_id, Command.state == CommandState.PENDING)
        .values(
            state=CommandState.SUPERSEDED,
            superseded_by=by,
            finished_at=now,
            claim_owner=None,
            claim_until=None,
            version=Command.version + 1,
        )
        .returning(Command.id)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars())


async def insert_command(
    session: AsyncSession,
    *,
    lock_id: str,
    action: CommandAction,
    now: datetime,
    deadline: datetime,
    due_at: datetime | None = None,
    origin: CommandOrigin = CommandOrigin.PLAN,
    actor: str | None = None,
    door_action_key: str | None = None,
    command_id: str | None = None,
) -> tuple[Command, list[str]]:
    """Create a ``pending`` command for ``lock_id``, superseding the lock's pending one.

    Returns the new command and the ids it superseded. If another replica inserts a pending
    command for the same lock concurrently, the unique index makes one transaction fail with
    ``IntegrityError``: roll back and retry (the retry supersedes the winner — latest wins).
    """
    new_id = command_id or str(uuid.uuid4())
    superseded = await supersede_pending_commands(session, lock_id, now=now, by=new_id)
    command = Command(
        id=new_id,
        lock_id=lock_id,
        action=action,
        state=CommandState.PENDING,
        attempts=0,
        origin=origin,
        actor=actor,
        door_action_key=door_action_key,
        due_at=due_at or now,
        deadline=deadline,
        created_at=now,
        version=1,
    )
    session.add(command)
    await session.flush()
    return command, superseded


async def claim_due_commands(
    session: AsyncSession,
    *,
    owner: str,
    now: datetime,
    limit: int = 10,
    lease: timedelta = timedelta(seconds=30),
) -> list[Command]:
    """Claim pending commands with ``due_at <= now``, oldest first, for one executor."""
    return await claim_rows(
        session,
        Command,
        owner=owner,
        now=now,
        lease=lease,
        limit=limit,
        where=[Command.state == CommandState.PENDING, Command.due_at <= now],
        order_by=[Command.due_at, Command.created_at, Command.id],
    )


async def transition_command(
    session: AsyncSession,
    command_id: str,
    *,
    to: CommandState,
    now: datetime,
    from_states: Collection[CommandState],
    owner: str | None = None,
    reason: CommandReason | None = None,
    detail: str | None = None,
    transport: str | None = None,
) -> bool:
    """Move a command to ``to`` if it is in one of ``from_states`` (compare-and-set).

    Stamps the matching timestamp (``sending_at``, ``sent_at``, ``accepted_at``,
    ``confirmed_at``); terminal states also stamp ``finished_at`` and release the claim.
    With ``owner`` given, only the claim holder may move it. ``detail`` must not contain
    secrets or signed URLs.
    """
    stmt = update(Command).where(Command.id == command_id, Command.state.in_(list(from_states)))
    if owner is not None:
        stmt = stmt.where(Command.claim_owner == owner)
    values: dict[str, Any] = {"state": to, "version": Command.version + 1}
    stamp = _TIMESTAMP_FOR.get(to)
    if stamp is not None:
        values[stamp] = now
    if to in TERMINAL_COMMAND_STATES:
        values.update(finished_at=now, claim_owner=None, claim_until=None)
    if reason is not None:
        values["reason"] = reason
    if detail is not None:
        values["detail"] = detail[:2000]
    if transport is not None:
        values["transport"] = transport
    result = await session.execute(stmt.values(values).execution_options(synchronize_session=False))
    return bool(getattr(result, "rowcount", 0))


async def begin_attempt(
    session: AsyncSession, command_id: str, *, transport: str, now: datetime
) -> CommandAttempt:
    """Record the start of one send attempt (``attempts`` + 1, ``transport`` set)."""
    await session.execute(
        update(Command)
        .where(Command.id == command_id)
        .values(attempts=Command.attempts + 1, transport=transport)
        .execution_options(synchronize_session=False)
    )
    attempt = CommandAttempt(command_id=command_id, transport=transport, started_at=now)
    session.add(attempt)
    await session.flush()
    return attempt


async def finish_attempt(
    session: AsyncSession,
    attempt_id: int,
    *,
    now: datetime,
    outcome: str,
    error: str | None = None,
) -> None:
    """Record how an attempt ended (``outcome`` e.g. ``ok``, ``not_sent``, a reason value)."""
    await session.execute(
        update(CommandAttempt)
        .where(CommandAttempt.id == attempt_id)
        .values(finished_at=now, outcome=outcome[:32], error=error[:2000] if error else None)
        .execution_options(synchronize_session=False)
    )


async def get_command(session: AsyncSession, command_id: str) -> Command | None:
    return await session.get(Command, command_id, populate_existing=True)


async def list_commands(
    session: AsyncSession,
    *,
    lock_id: str | None = None,
    states: Collection[CommandState] | None = None,
    door_action_key: str | None = None,
    limit: int = 100,
) -> list[Command]:
    """Newest first."""
    stmt = select(Command).order_by(Command.created_at.desc(), Command.id.desc())
    if lock_id is not None:
        stmt = stmt.where(Command.lock_id == lock_id)
    if states:
        stmt = stmt.where(Command.state.in_(list(states)))
    if door_action_key is not None:
        stmt = stmt.where(Command.door_action_key == door_action_key)
    return list((await session.execute(stmt.limit(limit))).scalars())


async def in_flight_commands(session: AsyncSession, lock_id: str) -> list[Command]:
    """The lock's commands that are ``sending``/``sent``/``accepted``, oldest first
    (candidates for confirmation by an incoming lock event)."""
    stmt = (
        select(Command)
        .where(
            Command.lock_id == lock_id,
            Command.state.in_([CommandState.SENDING, CommandState.SENT, CommandState.ACCEPTED]),
        )
        .order_by(Command.created_at, Command.id)
    )
    return list((await session.execute(stmt)).scalars())


async def commands_past_deadline(
    session: AsyncSession, *, now: datetime, limit: int = 100
) -> list[Command]:
    """Non-terminal commands whose ``deadline`` has passed (to expire with a reason)."""
    stmt = (
        select(Command)
        .where(Command.state.in_(list(ACTIVE_COMMAND_STATES)), Command.deadline < now)
        .order_by(Command.deadline, Command.id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def list_attempts(session: AsyncSession, command_id: str) -> list[CommandAttempt]:
    stmt = (
        select(CommandAttempt)
        .where(CommandAttempt.command_id == command_id)
        .order_by(CommandAttempt.started_at, CommandAttempt.id)
    )
    return list((await session.execute(stmt)).scalars())
