"""Alerts: the pure rules, and lock alerts raised and resolved from the simulator's events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine
from test_executor_harness import LOCK, LOQED_ID, World, make_world

from roomkey.loqed import BoltState, parse_event
from roomkey.service.alerts import AlertKind, lock_alert_changes
from roomkey.service.crypto import SecretBox
from roomkey.service.lock_state import LockSnapshot, apply_event

STALL = parse_event({"event_type": "MOTOR_STALL", "requested_state": "UNKNOWN"})
LATCHED = parse_event({"event_type": "STATE_CHANGED_LATCH", "requested_state": "DAY_LOCK"})
OFFLINE = parse_event({"wifi_strength": 60, "ble_strength": -1})
ONLINE = parse_event({"wifi_strength": 60, "ble_strength": 55})


def _battery(pct: int) -> object:
    return parse_event({"battery_type": "LITHIUM", "battery_percentage": pct})


def _changes(before: LockSnapshot, event: object) -> list[tuple[AlertKind, bool]]:
    from roomkey.loqed import LockEvent

    assert isinstance(event, LockEvent)
    after = apply_event(before, event)
    return [(c.kind, c.resolve) for c in lock_alert_changes(before, after, event)]


def test_stall_opens_and_a_reached_state_resolves() -> None:
    stalled = apply_event(LockSnapshot(bolt_state=BoltState.NIGHT_LOCK), STALL)
    assert stalled.bolt_state is BoltState.UNKNOWN
    assert _changes(LockSnapshot(bolt_state=BoltState.NIGHT_LOCK), STALL) == [
        (AlertKind.MOTOR_STALL, False)
    ]
    assert _changes(stalled, LATCHED) == [(AlertKind.MOTOR_STALL, True)]


def test_offline_opens_once_and_resolves_when_back_or_moving() -> None:
    assert _changes(LockSnapshot(online=True), OFFLINE) == [(AlertKind.LOCK_OFFLINE, False)]
    assert _changes(LockSnapshot(online=False), OFFLINE) == []
    assert _changes(LockSnapshot(online=False), ONLINE) == [(AlertKind.LOCK_OFFLINE, True)]
    # A lock that moves is evidently online again.
    assert (AlertKind.LOCK_OFFLINE, True) in _changes(LockSnapshot(online=False), LATCHED)


@given(before=st.integers(0, 100), pct=st.integers(0, 100))
def test_low_battery_has_hysteresis(before: int, pct: int) -> None:
    changes = _changes(LockSnapshot(battery_percentage=before), _battery(pct))
    if pct < 20:
        assert changes == [(AlertKind.LOW_BATTERY, False)]
    elif pct >= 25:
        assert changes == [(AlertKind.LOW_BATTERY, True)]
    else:  # 20-24: neither opens nor resolves (no flapping around the threshold)
        assert changes == []


@pytest.fixture
async def world(engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path) -> AsyncIterator[World]:
    w = await make_world(engine, secret_box, tmp_path, cloud_webhook=True)
    try:
        yield w
    finally:
        await w.close()


async def test_lock_offline_raises_an_alert_resolved_when_it_returns(world: World) -> None:
    await world.sim.set_online(LOQED_ID, False)
    await world.advance(2)
    lock = await world.lock_row()
    assert lock.online is False
    (alert,) = await world.alerts()
    assert (alert.kind, alert.lock_id) == ("lock_offline", LOCK)
    await world.sim.set_online(LOQED_ID, False)  # reported again: still one open alert
    await world.advance(15)
    assert len(await world.alerts()) == 1
    await world.sim.set_online(LOQED_ID, True, ble_strength=50)
    await world.advance(2)
    assert (await world.lock_row()).online is True
    assert await world.alerts() == []
    (closed,) = await world.alerts(open_only=False)
    assert closed.acknowledged_by == "roomkey"


async def test_low_battery_raises_an_alert_resolved_after_a_battery_change(world: World) -> None:
    await world.sim.battery_report(LOQED_ID, percentage=12)
    await world.advance(2)
    assert (await world.lock_row()).battery_percentage == 12
    (alert,) = await world.alerts()
    assert alert.kind == "low_battery"
    assert "12%" in alert.message
    await world.sim.battery_report(LOQED_ID, percentage=100)
    await world.advance(2)
    assert (await world.lock_row()).battery_percentage == 100
    assert await world.alerts() == []


async def test_a_confirmed_command_resolves_earlier_command_alerts(world: World) -> None:
    from roomkey.service.db.models import DoorActionKind

    world.sim.app.faults.add("/bridges/b1/to_lock", "refuse", count=1)
    world.sim.app.faults.add("/api/locks", "refuse")
    await world.plan((DoorActionKind.UNLOCK, 0.0), (DoorActionKind.LOCK, 60.0))
    await world.executor.run_once()
    (alert,) = await world.alerts()
    assert alert.kind == "command_failed"
    world.sim.app.faults.clear()
    await world.advance(61)
    await world.executor.run_once()
    await world.advance(12)
    assert await world.alerts() == []
