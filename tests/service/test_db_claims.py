"""Claims across workers and replicas: no row is ever handed out twice; expired claims return."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from roomkey.service.db import leases
from roomkey.service.db import messages as msgs
from roomkey.service.db.engine import create_engine, create_session_factory
from roomkey.service.db.models import LockmeMessage

T0 = datetime(2026, 3, 29, 8, 0, tzinfo=UTC)
Factory = async_sessionmaker[AsyncSession]


async def _seed(factory: Factory, n: int) -> None:
    async with factory.begin() as s:
        for i in range(n):
            await msgs.insert_message_if_new(s, f"m{i:03d}", T0 + timedelta(milliseconds=i))


async def _drain(factory: Factory, owner: str, sink: list[str]) -> None:
    while True:
        async with factory.begin() as s:
            got = await msgs.claim_messages(s, owner=owner, now=T0 + timedelta(seconds=1), limit=3)
        if not got:
            return
        sink.extend(m.message_id for m in got)
        await asyncio.sleep(0)


async def test_concurrent_claimers_on_two_connections_never_share(
    session_factory: Factory,
) -> None:
    await _seed(session_factory, 40)
    a: list[str] = []
    b: list[str] = []
    await asyncio.gather(_drain(session_factory, "a", a), _drain(session_factory, "b", b))
    assert not set(a) & set(b)
    assert sorted(a + b) == [f"m{i:03d}" for i in range(40)]


async def test_two_engines_as_two_replicas_never_share(db_url: str, engine: AsyncEngine) -> None:
    replica_1 = create_session_factory(engine)
    other = create_engine(db_url)
    try:
        replica_2 = create_session_factory(other)
        await _seed(replica_1, 30)
        a: list[str] = []
        b: list[str] = []
        await asyncio.gather(
            _drain(replica_1, "r1", a), _drain(replica_2, "r2", b), _drain(replica_2, "r2b", b)
        )
        assert not set(a) & set(b)
        assert len(b) == len(set(b))
        assert len(a) + len(b) == 30
    finally:
        await other.dispose()


async def test_expired_claim_is_reclaimed(session_factory: Factory) -> None:
    await _seed(session_factory, 1)
    lease = timedelta(seconds=60)
    async with session_factory.begin() as s:
        first = await msgs.claim_messages(s, owner="crashed", now=T0, lease=lease)
    assert len(first) == 1
    async with session_factory.begin() as s:
        assert await msgs.claim_messages(s, owner="w2", now=T0 + timedelta(seconds=59)) == []
    async with session_factory.begin() as s:
        again = await msgs.claim_messages(s, owner="w2", now=T0 + timedelta(seconds=61))
    assert [m.claim_owner for m in again] == ["w2"]
    assert again[0].attempts == 2
    async with session_factory.begin() as s:
        # the crashed worker's late write is refused
        assert not await msgs.record_message_applied(s, "m000", owner="crashed", now=T0)


async def test_idempotent_message_insert_under_concurrency(
    db_url: str, session_factory: Factory
) -> None:
    other = create_engine(db_url)
    try:
        factories = [session_factory, create_session_factory(other)]

        async def deliver(i: int) -> bool:
            async with factories[i % 2].begin() as s:
                return await msgs.insert_message_if_new(s, "dup", T0)

        results = await asyncio.gather(*(deliver(i) for i in range(12)))
        assert results.count(True) == 1
        async with session_factory() as s:
            count = (await s.execute(select(func.count()).select_from(LockmeMessage))).scalar()
        assert count == 1
    finally:
        await other.dispose()


async def test_lease_exclusive_between_replicas(db_url: str, session_factory: Factory) -> None:
    other = create_engine(db_url)
    try:
        factories = [session_factory, create_session_factory(other)]

        async def take(i: int) -> bool:
            async with factories[i % 2].begin() as s:
                return await leases.try_acquire_lease(
                    s, "reconcile", owner=f"r{i}", now=T0, ttl=timedelta(minutes=5)
                )

        results = await asyncio.gather(*(take(i) for i in range(8)))
        assert results.count(True) == 1
    finally:
        await other.dispose()


async def _seed_lock(factory: Factory) -> None:
    from roomkey.service.db.models import Lock

    async with factory.begin() as s:
        s.add(
            Lock(
                id="front",
                name="Front",
                transports=["bridge"],
                active=True,
                created_at=T0,
                updated_at=T0,
            )
        )


async def test_duplicate_event_deliveries_to_two_replicas_store_one(
    db_url: str, session_factory: Factory
) -> None:
    from roomkey.service.db import events
    from roomkey.service.db.models import EventSource, LockEvent

    await _seed_lock(session_factory)
    other = create_engine(db_url)
    try:
        factories = [session_factory, create_session_factory(other)]

        async def deliver(i: int) -> bool:
            async with factories[i % 2].begin() as s:
                ev = await events.record_event_if_new(
                    s,
                    lock_id="front",
                    source=EventSource.BRIDGE if i % 2 else EventSource.CLOUD,
                    event_type="STATE_CHANGED",
                    kind="state_changed",
                    bolt_state="open",
                    key_local_id=1,
                    received_at=T0 + timedelta(milliseconds=i),
                    window=timedelta(seconds=10),
                    raw={},
                )
                return ev is not None

        results = await asyncio.gather(*(deliver(i) for i in range(6)))
        assert results.count(True) == 1
        async with session_factory() as s:
            count = (await s.execute(select(func.count()).select_from(LockEvent))).scalar()
        assert count == 1
    finally:
        await other.dispose()


async def test_replicas_racing_for_one_lock_leave_one_pending_command(
    db_url: str, session_factory: Factory
) -> None:
    from sqlalchemy.exc import DBAPIError

    from roomkey.service.db import commands
    from roomkey.service.db.models import Command, CommandAction, CommandState

    await _seed_lock(session_factory)
    other = create_engine(db_url)
    try:
        factories = [session_factory, create_session_factory(other)]

        async def command(i: int) -> str:
            for _ in range(20):  # the documented contract: on IntegrityError, retry
                try:
                    async with factories[i % 2].begin() as s:
                        created, _superseded = await commands.insert_command(
                            s,
                            lock_id="front",
                            action=CommandAction.DAY_LOCK,
                            now=T0,
                            deadline=T0 + timedelta(seconds=30),
                        )
                        return created.id
                except DBAPIError:
                    await asyncio.sleep(0)
            raise AssertionError("could not insert")

        ids = await asyncio.gather(*(command(i) for i in range(6)))
        assert len(set(ids)) == 6
        async with session_factory() as s:
            states = list(
                (await s.execute(select(Command.state).where(Command.lock_id == "front"))).scalars()
            )
        assert states.count(CommandState.PENDING) == 1
        assert states.count(CommandState.SUPERSEDED) == 5
    finally:
        await other.dispose()


async def test_door_actions_claimed_once_across_replicas(
    db_url: str, session_factory: Factory
) -> None:
    from roomkey.service.db import plans
    from roomkey.service.db.models import DoorActionKind

    await _seed_lock(session_factory)
    async with session_factory.begin() as s:
        await plans.upsert_door_actions(
            s,
            1,
            [
                plans.ActionSpec(
                    f"k{i:02d}", 1, "front", DoorActionKind.UNLOCK, T0 + timedelta(seconds=i), (i,)
                )
                for i in range(20)
            ],
            now=T0,
        )
    other = create_engine(db_url)
    try:
        factories = [session_factory, create_session_factory(other)]
        taken: list[list[str]] = [[], []]

        async def executor(i: int) -> None:
            while True:
                async with factories[i].begin() as s:
                    got = await plans.claim_due_door_actions(
                        s, owner=f"x{i}", now=T0 + timedelta(minutes=1), limit=2
                    )
                if not got:
                    return
                taken[i].extend(a.key for a in got)
                await asyncio.sleep(0)

        await asyncio.gather(executor(0), executor(1))
        assert not set(taken[0]) & set(taken[1])
        assert sorted(taken[0] + taken[1]) == [f"k{i:02d}" for i in range(20)]
    finally:
        await other.dispose()
