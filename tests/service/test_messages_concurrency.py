"""The message worker's bounded concurrency toward Lockme (``[lockme] max_concurrency``).

Runs on SQLite and PostgreSQL (``engine`` fixture): many messages are processed with their
Lockme requests overlapping, never more than the configured number in flight, and each
message is fetched, applied and marked read exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send
from test_runtime_harness import DAY, make_stack

from roomkey.service.crypto import SecretBox
from roomkey.service.db.models import DoorActionStatus, MessageState
from roomkey.service.messages import MessageSettings

LIMIT = 3


class InFlight:
    """ASGI wrapper counting concurrent API requests (and requests per method and path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.now = 0
        self.peak = 0
        self.seen: Counter[str] = Counter()
        self.full = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.now += 1
        self.peak = max(self.peak, self.now)
        self.seen[f"{scope['method']} {scope['path']}"] += 1
        if self.now >= LIMIT:
            self.full.set()
        try:
            # hold the first requests until the bound is reached (or briefly, if it never
            # is), so requests that can overlap do overlap
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.full.wait(), timeout=0.5)
            await self.app(scope, receive, send)
        finally:
            self.now -= 1


async def test_messages_overlap_within_the_bound_and_apply_once(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    settings = MessageSettings(backoff_initial=10, backoff_max=60, max_concurrency=LIMIT)
    stack = await make_stack(engine, secret_box, tmp_path, settings=settings)
    try:
        booked = [
            stack.sim.book(room, DAY, f"{hour:02d}:00:00", source="panel", status=1)
            for room in (stack.room_a, stack.room_b)
            for hour in range(9, 22, 2)
        ]
        await stack.deliver()
        messages = stack.sim.messages()
        assert len(messages) == len(booked)

        counter = InFlight(stack.lockme_api.app)
        stack.lockme_api.app = counter
        replans: list[frozenset[int]] = []
        real = stack.service.replan_rooms

        async def counting(session: Any, rooms: Any, **kwargs: Any) -> Any:
            replans.append(frozenset(rooms))
            return await real(session, rooms, **kwargs)

        stack.service.replan_rooms = counting  # type: ignore[method-assign]
        outcomes = await stack.process()

        assert sorted(o.message_id for o in outcomes) == sorted(str(m.id) for m in messages)
        assert {o.state for o in outcomes} == {MessageState.ACKED}
        assert counter.peak == LIMIT  # overlapping, never above the bound
        for message in messages:
            assert counter.seen[f"GET /v2.4/message/{message.id}"] == 1
            assert counter.seen[f"POST /v2.4/message/{message.id}"] == 1
            assert stack.sim_message(message.id).read
            row = await stack.message(message.id)
            assert row is not None
            assert row.state is MessageState.ACKED
        # messages ready together apply in one transaction with one replan of their rooms
        assert 1 <= len(replans) <= len(messages)
        assert frozenset().union(*replans) == {stack.room_a, stack.room_b}
        for rid in booked:
            reservation = await stack.reservation(rid)
            assert reservation is not None
            assert not reservation.deleted
        planned = await stack.actions(status=DoorActionStatus.PLANNED)
        assert len(planned) == 2 * len(booked)  # unlock + lock each, no duplicates
        assert len({(a.room_id, a.kind, a.planned_at) for a in planned}) == len(planned)
        assert await stack.process() == []  # nothing left, nothing processed twice
    finally:
        await stack.close()
