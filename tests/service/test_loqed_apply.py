"""LOQED intake split in two: group-committed receipts, then batched apply.

Through the real app and the real LOQED simulator (``test_executor_harness``), on SQLite and
PostgreSQL: one multi-row INSERT per receipt batch, effects applied in order per lock,
duplicates recorded and not applied, receipts left by a crash applied at start, failures kept
and retried with backoff (alert after repeated failures), two replicas never applying one
receipt twice, and the raw-ASGI bridge receiver answering exactly like the routed one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine
from test_executor_harness import LOCK, ROOMKEY_BASE, World, make_world

from roomkey.loqed import parse_event
from roomkey.service import hooks_loqed, loqed_apply
from roomkey.service.crypto import SecretBox
from roomkey.service.db.events import insert_receipts
from roomkey.service.db.models import (
    CommandState,
    DoorActionKind,
    EventSource,
    LockEvent,
    LockEventReceipt,
)
from roomkey.service.executor import context_for
from roomkey.service.loqed_apply import ALERT_AFTER, EventApplier, applier_for, create_worker
from roomkey.service.loqed_receipt import ingest_event, receipt_row, receive, receiver_for

LATCH = {"event_type": "STATE_CHANGED_LATCH", "requested_state": "DAY_LOCK", "key_local_id": 9}
NIGHT = {"event_type": "STATE_CHANGED_NIGHT_LOCK", "requested_state": "NIGHT_LOCK"}
OPEN = {"event_type": "STATE_CHANGED_OPEN", "requested_state": "OPEN", "key_local_id": 9}
BATTERY = {"battery_type": "ALKALINE", "battery_percentage": 12}


@pytest.fixture
async def world(engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path) -> AsyncIterator[World]:
    w = await make_world(engine, secret_box, tmp_path)
    try:
        yield w
    finally:
        await w.close()


def _row(world: World, payload: dict[str, Any], *, lock: str | None = LOCK) -> dict[str, Any]:
    return receipt_row(
        lock,
        parse_event(payload, source="bridge"),
        source=EventSource.BRIDGE,
        received_at=world.now(),
    )


@contextmanager
def _statements(world: World) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        words = statement.split()
        if words[0].upper() == "INSERT":
            seen.append(f"INSERT {words[2].lower()}")

    engine = world.service.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def _receipts(world: World) -> list[LockEventReceipt]:
    return await world.rows(LockEventReceipt, order=LockEventReceipt.id)


async def test_concurrent_webhooks_share_one_insert_and_are_applied_in_order(world: World) -> None:
    rows = [_row(world, p) for p in (LATCH, OPEN, LATCH, BATTERY, NIGHT)]
    with _statements(world) as seen:
        await asyncio.gather(*(receive(world.ctx, row) for row in rows))
    # one multi-row INSERT of the receipts, before any answer
    assert [s for s in seen if s == "INSERT lock_event_receipts"] == ["INSERT lock_event_receipts"]
    await applier_for(world.ctx).settle()
    events = await world.events()
    assert [e.event_type for e in events] == [
        "STATE_CHANGED_LATCH",
        "STATE_CHANGED_OPEN",
        "STATE_CHANGED_LATCH",
        "BATTERY",
        "STATE_CHANGED_NIGHT_LOCK",
    ]
    lock = await world.lock_row()
    assert lock.bolt_state == "night_lock"  # folded in arrival order, saved once
    assert lock.battery_percentage == 12
    assert lock.last_event_key == events[-1].dedupe_key
    assert [a.kind for a in await world.alerts()] == ["low_battery"]
    assert {(r.outcome, r.applied_at is not None) for r in await _receipts(world)} == {
        ("stored", True)
    }


async def test_duplicates_in_one_batch_are_recorded_and_not_applied(world: World) -> None:
    rows = [_row(world, LATCH), _row(world, LATCH), _row(world, OPEN)]
    await asyncio.gather(*(receive(world.ctx, row) for row in rows))
    await applier_for(world.ctx).settle()
    assert [r.outcome for r in await _receipts(world)] == ["stored", "duplicate", "stored"]
    assert [e.event_type for e in await world.events()] == [
        "STATE_CHANGED_LATCH",
        "STATE_CHANGED_OPEN",
    ]
    # Across batches the lock row remembers the latest event: a redelivery stays a duplicate.
    result = await ingest_event(
        world.ctx, LOCK, parse_event(OPEN, source="bridge"), source=EventSource.BRIDGE
    )
    assert result.duplicate
    assert result.applied
    assert len(await world.events()) == 2


async def test_receipts_left_by_a_crash_are_applied_by_the_worker_at_start(
    world: World,
) -> None:
    # The process stored these receipts and died before applying them.
    async with world.service.session_factory() as session, session.begin():
        await insert_receipts(session, [_row(world, LATCH), _row(world, NIGHT)])
    assert await world.events() == []
    worker = create_worker(world.service)  # what the restarted service runs first
    assert worker.name == "loqed-events"
    assert await worker.step() is None  # nothing waits for a retry
    assert [e.event_type for e in await world.events()] == [
        "STATE_CHANGED_LATCH",
        "STATE_CHANGED_NIGHT_LOCK",
    ]
    assert (await world.lock_row()).bolt_state == "night_lock"
    assert await worker.step() is None  # applied once: a second pass finds nothing
    assert len(await world.events()) == 2


async def test_a_failing_apply_keeps_the_events_retries_them_and_raises_an_alert(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = loqed_apply.apply_event
    broken = {"on": True}

    def flaky(snapshot: Any, ev: Any) -> Any:
        if broken["on"]:
            raise RuntimeError("boom")
        return real(snapshot, ev)

    monkeypatch.setattr(loqed_apply, "apply_event", flaky)
    applier = applier_for(world.ctx)
    await receive(world.ctx, _row(world, LATCH))
    await applier.settle()
    (receipt,) = await _receipts(world)
    assert receipt.applied_at is None  # kept, never dropped
    assert receipt.attempts == 1
    assert receipt.last_error == "RuntimeError: boom"
    assert receipt.retry_at is not None
    assert receipt.retry_at > world.now()
    assert await world.events() == []
    # A later event of the same lock waits behind it (order matters more than progress).
    await receive(world.ctx, _row(world, NIGHT))
    await applier.settle()
    assert await world.events() == []
    for attempt in range(2, ALERT_AFTER + 1):
        delay = await applier.step()
        assert delay is not None
        assert delay > 0
        await world.clock.advance(delay)
        assert await applier.step() is not None
        attempts = {r.attempts for r in await _receipts(world)}
        assert attempt in attempts
    assert [a.kind for a in await world.alerts()] == ["event_apply_failed"]
    broken["on"] = False
    delay = await applier.step()
    assert delay is not None
    await world.clock.advance(delay)
    assert await applier.step() is None
    assert [e.event_type for e in await world.events()] == [
        "STATE_CHANGED_LATCH",
        "STATE_CHANGED_NIGHT_LOCK",
    ]
    assert await world.alerts() == []  # resolved once the events applied
    assert {r.outcome for r in await _receipts(world)} == {"stored"}


async def test_two_replicas_never_apply_a_receipt_twice(
    engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    a = await make_world(engine, secret_box, tmp_path / "a")
    b = await make_world(engine, secret_box, tmp_path / "b", instance_id="replica-b")
    try:
        payloads = [LATCH, OPEN, NIGHT, LATCH, OPEN, NIGHT] * 4
        async with a.service.session_factory() as session, session.begin():
            await insert_receipts(session, [_row(a, p) for p in payloads])
        first, second = EventApplier(a.ctx, batch_size=5), EventApplier(b.ctx, batch_size=7)
        await asyncio.gather(first.drain(), second.drain())
        events = await a.events()
        assert len(events) == len(payloads)
        assert [e.event_type for e in events] == [p["event_type"] for p in payloads]
        assert first.applied + second.applied == len(payloads)
        assert all(r.outcome == "stored" for r in await _receipts(a))
    finally:
        await a.close()
        await b.close()


async def test_events_still_confirm_commands_and_wake_the_executor(world: World) -> None:
    await world.plan((DoorActionKind.UNLOCK, 0.0))
    await world.executor.run_once()
    assert world.ctx.wake is not None
    world.ctx.wake.clear()
    await world.advance(12)
    (command,) = await world.commands()
    assert command.state is CommandState.CONFIRMED
    assert world.ctx.wake.is_set()  # command_ended → poke
    linked = [e for e in await world.events() if e.command_id == command.id]
    assert linked


async def test_the_fast_bridge_receiver_answers_like_the_routed_one(world: World) -> None:
    fast = world.receiver()
    # A root_path makes the app skip its raw-ASGI shortcuts: the FastAPI route answers.
    routed = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=world.app, root_path="/r"), base_url=ROOMKEY_BASE
    )
    world.clients.append(routed)
    body, headers = world.signed_bridge_post(LATCH)
    cases: list[tuple[str, bytes, dict[str, str]]] = [
        (f"/hooks/loqed/bridge/{LOCK}", body, headers),
        (f"/hooks/loqed/bridge/{LOCK}", body.replace(b"DAY", b"NIG"), headers),
        (f"/hooks/loqed/bridge/{LOCK}", body, {**headers, "TIMESTAMP": "5"}),
        ("/hooks/loqed/bridge/nope", body, headers),
        (f"/hooks/loqed/bridge/{LOCK}", b"{" + b" " * (70 * 1024) + b"}", headers),
        (f"/hooks/loqed/bridge/{LOCK}", *world.signed_bridge_post(b"[1]")),
    ]
    for path, content, hdrs in cases:
        one = await fast.post(path, content=content, headers=hdrs)
        two = await routed.post("/r" + path, content=content, headers=hdrs)
        assert (one.status_code, one.json()) == (two.status_code, two.json()), path
    assert (await fast.get(f"/hooks/loqed/bridge/{LOCK}")).status_code == 405


async def test_rejected_webhooks_are_logged_at_most_once_per_reason_and_lock(
    world: World, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hooks_loqed, "_warned", {})
    client = world.receiver()
    path = f"/hooks/loqed/bridge/{LOCK}"
    caplog.set_level(logging.WARNING, logger="roomkey.service.hooks_loqed")

    def bad_hash() -> tuple[bytes, dict[str, str]]:
        body, headers = world.signed_bridge_post(LATCH)
        return body, {**headers, "HASH": "0" * 64}

    for _ in range(5):
        body, headers = bad_hash()
        assert (await client.post(path, content=body, headers=headers)).status_code == 401
    assert [r.getMessage() for r in caplog.records] == [
        f"lock {LOCK}: bridge webhook with a bad HASH rejected"
    ]
    caplog.clear()
    await world.clock.advance(hooks_loqed.WARN_EVERY + 1)
    body, headers = bad_hash()
    assert (await client.post(path, content=body, headers=headers)).status_code == 401
    assert [r.getMessage() for r in caplog.records] == [
        f"lock {LOCK}: bridge webhook with a bad HASH rejected (4 more held back)"
    ]


async def test_receipts_record_what_applying_needs_without_pii(world: World) -> None:
    payload = {**LATCH, "key_name_user": "Anna", "key_account_email": "anna@example.com"}
    await receive(world.ctx, _row(world, payload))
    (receipt,) = await _receipts(world)
    assert "anna@example.com" not in str(receipt.raw)
    assert receipt.kind == "state_changed"
    assert receipt.bolt_state == "day_lock"
    await applier_for(world.ctx).settle()
    async with world.service.session_factory() as session:
        stored = (await session.execute(select(LockEvent))).scalar_one()
    assert stored.raw == receipt.raw
    assert stored.received_at == receipt.received_at
    assert stored.received_at <= world.now() + dt.timedelta(seconds=1)
    assert context_for(world.service) is world.ctx


async def test_applied_receipts_are_pruned_after_the_retention(world: World) -> None:
    await receive(world.ctx, _row(world, LATCH))
    worker = create_worker(world.service)
    await worker.step()
    assert len(await _receipts(world)) == 1  # kept a while: it records what applying did
    await world.clock.advance(loqed_apply.RETENTION.total_seconds() + loqed_apply.PRUNE_EVERY)
    await worker.step()
    assert await _receipts(world) == []
    assert len(await world.events()) == 1  # the event itself stays


async def _ticks(n: int = 10) -> None:
    """Let the other tasks run a few steps (no time passes)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_under_sustained_load_a_pass_waits_for_the_next_receipt_batch(
    world: World,
) -> None:
    applier = applier_for(world.ctx)
    applier.eager_batch, applier.max_hold = 4, 3600.0  # the hold never times out here
    await receive(world.ctx, _row(world, LATCH))
    await applier.settle()
    assert (applier.passes, len(await world.events())) == (1, 1)
    # Receipts committed right after a pass: held for the next batch, not applied alone.
    await asyncio.gather(*(receive(world.ctx, _row(world, p)) for p in (OPEN, NIGHT)))
    await _ticks()
    assert (applier.passes, len(await world.events())) == (1, 1)
    # The next batch brings the backlog to eager_batch: one pass applies both batches.
    await asyncio.gather(*(receive(world.ctx, _row(world, p)) for p in (LATCH, BATTERY)))
    await applier.settle()
    assert applier.passes == 2
    assert [e.event_type for e in await world.events()] == [
        "STATE_CHANGED_LATCH",
        "STATE_CHANGED_OPEN",
        "STATE_CHANGED_NIGHT_LOCK",
        "STATE_CHANGED_LATCH",
        "BATTERY",
    ]
    # A held batch is never left behind: settle() (like the hold's timer) applies it.
    await receive(world.ctx, _row(world, OPEN))
    await _ticks()
    assert len(await world.events()) == 5
    await applier.settle()
    assert (applier.passes, len(await world.events())) == (3, 6)
    assert (await world.lock_row()).bolt_state == "open"


async def test_receipts_arriving_while_the_write_turn_is_taken_join_the_batch(
    world: World,
) -> None:
    commit = receiver_for(world.ctx).commit
    before = commit.batches
    engine = world.service.engine
    async with engine.connect() as conn:
        await conn.begin()  # another writer holds the turn (SQLite: BEGIN IMMEDIATE)
        first = asyncio.ensure_future(receive(world.ctx, _row(world, LATCH)))
        await _ticks()  # the receipt writer has begun its transaction and waits
        rest = [asyncio.ensure_future(receive(world.ctx, _row(world, p))) for p in (OPEN, NIGHT)]
        await _ticks()
        await conn.commit()
    await asyncio.gather(first, *rest)
    if engine.dialect.name == "sqlite":
        assert commit.batches - before == 1  # taken once the turn was held: all three
    await applier_for(world.ctx).settle()
    assert [e.event_type for e in await world.events()] == [
        "STATE_CHANGED_LATCH",
        "STATE_CHANGED_OPEN",
        "STATE_CHANGED_NIGHT_LOCK",
    ]


async def test_receipts_store_any_payload_clean_and_without_pii(world: World) -> None:
    payload = json.dumps(
        {
            "event_type": "STATE_CHANGED_OPEN",
            "requested_state": "OPEN",
            "key_name_user": "Anna",
            "note\u0000": "a\u0000b",
            "lone": "x\ud800y",
            "ratio": float("nan"),
            "big": 1e400,
            "city": "Zürich",
            "value1": "v" * 300,
            "nested": {"email": "anna@example.com", "deep": [1.5, "q\u0000", {"k": None}]},
        }
    )  # json.dumps writes NaN/Infinity, which json.loads reads back
    row = _row(world, json.loads(payload))
    raw = row["raw"]
    assert "key_name_user" not in raw
    assert "email" not in raw["nested"]
    assert (raw["note"], raw["lone"], raw["city"]) == ("ab", "x?y", "Zürich")
    assert (raw["ratio"], raw["big"]) == (None, None)
    assert raw["value1"] == "v" * 200
    assert raw["nested"]["deep"] == [1.5, "q", {"k": None}]
    await receive(world.ctx, row)  # storable on every backend (PostgreSQL refuses NUL)
    await applier_for(world.ctx).settle()
    (stored,) = await world.events()
    assert stored.raw == raw
