"""Every repository function, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from roomkey.service.crypto import SecretBox
from roomkey.service.db import alerts, audit, commands, events, inventory, kv, leases, plans
from roomkey.service.db import messages as msgs
from roomkey.service.db import reservations as res
from roomkey.service.db.models import (
    Command,
    CommandAction,
    CommandOrigin,
    CommandReason,
    CommandState,
    DoorActionKind,
    DoorActionStatus,
    EventSource,
    Lock,
    MessageState,
    RoomLock,
)

T0 = datetime(2026, 3, 29, 8, 0, tzinfo=UTC)
Factory = async_sessionmaker[AsyncSession]


async def _add_lock(session: AsyncSession, lock_id: str = "front", room_id: int = 7) -> None:
    from roomkey.service.db.models import Room

    if await session.get(Room, room_id) is None:
        session.add(
            Room(
                id=room_id,
                name=f"room {room_id}",
                timezone="Europe/Warsaw",
                policy={},
                active=True,
                created_at=T0,
                updated_at=T0,
            )
        )
    session.add(
        Lock(
            id=lock_id,
            name=lock_id,
            transports=["bridge"],
            active=True,
            created_at=T0,
            updated_at=T0,
        )
    )
    await session.flush()
    session.add(RoomLock(room_id=room_id, lock_id=lock_id))
    await session.flush()


def _reservation(rid: int = 1001, room_id: int = 7, start: datetime = T0) -> res.ReservationData:
    return res.ReservationData(
        id=rid,
        room_id=room_id,
        date=date(2026, 3, 29),
        hour=time(10, 0),
        start_at=start,
        end_at=start + timedelta(hours=1),
        status=1,
        source="web",
        extid=None,
        data={"name": "Jan", "email": "jan@example.com"},
    )


# ----------------------------------------------------------------------------- messages


async def test_message_lifecycle(session_factory: Factory) -> None:
    async with session_factory.begin() as s:
        assert await msgs.insert_message_if_new(s, "m1", T0) is True
        assert await msgs.insert_message_if_new(s, "m1", T0) is False
    async with session_factory.begin() as s:
        claimed = await msgs.claim_messages(s, owner="w1", now=T0, limit=5)
        assert [m.message_id for m in claimed] == ["m1"]
        assert claimed[0].attempts == 1
        assert claimed[0].claim_owner == "w1"
        assert claimed[0].received_at == T0
        assert claimed[0].received_at.tzinfo is not None
    async with session_factory.begin() as s:
        raw = {"action": "add", "roomid": "7", "reservationid": 1001, "data": {}}
        assert await msgs.record_message_fetched(s, "m1", owner="other", raw=raw, now=T0) is False
        assert await msgs.record_message_fetched(s, "m1", owner="w1", raw=raw, now=T0)
        assert await msgs.record_message_applied(s, "m1", owner="w1", now=T0)
    async with session_factory.begin() as s:
        m = await msgs.get_message(s, "m1")
        assert m is not None
        assert m.state == MessageState.APPLIED
        assert (m.action, m.room_id, m.reservation_id) == ("add", 7, 1001)
        assert await msgs.record_message_acked(s, "m1", owner="w1", now=T0)
    async with session_factory.begin() as s:
        m = await msgs.get_message(s, "m1")
        assert m is not None
        assert m.state == MessageState.ACKED
        assert m.next_attempt_at is None
        assert m.claim_owner is None
        assert await msgs.claim_messages(s, owner="w1", now=T0 + timedelta(days=1)) == []
        counts = await msgs.count_messages_by_state(s)
        assert counts[MessageState.ACKED] == 1
        assert counts[MessageState.RECEIVED] == 0


async def test_failed_message_is_retried_later_and_dead_one_stays_visible(
    session_factory: Factory,
) -> None:
    async with session_factory.begin() as s:
        await msgs.insert_message_if_new(s, "m2", T0)
        await msgs.claim_messages(s, owner="w1", now=T0)
        ok = await msgs.record_message_failed(
            s, "m2", owner="w1", error="boom", retry_at=T0 + timedelta(seconds=30)
        )
        assert ok
    async with session_factory.begin() as s:
        assert await msgs.claim_messages(s, owner="w2", now=T0 + timedelta(seconds=10)) == []
        again = await msgs.claim_messages(s, owner="w2", now=T0 + timedelta(seconds=31))
        assert [m.message_id for m in again] == ["m2"]
        assert again[0].attempts == 2
        assert again[0].last_error == "boom"
        assert again[0].state == MessageState.FAILED
        await msgs.record_message_failed(s, "m2", owner="w2", error="gave up", retry_at=None)
    async with session_factory.begin() as s:
        assert await msgs.claim_messages(s, owner="w3", now=T0 + timedelta(days=9)) == []
        listed = await msgs.list_messages(s, states=[MessageState.FAILED])
        assert [m.message_id for m in listed] == ["m2"]
        assert await msgs.requeue_message(s, "m2", now=T0 + timedelta(days=9))
        assert len(await msgs.claim_messages(s, owner="w3", now=T0 + timedelta(days=9))) == 1


async def test_list_messages_newest_first(session_factory: Factory) -> None:
    async with session_factory.begin() as s:
        for i in range(3):
            await msgs.insert_message_if_new(s, f"m{i}", T0 + timedelta(seconds=i))
    async with session_factory() as s:
        listed = await msgs.list_messages(s, limit=2)
        assert [m.message_id for m in listed] == ["m2", "m1"]
        older = await msgs.list_messages(s, before=T0 + timedelta(seconds=1))
        assert [m.message_id for m in older] == ["m0"]


# ----------------------------------------------------------------------------- reservations


async def test_reservation_upsert_move_and_delete(session_factory: Factory) -> None:
    async with session_factory.begin() as s:
        change = await res.upsert_reservation(s, _reservation(), now=T0, message_id="m1")
        assert change.created
        assert change.affected_rooms == {7}
    async with session_factory.begin() as s:
        moved = _reservation(room_id=8, start=T0 + timedelta(days=1))
        change = await res.upsert_reservation(s, moved, now=T0, message_id="m2")
        assert not change.created
        assert change.previous_room_id == 7
        assert change.affected_rooms == {7, 8}
    async with session_factory.begin() as s:
        row = await res.get_reservation(s, 1001)
        assert row is not None
        assert row.room_id == 8
        assert row.last_message_id == "m2"
        assert row.start_at == T0 + timedelta(days=1)
        assert row.data["email"] == "jan@example.com"
        assert row.hour == time(10, 0)
        assert row.date == date(2026, 3, 29)
    async with session_factory.begin() as s:
        gone = await res.mark_reservation_deleted(s, 1001, now=T0, message_id="m3")
        assert gone.affected_rooms == {8}
        unknown = await res.mark_reservation_deleted(s, 999, now=T0)
        assert unknown.affected_rooms == frozenset()
    async with session_factory() as s:
        assert await res.list_reservations(s) == []
        all_rows = await res.list_reservations(s, include_deleted=True)
        assert [r.id for r in all_rows] == [1001]
        assert all_rows[0].deleted


async def test_list_reservations_overlap_filter(session_factory: Factory) -> None:
    async with session_factory.begin() as s:
        for i in range(3):
            await res.upsert_reservation(
                s, _reservation(rid=i + 1, start=T0 + timedelta(hours=2 * i)), now=T0
            )
    async with session_factory() as s:
        got = await res.list_reservations(
            s,
            room_ids=[7],
            start=T0 + timedelta(minutes=30),
            end=T0 + timedelta(hours=2, minutes=1),
        )
        assert [r.id for r in got] == [1, 2]


# ----------------------------------------------------------------------------- plan


async def test_door_windows_and_reservation_at_lock(session_factory: Factory) -> None:
    async with session_factory.begin() as s:
        await _add_lock(s)
        await res.upsert_reservation(s, _reservation(1), now=T0)
        await res.upsert_reservation(s, _reservation(2, start=T0 + timedelta(hours=1)), now=T0)
        await plans.replace_door_windows(
            s,
            7,
            [
                plans.WindowSpec(1, 7, T0 - timedelta(minutes=10), T0 + timedelta(minutes=75)),
                plans.WindowSpec(2, 7, T0 + timedelta(minutes=50), T0 + timedelta(minutes=135)),
            ],
            now=T0,
        )
    async with session_factory.begin() as s:
        assert await res.reservation_for_lock_at(s, "front", T0) == 1
        assert await res.reservation_for_lock_at(s, "front", T0 + timedelta(minutes=60)) == 2
        assert await res.reservation_for_lock_at(s, "front", T0 + timedelta(hours=5)) is None
        await plans.replace_door_windows(
            s, 7, [plans.WindowSpec(2, 7, T0, T0 + timedelta(hours=3))], now=T0
        )
    async with session_factory() as s:
        windows = await plans.list_door_windows(s, room_id=7)
        assert [(w.reservation_id, w.end_at) for w in windows] == [(2, T0 + timedelta(hours=3))]
        with pytest.raises(ValueError, match="not in room"):
            await plans.replace_door_windows(s, 8, [plans.WindowSpec(2, 7, T0, T0)], now=T0)


def _action(
    key: str, at: datetime, kind: DoorActionKind = DoorActionKind.UNLOCK
) -> plans.ActionSpec:
    return plans.ActionSpec(
        key=key, room_id=7, lock_id="front", kind=kind, planned_at=at, reservation_ids=(1,)
    )


async def test_upsert_door_actions_by_key(session_factory: Factory) -> None:
    async with session_factory.begin() as s:
        await _add_lock(s)
        diff = await plans.upsert_door_actions(
            s,
            7,
            [_action("a", T0), _action("b", T0 + timedelta(hours=1), DoorActionKind.LOCK)],
            now=T0,
        )
        assert sorted(diff.inserted) == ["a", "b"]
        assert diff.changed
    async with session_factory.begin() as s:
        diff = await plans.upsert_door_actions(
            s,
            7,
            [_action("a", T0), _action("b", T0 + timedelta(hours=2), DoorActionKind.LOCK)],
            now=T0,
        )
        assert diff.unchanged == ["a"]
        assert diff.updated == ["b"]
        assert not diff.inserted
    async with session_factory.begin() as s:
        b = await plans.get_door_action(s, "b")
        assert b is not None
        assert b.version == 2
        assert b.planned_at == T0 + timedelta(hours=2)
        # "a" fired; a re-plan without "b" supersedes b but leaves the done "a" alone.
        assert await plans.finish_door_action(
            s, "a", status=DoorActionStatus.DONE, now=T0, command_id="c1"
        )
        assert not await plans.finish_door_action(s, "a", status=DoorActionStatus.DONE, now=T0)
        diff = await plans.upsert_door_actions(s, 7, [_action("a", T0)], now=T0)
        assert diff.superseded == ["b"]
        assert diff.unchanged == ["a"]
    async with session_factory.begin() as s:
        # the same key planned again is revived in place, never duplicated
        diff = await plans.upsert_door_actions(
            s,
            7,
            [_action("a", T0), _action("b", T0 + timedelta(hours=3), DoorActionKind.LOCK)],
            now=T0,
        )
        assert diff.updated == ["b"]
        rows = await plans.list_door_actions(s, room_id=7)
        assert [(r.key, r.status) for r in rows] == [
            ("a", DoorActionStatus.DONE),
            ("b", DoorActionStatus.PLANNED),
        ]
        assert rows[0].command_id == "c1"
        planned = await plans.list_door_actions(s, statuses=[DoorActionStatus.PLANNED])
        assert [r.key for r in planned] == ["b"]


async def test_claim_due_door_actions(session_factory: Factory) -> None:
    async with session_factory.begin() as s:
        await _add_lock(s)
        await plans.upsert_door_actions(
            s, 7, [_action("x", T0), _action("y", T0 + timedelta(minutes=5))], now=T0
        )
    async with session_factory.begin() as s:
        got = await plans.claim_due_door_actions(s, owner="e1", now=T0 + timedelta(seconds=1))
        assert [a.key for a in got] == ["x"]
        assert (
            await plans.claim_due_door_actions(s, owner="e2", now=T0 + timedelta(seconds=2)) == []
        )
        assert not await plans.finish_door_action(
            s, "x", status=DoorActionStatus.DONE, now=T0, owner="e2"
        )
        assert await plans.finish_door_action(
            s, "x", status=DoorActionStatus.SKIPPED, now=T0, owner="e1", reason="too late"
        )
        with pytest.raises(ValueError):
            await plans.finish_door_action(s, "y", status=DoorActionStatus.PLANNED, now=T0)


# ----------------------------------------------------------------------------- commands


async def test_command_lifecycle_and_one_pending_per_lock(session_factory: Factory) -> None:
    async with session_factory.begin() as s:
        await _add_lock(s)
        c1, sup = await commands.insert_command(
            s,
            lock_id="front",
            action=CommandAction.DAY_LOCK,
            now=T0,
            deadline=T0 + timedelta(seconds=30),
        )
        assert sup == []
        c2, sup = await commands.insert_command(
            s,
            lock_id="front",
            action=CommandAction.NIGHT_LOCK,
            now=T0,
            deadline=T0 + timedelta(seconds=30),
            origin=CommandOrigin.MANUAL,
            actor="alice",
        )
        assert sup == [c1.id]
    async with session_factory.begin() as s:
        old = await commands.get_command(s, c1.id)
        assert old is not None
        assert old.state == CommandState.SUPERSEDED
        assert old.superseded_by == c2.id
        assert old.finished_at == T0
        claimed = await commands.claim_due_commands(s, owner="x1", now=T0)
        assert [c.id for c in claimed] == [c2.id]
        assert await commands.transition_command(
            s,
            c2.id,
            to=CommandState.SENDING,
            now=T0,
            from_states=[CommandState.PENDING],
            owner="x1",
        )
        attempt = await commands.begin_attempt(s, c2.id, transport="bridge", now=T0)
        await commands.finish_attempt(s, attempt.id, now=T0, outcome="ok")
        assert await commands.transition_command(
            s, c2.id, to=CommandState.SENT, now=T0, from_states=[CommandState.SENDING]
        )
        # compare-and-set: cannot go back
        assert not await commands.transition_command(
            s, c2.id, to=CommandState.SENDING, now=T0, from_states=[CommandState.PENDING]
        )
        assert [c.id for c in await commands.in_flight_commands(s, "front")] == [c2.id]
        late = await commands.commands_past_deadline(s, now=T0 + timedelta(seconds=31))
        assert [c.id for c in late] == [c2.id]
        assert await commands.transition_command(
            s,
            c2.id,
            to=CommandState.EXPIRED,
            now=T0,
            from_states=[CommandState.SENT],
            reason=CommandReason.NO_CONFIRMATION,
            detail="no event",
        )
    async with session_factory() as s:
        c = await commands.get_command(s, c2.id)
        assert c is not None
        assert c.state == CommandState.EXPIRED
        assert c.reason == CommandReason.NO_CONFIRMATION
        assert c.attempts == 1
        assert c.transport == "bridge"
        assert c.sent_at == T0
        assert c.claim_owner is None
        atts = await commands.list_attempts(s, c2.id)
        assert [(a.transport, a.outcome) for a in atts] == [("bridge", "ok")]
        listed = await commands.list_commands(s, lock_id="front")
        assert {x.id for x in listed} == {c1.id, c2.id}


async def test_second_pending_command_violates_unique_index(session_factory: Factory) -> None:
    async with session_factory.begin() as s:
        await _add_lock(s)
        await commands.insert_command(
            s, lock_id="front", action=CommandAction.OPEN, now=T0, deadline=T0
        )
    with pytest.raises(IntegrityError):
        async with session_factory.begin() as s:
            s.add(
                Command(
                    id="raw",
                    lock_id="front",
                    action=CommandAction.OPEN,
                    state=CommandState.PENDING,
                    attempts=0,
                    origin=CommandOrigin.PLAN,
                    due_at=T0,
                    deadline=T0,
                    created_at=T0,
                    version=1,
                )
            )


# ----------------------------------------------------------------------------- events


async def test_events_dedupe_window_and_lock_state(session_factory: Factory) -> None:
    async with session_factory.begin() as s:
        await _add_lock(s)
    window = timedelta(seconds=10)

    async def record(at: datetime, state: str) -> bool:
        async with session_factory.begin() as s:
            ev = await events.record_event_if_new(
                s,
                lock_id="front",
                source=EventSource.BRIDGE,
                event_type="STATE_CHANGED",
                kind="state_changed",
                bolt_state=state,
                key_local_id=1,
                received_at=at,
                window=window,
                raw=events.drop_pii({"bolt_state": state, "key_name_user": "Jan"}),
            )
            return ev is not None

    assert await record(T0, "day_lock")
    assert not await record(T0 + timedelta(seconds=3), "day_lock")  # duplicate delivery
    assert await record(T0 + timedelta(seconds=4), "open")
    assert await record(T0 + timedelta(seconds=6), "day_lock")  # real: different in between
    assert await record(T0 + timedelta(seconds=30), "day_lock")  # equal but outside the window
    async with session_factory.begin() as s:
        stored = await events.list_events(s, lock_id="front")
        assert [e.bolt_state for e in reversed(stored)] == [
            "day_lock",
            "open",
            "day_lock",
            "day_lock",
        ]
        assert all("key_name_user" not in e.raw for e in stored)
        assert await events.update_lock_state(
            s, "front", now=T0, bolt_state="night_lock", battery_percentage=80, event_at=T0
        )
        await events.update_lock_state(s, "front", now=T0, online=False)
        await events.link_event(s, stored[-1].id, command_id="c9", reservation_id=1001)
    async with session_factory() as s:
        lock = await s.get(Lock, "front")
        assert lock is not None
        assert lock.bolt_state == "night_lock"
        assert lock.battery_percentage == 80
        assert lock.online is False
        assert lock.last_event_at == T0
        linked = await events.list_events(s, command_id="c9")
        assert len(linked) == 1
        assert linked[0].reservation_id == 1001
        by_room = await events.list_events(s, room_id=7, start=T0, end=T0 + timedelta(seconds=5))
        assert len(by_room) == 2


async def test_event_after_window_is_kept(session_factory: Factory) -> None:
    for offset, expected in ((0, True), (11, True), (15, False)):
        async with session_factory.begin() as s:
            ev = await events.record_event_if_new(
                s,
                lock_id=None,
                source=EventSource.CLOUD,
                event_type="BATTERY",
                kind="battery",
                received_at=T0 + timedelta(seconds=offset),
                window=timedelta(seconds=10),
                raw={},
            )
            assert (ev is not None) is expected


# ----------------------------------------------------------------------------- alerts/audit/kv


async def test_alert_raised_once_while_open(session_factory: Factory) -> None:
    async with session_factory.begin() as s:
        a = await alerts.open_alert_if_new(
            s,
            kind="lock_offline",
            dedupe_key="offline:front",
            message="offline",
            now=T0,
            lock_id="front",
        )
        assert a is not None
        again = await alerts.open_alert_if_new(
            s,
            kind="lock_offline",
            dedupe_key="offline:front",
            message="offline",
            now=T0 + timedelta(minutes=1),
        )
        assert again is None
    async with session_factory.begin() as s:
        got = await alerts.get_alert(s, a.id)
        assert got is not None
        assert got.count == 2
        assert got.last_seen_at == T0 + timedelta(minutes=1)
        assert await alerts.resolve_alerts(s, "offline:front", by="system", now=T0) == 1
        assert not await alerts.acknowledge_alert(s, a.id, by="bob", now=T0)
        b = await alerts.open_alert_if_new(
            s, kind="lock_offline", dedupe_key="offline:front", message="offline again", now=T0
        )
        assert b is not None
        assert b.id != a.id
        assert await alerts.acknowledge_alert(s, b.id, by="bob", now=T0)
    async with session_factory() as s:
        assert await alerts.list_alerts(s, open_only=True) == []
        assert len(await alerts.list_alerts(s, lock_id="front")) == 1


async def test_audit_kv_and_leases(session_factory: Factory) -> None:
    async with session_factory.begin() as s:
        await audit.write_audit(
            s, at=T0, actor="alice", action="open", target="room:7", details={"via": "cli"}
        )
        await audit.write_audit(s, at=T0 + timedelta(seconds=1), actor="system", action="sync")
        await kv.kv_set(s, "last_reconcile", {"at": "x"}, now=T0)
        await kv.kv_set(s, "last_reconcile", {"at": "y"}, now=T0)
    async with session_factory.begin() as s:
        entries = await audit.list_audit(s)
        assert [e.action for e in entries] == ["sync", "open"]
        assert [e.actor for e in await audit.list_audit(s, target="room:7")] == ["alice"]
        assert await kv.kv_get(s, "last_reconcile") == {"at": "y"}
        assert await kv.kv_get(s, "missing", 5) == 5
        ttl = timedelta(seconds=60)
        assert await leases.try_acquire_lease(s, "reconcile", owner="r1", now=T0, ttl=ttl)
        assert not await leases.try_acquire_lease(
            s, "reconcile", owner="r2", now=T0 + timedelta(seconds=30), ttl=ttl
        )
        assert await leases.try_acquire_lease(  # renewal by the holder
            s, "reconcile", owner="r1", now=T0 + timedelta(seconds=30), ttl=ttl
        )
        assert not await leases.try_acquire_lease(
            s, "reconcile", owner="r2", now=T0 + timedelta(seconds=80), ttl=ttl
        )
        assert await leases.try_acquire_lease(  # expired → taken over
            s, "reconcile", owner="r2", now=T0 + timedelta(seconds=91), ttl=ttl
        )
        assert await leases.get_lease(s, "reconcile") == ("r2", T0 + timedelta(seconds=151))
        assert not await leases.release_lease(s, "reconcile", owner="r1")
        assert await leases.release_lease(s, "reconcile", owner="r2")
        assert await leases.get_lease(s, "reconcile") is None


async def test_secrets_roundtrip_and_rotation(
    session_factory: Factory, secret_box: SecretBox
) -> None:
    from roomkey.service.crypto import generate_key
    from roomkey.service.db.models import StoredSecret

    async with session_factory.begin() as s:
        await inventory.put_secret(s, secret_box, "lockme_token", '{"access_token":"AT"}', now=T0)
        await inventory.put_secret(s, secret_box, "lockme_token", '{"access_token":"AT2"}', now=T0)
    async with session_factory.begin() as s:
        stored = (await s.execute(select(StoredSecret.ciphertext))).scalar_one()
        assert "AT2" not in stored
        assert await inventory.get_secret(s, secret_box, "lockme_token") == '{"access_token":"AT2"}'
        assert await inventory.get_secret(s, secret_box, "nope") is None
        new_key = generate_key()
        rotated_box = SecretBox([new_key, *secret_box_keys(secret_box)])
        assert await inventory.rotate_secrets(s, rotated_box) == 1
    async with session_factory.begin() as s:
        only_new = SecretBox([new_key])
        assert await inventory.get_secret(s, only_new, "lockme_token") == '{"access_token":"AT2"}'
        assert await inventory.delete_secret(s, "lockme_token")


def secret_box_keys(box: SecretBox) -> list[str]:
    # The fixture's key is not exposed by SecretBox (by design); recover it for the test.
    fernet = box._fernet._fernets[0]
    import base64

    return [base64.urlsafe_b64encode(fernet._signing_key + fernet._encryption_key).decode()]
