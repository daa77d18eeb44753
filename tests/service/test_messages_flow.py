"""The message worker as a continuously fed pipeline (SQLite and PostgreSQL, ``engine``):
messages that arrive during a pass are taken in that pass, claims of held messages are
renewed, messages applied together fail alone, and apply order is kept where ids cannot be
compared."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send
from test_runtime_harness import DAY, make_stack

from roomkey.lockme.models import Message
from roomkey.service import messages as worker_module
from roomkey.service.crypto import SecretBox
from roomkey.service.db.models import MessageState
from roomkey.service.messages import MessageSettings, MessageWorker, _Turn

SAFETY = 30.0
"""Real seconds a test waits for an event that must come (a hang guard, not a timing)."""


class Gate:
    """ASGI wrapper: holds requests to ``held`` until :attr:`release` is set; records the
    order of requests and lets a test wait for one."""

    def __init__(self, app: ASGIApp, held: str) -> None:
        self.app = app
        self.held = held
        self.release = asyncio.Event()
        self.reached = asyncio.Event()
        self.seen: list[str] = []
        self._events: dict[str, asyncio.Event] = {}

    def event(self, request: str) -> asyncio.Event:
        return self._events.setdefault(request, asyncio.Event())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.held:
            self.reached.set()
            await self.release.wait()
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            request = f"{scope['method']} {scope['path']}"
            self.seen.append(request)
            self.event(request).set()


async def _wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), SAFETY)


async def test_a_message_arriving_mid_pass_is_taken_in_that_pass(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    stack = await make_stack(engine, secret_box, tmp_path)
    try:
        stack.sim.book(stack.room_a, DAY, "10:00:00", source="panel", status=1)
        await stack.deliver()
        (first,) = stack.sim.messages()
        gate = Gate(stack.lockme_api.app, f"/v2.4/message/{first.id}")
        stack.lockme_api.app = gate
        step = asyncio.create_task(stack.service.messages.step())
        await _wait(gate.reached)  # the first message's fetch hangs at Lockme
        stack.sim.book(stack.room_b, DAY, "12:00:00", source="panel", status=1)
        await stack.deliver()  # stored by the receiver, which wakes the worker
        (second,) = [m for m in stack.sim.messages() if m.id != first.id]
        # taken, applied and marked read while the first is still held: no batch barrier,
        # no idle interval between the wake and the claim
        await _wait(gate.event(f"POST /v2.4/message/{second.id}"))
        assert not step.done()
        assert f"POST /v2.4/message/{first.id}" not in gate.seen
        gate.release.set()
        assert await asyncio.wait_for(step, SAFETY) is None  # drained, nothing scheduled
        assert stack.sim_message(first.id).read
        assert stack.sim_message(second.id).read
        for message in (first, second):
            row = await stack.message(message.id)
            assert row is not None
            assert row.state is MessageState.ACKED
        assert len(await stack.actions()) == 4
    finally:
        await stack.close()


async def test_claims_of_held_messages_are_renewed(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    stack = await make_stack(engine, secret_box, tmp_path)
    try:
        stack.sim.book(stack.room_a, DAY, "10:00:00", source="panel", status=1)
        await stack.deliver()
        (message,) = stack.sim.messages()
        gate = Gate(stack.lockme_api.app, f"/v2.4/message/{message.id}")
        stack.lockme_api.app = gate
        worker = stack.service.messages
        lease = worker.settings.claim_seconds
        run = asyncio.create_task(worker.run_until_idle())
        await _wait(gate.reached)
        row = await stack.message(message.id)
        assert row is not None
        assert row.claim_until is not None
        claimed_until = row.claim_until
        await stack.clock.advance(lease / 4 + 1)  # the renewal timer fires
        for _ in range(int(SAFETY * 100)):  # its UPDATE runs in the background
            row = await stack.message(message.id)
            assert row is not None
            assert row.claim_until is not None
            if row.claim_until > claimed_until:
                break
            await asyncio.sleep(0.01)
        assert row.claim_until == claimed_until + dt.timedelta(seconds=lease / 4 + 1)
        assert row.claim_owner == worker.owner
        # past the first lease another replica still finds it held
        await stack.clock.advance(lease * 3 / 4)
        other = MessageWorker(stack.service, worker.settings)
        assert await other.claim() == []
        gate.release.set()
        (outcome,) = await asyncio.wait_for(run, SAFETY)
        assert outcome.state is MessageState.ACKED
        assert stack.sim_message(message.id).read
    finally:
        await stack.close()


async def test_messages_applied_together_fail_alone(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = await make_stack(
        engine, secret_box, tmp_path, settings=MessageSettings(backoff_initial=10, backoff_max=60)
    )
    try:
        booked = [
            stack.sim.book(stack.room_a, DAY, f"{hour:02d}:00:00", source="panel", status=1)
            for hour in (10, 12, 14)
        ]
        await stack.deliver()
        poisoned = booked[1]
        real = worker_module.apply_snapshots

        async def apply_snapshots(session: Any, items: Any, **kwargs: Any) -> Any:
            if any(item.reservation_id == poisoned for item in items):
                raise RuntimeError("mirror exploded")
            return await real(session, items, **kwargs)

        monkeypatch.setattr(worker_module, "apply_snapshots", apply_snapshots)
        outcomes = await stack.process()
        by_state = {o.message_id: o.state for o in outcomes}
        assert sorted(by_state.values()) == [
            MessageState.ACKED,
            MessageState.ACKED,
            MessageState.FAILED,
        ]
        for message in stack.sim.messages():
            row = await stack.message(message.id)
            assert row is not None
            if message.reservationid == booked[1]:
                assert row.state is MessageState.FAILED
                assert row.raw is not None  # what Lockme said is on record
                assert row.applied_at is None
                assert row.last_error == "apply: RuntimeError: mirror exploded"
                assert not stack.sim_message(message.id).read
            else:
                assert row.state is MessageState.ACKED
                assert stack.sim_message(message.id).read
        assert await stack.reservation(booked[1]) is None
        assert await stack.reservation(booked[0]) is not None
        assert await stack.reservation(booked[2]) is not None
        monkeypatch.setattr(worker_module, "apply_snapshots", real)
        await stack.clock.advance(10)
        (retry,) = await stack.process()
        assert retry.state is MessageState.ACKED
        assert await stack.reservation(booked[1]) is not None
    finally:
        await stack.close()


# --------------------------------------------------------------------------- apply order


def _message(reservation_id: int | None, action: str = "edit") -> Message:
    return Message.model_validate(
        {"action": action, "roomid": 7, "reservationid": reservation_id, "data": None}
    )


def _worker(*turns: tuple[str, _Turn]) -> MessageWorker:
    worker = MessageWorker(cast(Any, SimpleNamespace()))
    worker._turns.update(dict(turns))
    return worker


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_same_reservation_applies_in_claim_order_when_ids_are_not_numbers() -> None:
    older, other, newer = (_Turn(i, None) for i in ("msg-a", "msg-b", "msg-c"))
    worker = _worker(("msg-a", older), ("msg-b", other), ("msg-c", newer))
    newer.know(_message(1))
    waiting = asyncio.create_task(worker._wait_turn(newer))
    await _settle()
    assert not waiting.done()  # the older ones are not fetched yet: their keys are unknown
    older.know(_message(1))
    other.know(_message(2))
    await _settle()
    assert not waiting.done()  # msg-a is about the same reservation and not applied yet
    other.finish()
    await _settle()
    assert not waiting.done()
    older.finish()
    await asyncio.wait_for(waiting, SAFETY)


async def test_other_reservations_and_numeric_ids_do_not_wait() -> None:
    first, second = _Turn("msg-a", None), _Turn("msg-b", None)
    worker = _worker(("msg-a", first), ("msg-b", second))
    first.know(_message(1))
    second.know(_message(2))
    await asyncio.wait_for(worker._wait_turn(second), SAFETY)  # different reservations

    # Lockme's numeric ids: the mirror refuses an older snapshot itself, no waiting needed
    older, newer = _Turn("100", None), _Turn("101", None)
    worker = _worker(("100", older), ("101", newer))
    newer.know(_message(1))
    await asyncio.wait_for(worker._wait_turn(newer), SAFETY)

    # a test message names no reservation: never waits
    test = _Turn("msg-z", None)
    worker = _worker(("msg-y", _Turn("msg-y", None)), ("msg-z", test))
    test.know(_message(None, action="test"))
    await asyncio.wait_for(worker._wait_turn(test), SAFETY)
