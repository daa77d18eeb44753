"""Fault suite: every fault the simulators can inject, with the outcome roomkey must show.

Each case runs the whole pipeline in one process on one manual clock
(:mod:`harness.inproc`): a paid booking at 10:00 (door unlocked at 09:50, locked at 11:15),
one fault injected, then time moved on. Each asserts what roomkey did (commands and their
lifecycle, what each lock received), which alert it raised, and what it recovered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from harness.inproc import Venue, make_venue
from harness.modes import record_figures

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]

UNLOCK_AT = "09:50:00"
RESULTS: dict[str, dict[str, Any]] = {}


def note(case: str, **figures: Any) -> None:
    RESULTS[case] = figures
    record_figures("faults", case, figures)


@pytest.fixture
async def venue(tmp_path: Path) -> AsyncIterator[Venue]:
    v = await make_venue(tmp_path)
    try:
        yield v
    finally:
        await v.close()


async def booked(venue: Venue) -> int:
    rid = venue.book("10:00:00")
    await venue.run()
    return rid


async def test_baseline_without_faults_unlocks_confirms_and_locks(venue: Venue) -> None:
    await booked(venue)
    await venue.run_until(venue.at(UNLOCK_AT))
    await venue.run(20)
    commands = await venue.commands()
    assert [(c.action.value, c.state.value) for c in commands] == [("day_lock", "confirmed")]
    assert [r.action for r in venue.received()] == ["day_lock"]
    await venue.run_until(venue.at("11:15:00"))
    await venue.run(20)
    assert [r.action for r in venue.received()] == ["day_lock", "night_lock"]
    assert {c.state.value for c in await venue.commands()} == {"confirmed"}
    note("baseline", injected=0, commands=2, received=2, alerts=sorted(await venue.alert_kinds()))


# --------------------------------------------------------------------------- LOQED: the wire


async def unlock_with(venue: Venue, after: float = 40.0) -> list[Any]:
    """Book, run to the unlock moment and ``after`` seconds on; returns the commands."""
    await booked(venue)
    await venue.run_until(venue.at(UNLOCK_AT))
    await venue.run(after)
    return await venue.commands()


async def test_latency_on_the_bridge_only_delays_the_command(venue: Venue) -> None:
    venue.loqed.add_fault("/bridges/b1/to_lock", "latency", seconds=1.0, count=1)
    commands = await unlock_with(venue)
    assert [(c.action.value, c.state.value) for c in commands] == [("day_lock", "confirmed")]
    assert len(venue.received()) == 1
    assert len(await venue.attempts(commands[0].id)) == 1
    note("loqed_latency", injected=1, outcome="confirmed", received=1, alerts=[])


async def test_bridge_5xx_is_maybe_delivered_never_retried_and_reported(tmp_path: Path) -> None:
    venue = await make_venue(tmp_path, transports=("bridge", "cloud"))
    try:
        venue.loqed.add_fault("/bridges/b1/to_lock", "status", status=503, count=1)
        [command] = await unlock_with(venue)
        attempts = await venue.attempts(command.id)
        assert [a.transport for a in attempts] == ["bridge"], "a 5xx may have reached the lock"
        assert venue.received() == []
        assert command.state.value in ("expired", "failed")
        assert command.reason is not None
        kinds = await venue.alert_kinds()
        assert kinds, "an unconfirmed door command must raise an alert"
        note("loqed_5xx", injected=1, outcome=f"{command.state.value}:{command.reason.value}",
             attempts=1, received=0, alerts=sorted(kinds))
    finally:
        await venue.close()


async def test_refused_before_sending_is_retried_on_the_next_transport(tmp_path: Path) -> None:
    venue = await make_venue(tmp_path, transports=("bridge", "cloud"))
    try:
        venue.loqed.add_fault("/bridges/b1/to_lock", "refuse", count=1)
        commands = await unlock_with(venue)
        [command] = commands
        attempts = await venue.attempts(command.id)
        assert [a.outcome for a in attempts] == ["not_sent", "accepted_by_transport"]
        assert [a.transport for a in attempts] == ["bridge", "cloud"]
        received = venue.received()
        assert [(r.action, r.via) for r in received] == [("day_lock", "cloud")]
        assert command.state.value in ("accepted", "confirmed")
        note("loqed_refused_before_write", injected=1, attempts=2, received=1,
             outcome=command.state.value, alerts=sorted(await venue.alert_kinds()))
    finally:
        await venue.close()


async def test_dropped_after_the_request_was_written_is_never_retried(tmp_path: Path) -> None:
    venue = await make_venue(tmp_path, transports=("bridge", "cloud"))
    try:
        venue.loqed.add_fault("/bridges/b1/to_lock", "drop_after", count=1)
        [command] = await unlock_with(venue)
        attempts = await venue.attempts(command.id)
        received = venue.received()
        assert [(a.transport, a.outcome) for a in attempts] == [("bridge", "maybe_delivered")], (
            "a maybe-sent request was retried"
        )
        assert [r.action for r in received] == ["day_lock"], "the lock got it exactly once"
        assert command.state.value == "confirmed", "the lock's events confirm it"
        note("loqed_dropped_after_write", injected=1, attempts=1, received=1,
             outcome=command.state.value, alerts=sorted(await venue.alert_kinds()))
    finally:
        await venue.close()


# --------------------------------------------------------------------------- LOQED: refusals


async def cloud_only(tmp_path: Path, **kwargs: Any) -> Venue:
    return await make_venue(tmp_path, transports=("cloud",), **kwargs)


async def test_cloud_429_fails_rate_limited_with_an_alert_and_no_retry(tmp_path: Path) -> None:
    venue = await cloud_only(tmp_path)
    try:
        venue.loqed.add_fault(f"/api/locks/{venue.loqed_id}/bolt_state", "status", status=429,
                              count=1)
        [command] = await unlock_with(venue)
        attempts = await venue.attempts(command.id)
        assert len(attempts) == 1
        assert venue.received() == []
        assert (command.state.value, command.reason.value) == ("failed", "rate_limited")
        kinds = await venue.alert_kinds()
        assert kinds
        note("loqed_429", injected=1, attempts=1, received=0,
             outcome=f"{command.state.value}:{command.reason.value}", alerts=sorted(kinds))
    finally:
        await venue.close()


async def test_the_12_hour_status_block_is_never_hammered(tmp_path: Path) -> None:
    """The cloud key slot is read from the rate-limited ``GET /api/locks``; when LOQED blocks
    status reads for 12 hours, roomkey still sends every command, reports each one it cannot
    attribute (no confirmation, with an alert) and does not retry the read for 6 hours."""
    from roomkey.sim.loqed.config import StatusLimit

    venue = await cloud_only(tmp_path)
    try:
        limiter = venue.loqed.limiter
        limits = venue.loqed.config.cloud.status_limits
        limits["api_locks"] = StatusLimit(limit=0, window=12 * 3600.0, block=12 * 3600.0)
        reads: list[float] = []
        original = limiter.status_read

        def counting(endpoint: str, caller: str) -> float | None:
            if endpoint == "api_locks":
                reads.append(venue.clock.time())
            return original(endpoint, caller)

        limiter.status_read = counting  # type: ignore[method-assign]
        await booked(venue)
        venue.book("12:00:00")
        venue.book("14:00:00")
        await venue.run()
        await venue.run_until(venue.at("15:30:00"))
        await venue.run(40)
        commands = await venue.commands()
        assert len(commands) == 6, "every command created"
        assert len(venue.received()) == 6, "every command still sent"
        assert len(reads) == 1, f"the blocked read was retried {len(reads)} times in 6 h"
        assert {(c.state.value, c.reason.value if c.reason else None) for c in commands} == {
            ("expired", "no_confirmation")
        }
        kinds = await venue.alert_kinds()
        assert kinds
        note("loqed_12h_status_block", injected=1, commands=6, received=6,
             status_reads_in_6h=len(reads), outcome="expired:no_confirmation (reported)",
             alerts=sorted(kinds))
    finally:
        await venue.close()


async def test_html_login_redirect_fails_unauthorized_with_an_alert(tmp_path: Path) -> None:
    venue = await cloud_only(tmp_path)
    try:
        for token in venue.loqed.tokens:
            token.token = "revoked-" + token.token  # roomkey's token is no longer known
        [command] = await unlock_with(venue)
        assert venue.received() == []
        assert (command.state.value, command.reason.value) == ("failed", "unauthorized")
        kinds = await venue.alert_kinds()
        assert kinds
        note("loqed_html_login_redirect", injected=1, received=0,
             outcome=f"{command.state.value}:{command.reason.value}", alerts=sorted(kinds))
    finally:
        await venue.close()


async def test_revoked_key_is_reported_and_never_opens(venue: Venue) -> None:
    venue.loqed.delete_key(venue.loqed_id, venue.key_local_id)
    [command] = await unlock_with(venue)
    assert venue.received() == [], "a revoked key must never move the lock"
    assert command.state.value in ("failed", "expired")
    assert command.reason is not None
    kinds = await venue.alert_kinds()
    assert kinds
    note("loqed_revoked_key", injected=1, received=0,
         outcome=f"{command.state.value}:{command.reason.value}", alerts=sorted(kinds))


async def test_lock_offline_is_reported_as_offline(venue: Venue) -> None:
    await booked(venue)
    await venue.loqed.set_online(venue.loqed_id, False)
    await venue.run_until(venue.at(UNLOCK_AT))
    await venue.run(40)
    [command] = await venue.commands()
    assert venue.received() == []
    assert command.state.value in ("failed", "expired")
    assert command.reason is not None
    assert command.reason.value == "offline"
    kinds = await venue.alert_kinds()
    assert "lock_offline" in kinds, kinds
    note("loqed_lock_offline", injected=1, received=0,
         outcome=f"{command.state.value}:{command.reason.value}", alerts=sorted(kinds))


async def test_motor_stall_fails_stalled_with_an_alert(venue: Venue) -> None:
    await booked(venue)
    venue.loqed.inject_stall(venue.loqed_id)
    await venue.run_until(venue.at(UNLOCK_AT))
    await venue.run(40)
    [command] = await venue.commands()
    assert [r.action for r in venue.received()] == ["day_lock"]
    assert (command.state.value, command.reason.value) == ("failed", "stalled")
    kinds = await venue.alert_kinds()
    assert any("stall" in k for k in kinds), kinds
    note("loqed_motor_stall", injected=1, received=1,
         outcome=f"{command.state.value}:{command.reason.value}", alerts=sorted(kinds))


async def test_bridge_clock_skew_is_refused_and_reported(venue: Venue) -> None:
    venue.loqed.bridge("b1").clock_skew = 300.0  # five minutes ahead
    [command] = await unlock_with(venue)
    verdicts = [r.verdict.value for r in venue.received(accepted_only=False)]
    assert venue.received() == [], "a command the bridge sees as stale never moves the lock"
    assert verdicts, "the bridge saw no command"
    assert set(verdicts) <= {"stale", "future"}, verdicts
    assert command.state.value in ("failed", "expired")
    assert command.reason is not None
    kinds = await venue.alert_kinds()
    assert kinds
    note("loqed_bridge_clock_skew", injected=1, received=0, verdicts=verdicts,
         outcome=f"{command.state.value}:{command.reason.value}", alerts=sorted(kinds))


@pytest.mark.parametrize("accept", [False, True], ids=["reject", "accept"])
async def test_new_gateway_without_timestamp_follows_the_configured_policy(
    tmp_path: Path, accept: bool
) -> None:
    venue = await make_venue(
        tmp_path, gateway="new",
        extra_loqed=f"accept_missing_timestamp = {'true' if accept else 'false'}",
    )
    try:
        [command] = await unlock_with(venue)
        assert [r.action for r in venue.received()] == ["day_lock"]
        events = await venue.events()
        if accept:
            assert events
            assert command.state.value == "confirmed"
        else:
            assert events == [], "unsigned events stored despite the reject policy"
            assert command.state.value != "confirmed"
            assert command.reason is not None
            assert command.reason.value == "no_confirmation"
        note(f"loqed_new_gateway_no_timestamp_{'accept' if accept else 'reject'}", injected=1,
             received=1, events_stored=len(events),
             outcome=f"{command.state.value}:{command.reason.value if command.reason else ''}",
             alerts=sorted(await venue.alert_kinds()))
    finally:
        await venue.close()


# --------------------------------------------------------------------------- Lockme side


async def processed_once(venue: Venue, rid: int) -> Any:
    """The one message about ``rid``: acked, applied; the booking mirrored and planned."""
    rows = [m for m in await venue.messages() if m.reservation_id == rid]
    assert len(rows) == 1, rows
    [row] = rows
    assert row.state.value == "acked"
    assert row.applied_at is not None
    assert row.acked_at is not None
    assert row.acked_at >= row.applied_at
    [sim_message] = [m for m in venue.lockme.messages() if m.reservationid == rid]
    assert sim_message.read
    mirrored = [r for r in await venue.reservations() if r.id == rid]
    assert len(mirrored) == 1
    assert not mirrored[0].deleted
    kinds = [a.kind.value for a in await venue.door_actions() if rid in a.reservation_ids]
    assert sorted(kinds) == ["lock", "unlock"], kinds
    return row


@pytest.mark.parametrize(
    ("case", "rule"),
    [
        ("lockme_latency", {"kind": "latency", "seconds": 0.3}),
        ("lockme_5xx", {"kind": "error", "status": 500, "count": 2}),
        ("lockme_timeout", {"kind": "timeout", "seconds": 0.05, "count": 2}),
        ("lockme_429", {"kind": "rate_limit", "retry_after": 5, "count": 2}),
    ],
)
async def test_lockme_api_faults_delay_but_never_lose_a_message(
    venue: Venue, case: str, rule: dict[str, Any]
) -> None:
    from roomkey.sim.lockme.faults import FaultRule

    fault = venue.lockme.faults.add(FaultRule(**rule))
    rid = venue.book("10:00:00")
    await venue.run(60)
    row = await processed_once(venue, rid)
    if rule.get("count"):
        assert row.attempts == 1 + rule["count"] or row.attempts >= 2, row.attempts
    note(case, injected=fault.triggered, attempts=row.attempts, outcome="acked after retries"
         if row.attempts > 1 else "acked", lost=0, alerts=sorted(await venue.alert_kinds()))


async def test_lockme_token_expiry_is_refreshed_without_losing_the_message(venue: Venue) -> None:
    store = venue.service.lockme.store
    before = store.load()
    expired = venue.lockme.expire_tokens()
    rid = venue.book("10:00:00")
    await venue.run(30)
    row = await processed_once(venue, rid)
    after = store.load()
    assert after is not None
    assert before is not None
    assert after.access_token != before.access_token, "the token was not refreshed"
    note("lockme_token_expiry", injected=expired, attempts=row.attempts,
         outcome="refreshed, acked", lost=0, alerts=sorted(await venue.alert_kinds()))


async def test_dropped_webhook_deliveries_are_healed_by_redelivery(venue: Venue) -> None:
    from roomkey.sim.lockme.faults import FaultRule

    venue.lockme.faults.add(FaultRule("drop_webhook", count=1))
    rid = venue.book("10:00:00")
    await venue.run(1)
    assert await venue.messages() == [], "the first delivery was dropped"
    await venue.run(65, step=5)
    row = await processed_once(venue, rid)
    [message] = venue.lockme.messages()
    note("lockme_dropped_delivery", injected=1, deliveries=len(message.attempts),
         attempts=row.attempts, outcome="redelivered at +60 s, acked", lost=0)


async def test_a_redelivery_storm_changes_nothing(venue: Venue) -> None:
    rid = venue.book("10:00:00")
    await venue.run(5)
    await processed_once(venue, rid)
    before = [(a.key, a.version, a.planned_at) for a in await venue.door_actions()]
    [message] = venue.lockme.messages()
    client = venue.roomkey_client()
    storm = 60
    answers = []
    for i in range(storm):
        method = "POST" if i % 2 else "GET"
        response = await client.request(
            method, f"/hooks/lockme/{'fault-suite-hook-secret'}",
            headers={"X-MessageId": str(message.id)},
        )
        answers.append(response.status_code)
        if i % 10 == 0:
            await venue.run()
    await venue.run(5)
    assert set(answers) == {200}, answers
    row = await processed_once(venue, rid)
    assert row.attempts == 1, "a redelivered message was processed again"
    after = [(a.key, a.version, a.planned_at) for a in await venue.door_actions()]
    assert after == before, "a redelivery changed the plan"
    note("lockme_redelivery_storm", injected=storm, answered_200=answers.count(200),
         attempts=row.attempts, plan_changes=0, outcome="dropped as duplicates")


async def test_a_receiver_outage_beyond_24_hours_is_healed_by_reconciliation(
    venue: Venue,
) -> None:
    from roomkey.service.planner import BookingInput, plan_room

    venue.receiver.down = True
    day2 = "2027-03-02"
    ids = [
        venue.lockme.book(venue.room, day2, "18:00:00", source="panel", status=1),
        venue.lockme.book(venue.room, "2027-03-03", "10:00:00", source="panel", status=1),
        venue.lockme.book(venue.room, day2, "20:00:00", source="panel", status=0),
    ]
    await venue.run(25 * 3600, step=1800)
    sim_messages = venue.lockme.messages()
    assert all(not m.read for m in sim_messages)
    last_attempts = [m.attempts[-1].at for m in sim_messages if m.attempts]
    venue.receiver.down = False
    await venue.run(3600, step=600)
    assert await venue.messages() == [], "Lockme gave up after 24 h: nothing was delivered"
    report = await venue.service.reconcile()
    await venue.run()
    mirrored = {r.id: r for r in await venue.reservations()}
    assert set(ids) <= set(mirrored)
    from roomkey.service.policy import DoorPolicy

    policy = DoorPolicy(max_lateness_minutes=15)
    want = plan_room(
        venue.room,
        [
            BookingInput(reservation_id=str(r.id), room_id=r.roomid, date=r.date, hour=r.hour,
                         duration_minutes=r.duration, status=bool(r.status), source=r.source)
            for r in venue.lockme.reservations.values()
        ],
        policy, ["door-1"], now=venue.clock.now(),
    )
    have = sorted(
        (a.key, a.planned_at.replace(tzinfo=None) if a.planned_at.tzinfo is None
         else a.planned_at.astimezone(tz=None).replace(tzinfo=None))
        for a in await venue.door_actions() if a.status.value == "planned"
    )
    want_keys = sorted(a.key for a in want.actions)
    assert [k for k, _ in have] == want_keys
    note("lockme_outage_over_24h", injected=1, refused_deliveries=venue.receiver.refused,
         last_delivery_attempt_h=round((max(last_attempts) - sim_messages[0].created) / 3600, 1)
         if last_attempts else None,
         healed_reservations=len(ids), planned_actions=len(want_keys),
         outcome=f"reconciliation added {len(report.added)}")


async def test_an_older_message_redelivered_late_does_not_undo_a_newer_one(venue: Venue) -> None:
    """Lockme delivers each message on its own schedule: a dropped delivery of an older edit
    is redelivered after a newer edit of the same booking was applied (and, in the crash
    suite, a message held by a killed process is retried after its claim lease, after newer
    ones). The older snapshot must not overwrite the newer one: the door would move at the
    booking's old time."""
    from roomkey.sim.lockme.faults import FaultRule

    rid = venue.book("10:00:00")
    await venue.run(2)
    venue.lockme.faults.add(FaultRule("drop_webhook", count=1))
    venue.lockme.move(rid, roomid=venue.room, date="2027-03-01", hour="12:00:00")  # dropped
    await venue.run(2)
    venue.lockme.move(rid, roomid=venue.room, date="2027-03-01", hour="14:00:00")
    await venue.run(2)
    await venue.run(65, step=5)  # the 12:00 edit is redelivered now, after the 14:00 one
    messages = await venue.messages()
    assert len(messages) == 3
    assert all(m.state.value == "acked" for m in messages)
    [row] = [r for r in await venue.reservations() if r.id == rid]
    planned = sorted(
        (a.kind.value, a.planned_at.strftime("%H:%M"))
        for a in await venue.door_actions() if a.status.value == "planned"
    )
    note("lockme_out_of_order_redelivery", injected=1, messages=3,
         mirror_hour=row.hour.strftime("%H:%M:%S"), lockme_hour="14:00:00",
         outcome="newest kept" if row.hour.strftime("%H:%M:%S") == "14:00:00"
         else "OLDER SNAPSHOT APPLIED LAST (bug)")
    assert row.hour.strftime("%H:%M:%S") == "14:00:00", (
        f"the mirror went back to {row.hour} after a late redelivery of an older edit; "
        f"the door plan is now {planned}"
    )
