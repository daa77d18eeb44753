"""Lockme message intake: durable insert by message id, claimed processing, visible failures.

Lifecycle (``state``): received → processing (fetched, raw stored) → applied (mirror + plan
committed) → acked (marked read at Lockme); any step may end in ``failed`` with ``last_error``
and a ``next_attempt_at`` for the automatic retry (NULL = given up; :func:`requeue_message`
revives it). ``fetched_at``/``applied_at`` tell a retrying worker which steps already ran.

All functions run inside the caller's transaction and never commit.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ._sql import dialect_name, insert_for
from .claims import claim_rows
from .models import LockmeMessage, MessageState

__all__ = [
    "claim_messages",
    "count_messages_by_state",
    "get_message",
    "hold_claimed_messages",
    "insert_message_if_new",
    "insert_messages_if_new",
    "list_messages",
    "record_message_acked",
    "record_message_applied",
    "record_message_failed",
    "record_message_fetched",
    "record_messages_acked",
    "record_messages_applied",
    "requeue_message",
]

_WORKABLE = (
    MessageState.RECEIVED,
    MessageState.PROCESSING,
    MessageState.APPLIED,
    MessageState.FAILED,
)


async def insert_message_if_new(session: AsyncSession, message_id: str, now: datetime) -> bool:
    """Record a webhook's message id; True if it is new, False if already known.

    One ``INSERT … ON CONFLICT DO NOTHING`` statement: safe under concurrent duplicate
    deliveries on every replica. Commit before answering the webhook.
    """
    stmt = (
        insert_for(session, LockmeMessage)
        .values(
            message_id=message_id,
            state=MessageState.RECEIVED.value,
            received_at=now,
            attempts=0,
            next_attempt_at=now,
        )
        .on_conflict_do_nothing(index_elements=["message_id"])
        .returning(LockmeMessage.message_id)
    )
    result = await session.execute(stmt)
    return result.scalar_one_or_none() is not None


async def insert_messages_if_new(
    session: AsyncSession, message_ids: Sequence[str], now: datetime
) -> set[str]:
    """Record many webhooks' message ids at once; returns the ids that were new.

    One multi-row ``INSERT … ON CONFLICT DO NOTHING RETURNING message_id`` for the distinct
    ids (repeats inside ``message_ids`` are sent once; SQLAlchemy's "insertmanyvalues" renders
    the executemany as one statement per up to 1000 rows, compiled once and cached): safe
    under concurrent duplicate deliveries on every replica. The caller decides which of
    several deliveries of one new id counts as new (the intake answers the first). Commit
    before answering.
    """
    unique = list(dict.fromkeys(message_ids))
    if not unique:
        return set()
    table = LockmeMessage.__table__
    stmt = (
        insert_for(session, table)
        .on_conflict_do_nothing(index_elements=["message_id"])
        .returning(table.c.message_id)
    )
    state = MessageState.RECEIVED.value
    rows = [
        {
            "message_id": message_id,
            "state": state,
            "received_at": now,
            "attempts": 0,
            "next_attempt_at": now,
        }
        for message_id in unique
    ]
    result = await session.execute(stmt, rows)
    return set(result.scalars())


async def claim_messages(
    session: AsyncSession,
    *,
    owner: str,
    now: datetime,
    limit: int = 10,
    lease: timedelta = timedelta(seconds=60),
) -> list[LockmeMessage]:
    """Claim up to ``limit`` messages due for (re)processing, oldest first; bumps ``attempts``."""
    return await claim_rows(
        session,
        LockmeMessage,
        owner=owner,
        now=now,
        lease=lease,
        limit=limit,
        where=[
            LockmeMessage.state.in_(_WORKABLE),
            LockmeMessage.next_attempt_at.is_not(None),
            LockmeMessage.next_attempt_at <= now,
        ],
        order_by=[LockmeMessage.next_attempt_at, LockmeMessage.received_at],
        values={"attempts": LockmeMessage.attempts + 1},
    )


async def _update_owned(
    session: AsyncSession, message_id: str, owner: str | None, values: dict[str, Any]
) -> bool:
    stmt = update(LockmeMessage).where(LockmeMessage.message_id == message_id)
    if owner is not None:
        stmt = stmt.where(LockmeMessage.claim_owner == owner)
    result = await session.execute(stmt.values(values).execution_options(synchronize_session=False))
    return bool(getattr(result, "rowcount", 0))


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _fetched_values(raw: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The raw message and the fields copied out of it for listing."""
    action = raw.get("action")
    return {
        "raw": raw,
        "action": str(action)[:16] if action is not None else None,
        "room_id": _int_or_none(raw.get("roomid")),
        "reservation_id": _int_or_none(raw.get("reservationid")),
        "fetched_at": now,
    }


async def record_message_fetched(
    session: AsyncSession, message_id: str, *, owner: str | None, raw: dict[str, Any], now: datetime
) -> bool:
    """Store the message as fetched from Lockme (state ``processing``).

    ``action``, ``roomid`` and ``reservationid`` are copied out of ``raw`` for listing.
    With ``owner`` given, only the current claim holder may write (False otherwise).
    """
    return await _update_owned(
        session,
        message_id,
        owner,
        {"state": MessageState.PROCESSING, **_fetched_values(raw, now), "last_error": None},
    )


async def record_message_applied(
    session: AsyncSession,
    message_id: str,
    *,
    owner: str | None,
    now: datetime,
    raw: dict[str, Any] | None = None,
) -> bool:
    """Mark the message applied (commit this together with the mirror and plan changes).

    With ``raw`` (just fetched) the raw message is stored by the same statement, as
    :func:`record_message_fetched` would. With ``owner`` given, only the current claim holder
    may write (False otherwise: roll the transaction back).
    """
    values: dict[str, Any] = {"state": MessageState.APPLIED, "applied_at": now, "last_error": None}
    if raw is not None:
        values.update(_fetched_values(raw, now))
    return await _update_owned(session, message_id, owner, values)


async def hold_claimed_messages(
    session: AsyncSession, message_ids: Collection[str], *, owner: str
) -> set[str]:
    """Of ``message_ids``, those ``owner`` holds the claim on, kept that way until the
    transaction ends (PostgreSQL: ``FOR UPDATE``; SQLite: the transaction holds the one write
    lock already). Then :func:`record_messages_applied` may write them without checking."""
    if not message_ids:
        return set()
    stmt = select(LockmeMessage.message_id).where(
        LockmeMessage.message_id.in_(sorted(set(message_ids))),
        LockmeMessage.claim_owner == owner,
    )
    if dialect_name(session) == "postgresql":
        stmt = stmt.with_for_update()
    return set((await session.execute(stmt)).scalars())


async def record_messages_applied(
    session: AsyncSession,
    applied: Sequence[tuple[str, dict[str, Any] | None]],
    *,
    now: datetime,
) -> None:
    """:func:`record_message_applied` for many messages (``(message_id, raw or None)``) whose
    claims the transaction holds (:func:`hold_claimed_messages`): one executemany statement
    for those stored before, one for those fetched just now (their raw message is stored)."""
    table = cast(Table, LockmeMessage.__table__)
    state = {"state": MessageState.APPLIED, "applied_at": now, "last_error": None}
    plain = [{"b_id": message_id} for message_id, raw in applied if raw is None]
    fetched = [
        {"b_id": message_id, **{f"b_{k}": v for k, v in _fetched_values(raw, now).items()}}
        for message_id, raw in applied
        if raw is not None
    ]
    where = table.c.message_id == bindparam("b_id")
    if plain:
        await session.execute(update(table).where(where).values(state), plain)
    if fetched:
        columns: dict[str, Any] = {k[2:]: bindparam(k) for k in fetched[0] if k != "b_id"}
        await session.execute(update(table).where(where).values({**state, **columns}), fetched)


_ACKED_VALUES: dict[str, Any] = {
    "state": MessageState.ACKED,
    "next_attempt_at": None,
    "last_error": None,
    "claim_owner": None,
    "claim_until": None,
}


async def record_message_acked(
    session: AsyncSession, message_id: str, *, owner: str | None, now: datetime
) -> bool:
    """Mark the message read at Lockme: done, no further attempts, claim released."""
    return await _update_owned(session, message_id, owner, {**_ACKED_VALUES, "acked_at": now})


async def record_messages_acked(
    session: AsyncSession, message_ids: Collection[str], *, owner: str, now: datetime
) -> set[str]:
    """:func:`record_message_acked` for many messages of one claim holder in one statement;
    returns the ids it marked (those ``owner`` still held)."""
    if not message_ids:
        return set()
    result = await session.execute(
        update(LockmeMessage)
        .where(
            LockmeMessage.message_id.in_(sorted(set(message_ids))),
            LockmeMessage.claim_owner == owner,
        )
        .values({**_ACKED_VALUES, "acked_at": now})
        .returning(LockmeMessage.message_id),
        execution_options={"synchronize_session": False},
    )
    return set(result.scalars())


async def record_message_failed(
    session: AsyncSession,
    message_id: str,
    *,
    owner: str | None,
    error: str,
    retry_at: datetime | None,
    raw: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> bool:
    """Record a failed attempt; retried at ``retry_at`` (None: give up, stays visible).

    ``error`` must not contain secrets (it is shown to operators). The claim is released.
    With ``raw`` (fetched in this attempt, not yet stored) and ``now``, the raw message is
    kept on record too, so what Lockme said is visible even though applying failed.
    """
    values: dict[str, Any] = {
        "state": MessageState.FAILED,
        "last_error": error[:2000],
        "next_attempt_at": retry_at,
        "claim_owner": None,
        "claim_until": None,
    }
    if raw is not None and now is not None:
        values.update(_fetched_values(raw, now))
    return await _update_owned(session, message_id, owner, values)


async def requeue_message(session: AsyncSession, message_id: str, *, now: datetime) -> bool:
    """Schedule a not-yet-acked message for an immediate retry (e.g. an operator's retry)."""
    result = await session.execute(
        update(LockmeMessage)
        .where(LockmeMessage.message_id == message_id, LockmeMessage.state != MessageState.ACKED)
        .values(next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def get_message(session: AsyncSession, message_id: str) -> LockmeMessage | None:
    return await session.get(LockmeMessage, message_id, populate_existing=True)


async def list_messages(
    session: AsyncSession,
    *,
    states: Collection[MessageState] | None = None,
    limit: int = 100,
    before: datetime | None = None,
) -> list[LockmeMessage]:
    """Newest first; optionally only some states / received before ``before``."""
    stmt = select(LockmeMessage).order_by(
        LockmeMessage.received_at.desc(), LockmeMessage.message_id.desc()
    )
    if states:
        stmt = stmt.where(LockmeMessage.state.in_(list(states)))
    if before is not None:
        stmt = stmt.where(LockmeMessage.received_at < before)
    return list((await session.execute(stmt.limit(limit))).scalars())


async def count_messages_by_state(session: AsyncSession) -> dict[MessageState, int]:
    rows = await session.execute(
        select(LockmeMessage.state, func.count()).group_by(LockmeMessage.state)
    )
    counts = {state: 0 for state in MessageState}
    for state, count in rows:
        counts[MessageState(state)] = int(count)
    return counts
