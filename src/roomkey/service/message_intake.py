"""The Lockme receiver's durable insert, group-committed.

Concurrent webhooks hand their message ids to one :class:`~roomkey.service.group_commit.
GroupCommit`; each batch is one transaction with one multi-row ``INSERT … ON CONFLICT DO
NOTHING RETURNING message_id`` (:func:`~roomkey.service.db.messages.insert_messages_if_new`).
Every delivery is answered after its batch committed (durable before the 200). Within a batch
only the first delivery of a new id counts as new; the others, like deliveries of ids stored
earlier, are duplicates. A failed batch fails every delivery in it (nothing acknowledged).

Logging is per batch: one INFO line with the count and the ids stored, not one per webhook.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from roomkey.service.clock import utc_now
from roomkey.service.db.messages import insert_messages_if_new
from roomkey.service.group_commit import GroupCommit

if TYPE_CHECKING:
    from roomkey.service.runtime import Service

__all__ = ["MAX_BATCH", "MessageIntake", "create_message_intake"]

log = logging.getLogger(__name__)

MAX_BATCH = 256
"""Most message ids per transaction (5 bound parameters each: far below SQLite's limit)."""

MessageIntake = GroupCommit[str, bool]
"""Submit a message id, get True (stored now) or False (a duplicate) once committed."""


def first_deliveries(message_ids: Sequence[str], new: set[str]) -> list[bool]:
    """One answer per delivery: True only for the first delivery of each id in ``new``."""
    fresh = set(new)
    answers: list[bool] = []
    for message_id in message_ids:
        if message_id in fresh:
            fresh.discard(message_id)
            answers.append(True)
        else:
            answers.append(False)
    return answers


def create_message_intake(service: Service, *, max_batch: int = MAX_BATCH) -> MessageIntake:
    """The group-committed message-id writer of ``service`` (its current session factory and
    clock are looked up per batch)."""

    async def store(message_ids: Sequence[str]) -> list[bool]:
        try:
            async with service.session_factory() as session, session.begin():
                new = await insert_messages_if_new(session, message_ids, utc_now(service.clock))
        except Exception:
            log.exception("could not store %d Lockme message id(s)", len(message_ids))
            raise
        answers = first_deliveries(message_ids, new)
        if new:
            stored = [m for m, fresh in zip(message_ids, answers, strict=True) if fresh]
            log.info("stored %d Lockme message(s): %s", len(stored), " ".join(stored))
        if len(new) != len(message_ids) and log.isEnabledFor(logging.DEBUG):
            duplicates = [m for m, fresh in zip(message_ids, answers, strict=True) if not fresh]
            log.debug(
                "%d Lockme message(s) already known (duplicate): %s",
                len(duplicates),
                " ".join(duplicates),
            )
        return answers

    return GroupCommit(store, max_batch=max_batch, name="lockme-intake")
