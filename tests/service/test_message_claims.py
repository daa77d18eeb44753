"""The message worker's batch repository functions, on SQLite and PostgreSQL: claim renewal,
holding claimed rows, recording many messages applied / acked in one statement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from roomkey.service.db import messages as msgs
from roomkey.service.db.claims import renew_claims
from roomkey.service.db.models import LockmeMessage, MessageState

T0 = datetime(2026, 3, 29, 8, 0, tzinfo=UTC)
LEASE = timedelta(seconds=120)
Factory = async_sessionmaker[AsyncSession]


async def _claimed(factory: Factory, ids: list[str], owner: str = "w1") -> None:
    async with factory.begin() as s:
        for message_id in ids:
            await msgs.insert_message_if_new(s, message_id, T0)
    async with factory.begin() as s:
        rows = await msgs.claim_messages(s, owner=owner, now=T0, limit=len(ids), lease=LEASE)
        assert sorted(r.message_id for r in rows) == sorted(ids)


async def test_renew_claims_extends_only_the_owners_rows(session_factory: Factory) -> None:
    await _claimed(session_factory, ["m1", "m2"])
    async with session_factory.begin() as s:
        await msgs.insert_message_if_new(s, "m3", T0)
        (other,) = await msgs.claim_messages(s, owner="w2", now=T0, limit=1, lease=LEASE)
        assert other.message_id == "m3"
    later = T0 + timedelta(seconds=100)
    async with session_factory.begin() as s:
        kept = await renew_claims(
            s, LockmeMessage, ["m1", "m2", "m3"], owner="w1", until=later + LEASE
        )
        assert kept == {"m1", "m2"}  # m3 belongs to w2: untouched
        assert await renew_claims(s, LockmeMessage, [], owner="w1", until=later) == set()
    # after the first lease ran out, the renewed rows are still held; w2's claim expired
    async with session_factory.begin() as s:
        taken = await msgs.claim_messages(
            s, owner="w3", now=T0 + LEASE + timedelta(seconds=1), limit=5, lease=LEASE
        )
        assert [r.message_id for r in taken] == ["m3"]


async def test_hold_and_record_applied_in_batches(session_factory: Factory) -> None:
    await _claimed(session_factory, ["m1", "m2", "m3"])
    async with session_factory.begin() as s:  # m3's claim went to another worker
        await renew_claims(s, LockmeMessage, ["m3"], owner="w1", until=T0)
        taken = await msgs.claim_messages(
            s, owner="w2", now=T0 + timedelta(seconds=1), limit=5, lease=LEASE
        )
        assert [r.message_id for r in taken] == ["m3"]
    raw = {"action": "add", "roomid": "7", "reservationid": 1001, "data": {}}
    now = T0 + timedelta(seconds=2)
    async with session_factory.begin() as s:
        held = await msgs.hold_claimed_messages(s, ["m1", "m2", "m3", "nope"], owner="w1")
        assert held == {"m1", "m2"}
        await msgs.record_messages_applied(s, [("m1", raw), ("m2", None)], now=now)
    async with session_factory() as s:
        m1 = await msgs.get_message(s, "m1")
        m2 = await msgs.get_message(s, "m2")
        m3 = await msgs.get_message(s, "m3")
    assert m1 is not None
    assert m2 is not None
    assert m3 is not None
    assert m1.state is MessageState.APPLIED
    assert m2.state is MessageState.APPLIED
    assert m1.applied_at == now
    assert m2.applied_at == now
    assert m1.raw == raw  # fetched just now: stored with the apply
    assert (m1.action, m1.room_id, m1.reservation_id, m1.fetched_at) == ("add", 7, 1001, now)
    assert m2.raw is None
    assert m2.fetched_at is None
    assert m3.state is MessageState.RECEIVED
    assert m3.applied_at is None
    assert m1.claim_owner == "w1"  # still held until marked read


async def test_record_messages_acked_skips_rows_held_by_others(session_factory: Factory) -> None:
    await _claimed(session_factory, ["m1", "m2"])
    async with session_factory.begin() as s:
        marked = await msgs.record_messages_acked(s, ["m1", "m2"], owner="w2", now=T0)
        assert marked == set()
        marked = await msgs.record_messages_acked(s, ["m1", "m2", "m1"], owner="w1", now=T0)
        assert marked == {"m1", "m2"}
        assert await msgs.record_messages_acked(s, [], owner="w1", now=T0) == set()
    async with session_factory() as s:
        for message_id in ("m1", "m2"):
            row = await msgs.get_message(s, message_id)
            assert row is not None
            assert row.state is MessageState.ACKED
            assert (row.claim_owner, row.claim_until, row.next_attempt_at) == (None, None, None)
            assert row.acked_at == T0


async def test_a_failure_keeps_the_raw_message_fetched_in_that_attempt(
    session_factory: Factory,
) -> None:
    await _claimed(session_factory, ["m1"])
    raw = {"action": "edit", "roomid": 7, "reservationid": "55"}
    retry = T0 + timedelta(seconds=15)
    async with session_factory.begin() as s:
        assert await msgs.record_message_failed(
            s, "m1", owner="w1", error="apply: boom", retry_at=retry, raw=raw, now=T0
        )
    async with session_factory() as s:
        row = await msgs.get_message(s, "m1")
    assert row is not None
    assert row.state is MessageState.FAILED
    assert (row.raw, row.action, row.room_id, row.reservation_id) == (raw, "edit", 7, 55)
    assert row.next_attempt_at == retry
    assert row.claim_owner is None
