"""The Lockme receiver's group-committed intake and its raw-ASGI shortcut.

Batch insert on SQLite and PostgreSQL, one transaction for concurrent deliveries, duplicates
inside a batch, a failed batch answering 503 to each of its requests, per-batch logging, and
the shortcut answering exactly like the FastAPI-routed receiver.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from test_runtime_harness import HOOK_SECRET, Stack, make_stack, receiver_client

from roomkey.service.crypto import SecretBox
from roomkey.service.db.messages import insert_message_if_new, insert_messages_if_new
from roomkey.service.db.models import LockmeMessage, MessageState
from roomkey.service.message_intake import first_deliveries
from roomkey.service.messages import record_delivery

HOOK = f"/hooks/lockme/{HOOK_SECRET}"
NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
async def stack(engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path) -> AsyncIterator[Stack]:
    s = await make_stack(engine, secret_box, tmp_path)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with receiver_client(stack.app) as c:
        yield c


async def _ids(stack: Stack) -> list[str]:
    async with stack.service.session_factory() as session:
        return sorted((await session.scalars(select(LockmeMessage.message_id))).all())


# --------------------------------------------------------------------------- storage


async def test_batch_insert_returns_only_new_ids(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory() as session, session.begin():
        assert await insert_message_if_new(session, "old", NOW)
    async with session_factory() as session, session.begin():
        new = await insert_messages_if_new(session, ["a", "old", "b", "a", "c"], NOW)
    assert new == {"a", "b", "c"}
    async with session_factory() as session:
        rows = (await session.scalars(select(LockmeMessage))).all()
        assert sorted(r.message_id for r in rows) == ["a", "b", "c", "old"]
        for row in rows:
            assert row.state is MessageState.RECEIVED
            assert row.attempts == 0
            assert row.received_at == NOW
            assert row.next_attempt_at == NOW  # due at once
    async with session_factory() as session, session.begin():
        assert await insert_messages_if_new(session, ["a", "c"], NOW) == set()
        assert await insert_messages_if_new(session, [], NOW) == set()


def test_only_the_first_delivery_of_a_new_id_is_new() -> None:
    assert first_deliveries(["a", "b", "a", "c", "b"], {"a", "b"}) == [
        True,
        True,
        False,
        False,
        False,
    ]


# --------------------------------------------------------------------------- group commit


async def test_concurrent_deliveries_share_one_transaction(stack: Stack) -> None:
    service = stack.service
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(service.engine.sync_engine, "before_cursor_execute", count)
    try:
        ids = ["1", "2", "3", "2", "4", "1", "5"]
        answers = await asyncio.gather(*(record_delivery(service, i) for i in ids))
    finally:
        event.remove(service.engine.sync_engine, "before_cursor_execute", count)
    assert answers == [True, True, True, False, True, False, True]
    assert (service.message_intake.batches, service.message_intake.items) == (1, 7)
    assert len([s for s in statements if s.lstrip().upper().startswith("INSERT")]) == 1
    assert await _ids(stack) == ["1", "2", "3", "4", "5"]
    # a redelivery later is a duplicate too
    assert await record_delivery(service, "3") is False


async def test_concurrent_webhooks_answer_each_delivery(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    ids = [str(n % 6) for n in range(18)]
    answers = await asyncio.gather(*(client.post(HOOK, headers={"X-MessageId": i}) for i in ids))
    assert [a.status_code for a in answers] == [200] * 18
    bodies = [a.json() for a in answers]
    assert [b["message_id"] for b in bodies] == ids
    for message_id in set(ids):
        firsts = [b for b in bodies if b["message_id"] == message_id and not b["duplicate"]]
        assert len(firsts) == 1
    assert stack.service.message_intake.batches < 18  # grouped
    assert await _ids(stack) == sorted(set(ids))
    text = stack.service.metrics.render().decode()
    assert 'roomkey_lockme_webhooks_total{outcome="stored"} 6.0' in text
    assert 'roomkey_lockme_webhooks_total{outcome="duplicate"} 12.0' in text


async def test_a_failed_batch_answers_503_to_each_of_its_requests(
    stack: Stack, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from roomkey.service.db.engine import create_session_factory

    service = stack.service
    working = service.session_factory
    broken = create_async_engine("sqlite+aiosqlite:////proc/roomkey-no-such-dir/db.sqlite3")
    service.session_factory = create_session_factory(broken)
    service.wakes.messages.clear()
    try:
        with caplog.at_level(logging.ERROR, logger="roomkey.service.message_intake"):
            answers = await asyncio.gather(
                *(client.post(HOOK, headers={"X-MessageId": str(n)}) for n in range(5))
            )
    finally:
        await broken.dispose()
        service.session_factory = working
    assert [a.status_code for a in answers] == [503] * 5
    assert {a.json()["error"]["type"] for a in answers} == {"storage_unavailable"}
    assert not service.wakes.messages.is_set()
    assert service.message_intake.failed_batches >= 1
    failures = [r for r in caplog.records if "could not store" in r.getMessage()]
    assert len(failures) == service.message_intake.failed_batches  # once per batch
    text = service.metrics.render().decode()
    assert 'roomkey_lockme_webhooks_total{outcome="unavailable"} 5.0' in text
    assert await _ids(stack) == []
    # Lockme delivers again: now it is stored, and as new.
    again = await client.post(HOOK, headers={"X-MessageId": "3"})
    assert again.json() == {"status": "accepted", "message_id": "3", "duplicate": False}


async def test_stored_ids_are_logged_once_per_batch(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        await asyncio.gather(*(record_delivery(stack.service, i) for i in ["7", "8", "9", "8"]))
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("roomkey.service")]
    stored = [line for line in lines if "Lockme message" in line]
    assert stored == ["stored 3 Lockme message(s): 7 8 9"]


async def test_stop_writes_what_is_queued(stack: Stack) -> None:
    pending = asyncio.ensure_future(record_delivery(stack.service, "55"))
    await asyncio.sleep(0)  # queued, not written yet
    await stack.service.stop()
    assert pending.done()
    assert await pending is True
    assert await _ids(stack) == ["55"]


# --------------------------------------------------------------------------- the shortcut


REQUESTS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("POST", HOOK, [("X-MessageId", "{n}")]),
    ("GET", HOOK, [("X-MessageId", "{n}")]),
    ("POST", HOOK, [("X-MessageId", " {n}\t")]),
    ("POST", f"/hooks/lockme?s={HOOK_SECRET}", [("X-MessageId", "{n}")]),
    ("GET", f"/hooks/lockme?x=1&s={HOOK_SECRET}", [("x-messageid", "{n}")]),
    ("POST", f"/hooks/lockme?s={HOOK_SECRET}&s={HOOK_SECRET}", [("X-MessageId", "{n}")]),
    ("POST", "/hooks/lockme?s=", [("X-MessageId", "{n}")]),
    ("POST", "/hooks/lockme/wrong", [("X-MessageId", "{n}")]),
    ("POST", HOOK, []),
    ("POST", HOOK, [("X-MessageId", "")]),
    ("POST", HOOK, [("X-MessageId", "a b")]),
    ("POST", HOOK, [("X-MessageId", "x" * 129)]),
    ("POST", HOOK, [("X-MessageId", "1"), ("X-MessageId", "2")]),
    ("HEAD", HOOK, [("X-MessageId", "{n}")]),
    ("PUT", HOOK, [("X-MessageId", "{n}")]),
    ("DELETE", "/hooks/lockme", [("X-MessageId", "{n}")]),
    ("POST", f"{HOOK}/extra", [("X-MessageId", "{n}")]),
    ("POST", "/hooks/lockme/", [("X-MessageId", "{n}")]),
    ("POST", "/hooks/lockmex", [("X-MessageId", "{n}")]),
]


async def _answers(client: httpx.AsyncClient, run: str) -> list[tuple[int, str, str]]:
    out = []
    for n, (method, path, headers) in enumerate(REQUESTS):
        sent = [(k, v.format(n=f"{run}{n}")) for k, v in headers]
        r = await client.request(method, path, headers=sent)
        body = r.text.replace(f"{run}{n}", "<id>")
        out.append((r.status_code, r.headers.get("content-type", ""), body))
    return out


async def test_the_shortcut_answers_exactly_like_the_routed_receiver(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    app = stack.app
    assert app.fast_receivers  # the shortcut is installed
    fast = await _answers(client, "f")
    receivers, app.fast_receivers = app.fast_receivers, []
    try:
        routed = await _answers(client, "r")
    finally:
        app.fast_receivers = receivers
    assert fast == routed
    statuses = [status for status, _, _ in fast]
    # accepted x5, wrong/missing secret x3, bad ids x5, other methods x3, other paths x3
    # (a trailing slash is FastAPI's redirect, as before)
    assert statuses == [200] * 5 + [404] * 3 + [400] * 5 + [405] * 3 + [404, 307, 404]
    assert all(ctype == "application/json" for _, ctype, _ in fast[:16])
    # HEAD stored nothing; the five accepted deliveries of each run did.
    assert await _ids(stack) == sorted([f"f{n}" for n in range(5)] + [f"r{n}" for n in range(5)])


async def test_a_root_path_takes_the_routed_receiver(stack: Stack) -> None:
    transport = httpx.ASGITransport(app=stack.app, root_path="/roomkey")
    async with httpx.AsyncClient(transport=transport, base_url="http://roomkey.test") as c:
        r = await c.post(f"/roomkey{HOOK}", headers={"X-MessageId": "600"})
    assert r.status_code == 200
    assert r.json() == {"status": "accepted", "message_id": "600", "duplicate": False}
    assert await _ids(stack) == ["600"]
