"""Read-only queries behind the pages and the JSON API (over the service's tables).

Every function takes an open session and returns :mod:`roomkey.web.schemas` models.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roomkey.service.db.models import (
    Alert,
    Command,
    DoorAction,
    DoorWindow,
    Lock,
    LockEvent,
    LockmeMessage,
    Reservation,
    Room,
    RoomLock,
)

from .models import RoomOverride, WebhookAttempt, WebhookDelivery
from .schemas import (
    AlertOut,
    BatteryPoint,
    BookingOut,
    CommandOut,
    DeliveryAttemptOut,
    DeliveryOut,
    DoorActionOut,
    EventOut,
    LockCard,
    LockEventOut,
    RoomOut,
    RoomTimeline,
    WindowOut,
)

__all__ = [
    "EVENT_PII_KEYS",
    "EventFilter",
    "alert_out",
    "command_out",
    "events_csv",
    "get_room",
    "list_alerts",
    "list_deliveries",
    "list_event_log",
    "list_lock_cards",
    "list_rooms",
    "lock_event_out",
    "room_timeline",
]

EVENT_PII_KEYS = ("key_account_email", "key_name_user", "key_name_admin", "user_email", "email")
"""LOQED payload fields shown in the event log only when the operator keeps PII."""
BATTERY_POINTS = 48


def _room_out(room: Room, locks: list[str], overridden: bool) -> RoomOut:
    return RoomOut(
        id=room.id,
        name=room.name,
        timezone=room.timezone,
        locks=sorted(locks),
        policy=dict(room.policy or {}),
        overridden=overridden,
    )


async def _links(session: AsyncSession) -> dict[int, list[str]]:
    links: dict[int, list[str]] = {}
    for room_id, lock_id in await session.execute(select(RoomLock.room_id, RoomLock.lock_id)):
        links.setdefault(room_id, []).append(lock_id)
    return links


async def list_rooms(session: AsyncSession) -> list[RoomOut]:
    """Active rooms with their locks and effective policy, by name."""
    links = await _links(session)
    overridden = set((await session.execute(select(RoomOverride.room_id))).scalars())
    rows = (
        await session.execute(select(Room).where(Room.active.is_(True)).order_by(Room.name))
    ).scalars()
    return [_room_out(room, links.get(room.id, []), room.id in overridden) for room in rows]


async def get_room(session: AsyncSession, room_id: int) -> RoomOut | None:
    room = await session.get(Room, room_id)
    if room is None or not room.active:
        return None
    links = await _links(session)
    overridden = await session.get(RoomOverride, room_id) is not None
    return _room_out(room, links.get(room_id, []), overridden)


def command_out(row: Command) -> CommandOut:
    return CommandOut(
        id=row.id,
        lock_id=row.lock_id,
        action=row.action.value,
        state=row.state.value,
        reason=row.reason.value if row.reason else None,
        origin=row.origin.value,
        actor=row.actor,
        created_at=row.created_at,
        sent_at=row.sent_at,
        accepted_at=row.accepted_at,
        confirmed_at=row.confirmed_at,
        finished_at=row.finished_at,
        door_action_key=row.door_action_key,
    )


def lock_event_out(row: LockEvent) -> LockEventOut:
    return LockEventOut(
        id=row.id,
        lock_id=row.lock_id,
        kind=row.kind,
        event_type=row.event_type,
        bolt_state=row.bolt_state,
        received_at=row.received_at,
        command_id=row.command_id,
        reservation_id=row.reservation_id,
    )


def alert_out(row: Alert) -> AlertOut:
    return AlertOut(
        id=row.id,
        kind=row.kind,
        lock_id=row.lock_id,
        room_id=row.room_id,
        message=row.message,
        count=row.count,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
    )


async def room_timeline(
    session: AsyncSession, room: RoomOut, *, start: datetime, end: datetime
) -> RoomTimeline:
    """Bookings, planned windows and door actions, commands and lock events of one room
    overlapping ``[start, end)``."""
    bookings = (
        await session.execute(
            select(Reservation)
            .where(
                Reservation.room_id == room.id,
                Reservation.deleted.is_(False),
                Reservation.end_at > start,
                Reservation.start_at < end,
            )
            .order_by(Reservation.start_at)
        )
    ).scalars()
    windows = (
        await session.execute(
            select(DoorWindow)
            .where(DoorWindow.room_id == room.id, DoorWindow.end_at > start)
            .where(DoorWindow.start_at < end)
            .order_by(DoorWindow.start_at)
        )
    ).scalars()
    actions = (
        await session.execute(
            select(DoorAction)
            .where(
                DoorAction.room_id == room.id,
                DoorAction.planned_at >= start,
                DoorAction.planned_at < end,
            )
            .order_by(DoorAction.planned_at, DoorAction.key)
        )
    ).scalars()
    commands: list[Command] = []
    events: list[LockEvent] = []
    if room.locks:
        commands = list(
            (
                await session.execute(
                    select(Command)
                    .where(
                        Command.lock_id.in_(room.locks),
                        Command.created_at >= start,
                        Command.created_at < end,
                    )
                    .order_by(Command.created_at)
                    .limit(500)
                )
            ).scalars()
        )
        events = list(
            (
                await session.execute(
                    select(LockEvent)
                    .where(
                        LockEvent.lock_id.in_(room.locks),
                        LockEvent.received_at >= start,
                        LockEvent.received_at < end,
                    )
                    .order_by(LockEvent.received_at)
                    .limit(500)
                )
            ).scalars()
        )
    return RoomTimeline(
        room=room,
        start=start,
        end=end,
        bookings=[
            BookingOut(
                id=b.id,
                room_id=b.room_id,
                start_at=b.start_at,
                end_at=b.end_at,
                paid=bool(b.status),
                deleted=b.deleted,
            )
            for b in bookings
        ],
        windows=[
            WindowOut(reservation_id=w.reservation_id, start_at=w.start_at, end_at=w.end_at)
            for w in windows
        ],
        actions=[
            DoorActionOut(
                key=a.key,
                lock_id=a.lock_id,
                kind=a.kind.value,
                planned_at=a.planned_at,
                status=a.status.value,
                reason=a.reason,
                command_id=a.command_id,
                reservation_ids=[int(r) for r in (a.reservation_ids or [])],
            )
            for a in actions
        ],
        commands=[command_out(c) for c in commands],
        events=[lock_event_out(e) for e in events],
    )


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


async def list_alerts(
    session: AsyncSession, *, open_only: bool = True, limit: int = 200
) -> list[AlertOut]:
    stmt = select(Alert).order_by(Alert.created_at.desc(), Alert.id.desc())
    if open_only:
        stmt = stmt.where(Alert.acknowledged_at.is_(None))
    return [alert_out(a) for a in (await session.execute(stmt.limit(limit))).scalars()]


async def list_lock_cards(session: AsyncSession, *, lock_id: str | None = None) -> list[LockCard]:
    """A card per active lock: live state, battery trend, last event, open alerts."""
    stmt = select(Lock).where(Lock.active.is_(True)).order_by(Lock.name, Lock.id)
    if lock_id is not None:
        stmt = stmt.where(Lock.id == lock_id)
    locks = list((await session.execute(stmt)).scalars())
    rooms_of: dict[str, list[int]] = {}
    for room_id, lid in await session.execute(select(RoomLock.room_id, RoomLock.lock_id)):
        rooms_of.setdefault(lid, []).append(room_id)
    alerts = await list_alerts(session, open_only=True, limit=500)
    cards: list[LockCard] = []
    for lock in locks:
        last = (
            await session.execute(
                select(LockEvent)
                .where(LockEvent.lock_id == lock.id)
                .order_by(LockEvent.received_at.desc(), LockEvent.id.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        battery_rows = (
            await session.execute(
                select(LockEvent.received_at, LockEvent.raw)
                .where(LockEvent.lock_id == lock.id, LockEvent.kind == "battery")
                .order_by(LockEvent.received_at.desc(), LockEvent.id.desc())
                .limit(BATTERY_POINTS)
            )
        ).all()
        trend: list[BatteryPoint] = []
        for at, raw in reversed(battery_rows):
            pct = _as_int(raw.get("battery_percentage")) if isinstance(raw, dict) else None
            if pct is not None and 0 <= pct <= 100:
                trend.append(BatteryPoint(at=at, percentage=pct))
        cards.append(
            LockCard(
                id=lock.id,
                name=lock.name,
                rooms=sorted(rooms_of.get(lock.id, [])),
                bolt_state=lock.bolt_state,
                online=lock.online,
                battery_percentage=lock.battery_percentage,
                battery_type=lock.battery_type,
                ble_strength=lock.ble_strength,
                wifi_strength=lock.wifi_strength,
                last_event_at=lock.last_event_at,
                last_event=lock_event_out(last) if last is not None else None,
                battery_trend=trend,
                open_alerts=[a for a in alerts if a.lock_id == lock.id],
            )
        )
    return cards


# --------------------------------------------------------------------------- event log


@dataclass(frozen=True)
class EventFilter:
    """Event-log filters; None means "any"."""

    room_id: int | None = None
    lock_id: str | None = None
    reservation_id: int | None = None
    types: frozenset[str] = frozenset({"lockme", "loqed", "command"})
    start: datetime | None = None
    end: datetime | None = None
    limit: int = 200


def _lockme_summary(row: LockmeMessage) -> str:
    raw = row.raw if isinstance(row.raw, dict) else {}
    data = raw.get("data") if isinstance(raw.get("data"), dict) else raw
    when = ""
    if isinstance(data, dict) and data.get("date"):
        when = f" for {str(data.get('date'))[:10]} {str(data.get('hour') or '')[:8]}".rstrip()
    action = row.action or "message"
    return f"Lockme {action}{when}"


def _loqed_detail(row: LockEvent, keep_pii: bool) -> str | None:
    parts: list[str] = []
    if row.key_local_id is not None:
        parts.append(f"key #{row.key_local_id}")
    raw = row.raw if isinstance(row.raw, dict) else {}
    if row.kind == "battery" and raw.get("battery_percentage") is not None:
        parts.append(f"battery {raw.get('battery_percentage')}%")
    if keep_pii:
        for key in EVENT_PII_KEYS:
            value = raw.get(key)
            if isinstance(value, str) and value:
                parts.append(f"{key}={value[:120]}")
    return ", ".join(parts) or None


async def _room_locks(session: AsyncSession, room_id: int) -> list[str]:
    rows = await session.execute(select(RoomLock.lock_id).where(RoomLock.room_id == room_id))
    return list(rows.scalars())


async def list_event_log(
    session: AsyncSession, flt: EventFilter, *, keep_pii: bool = False
) -> list[EventOut]:
    """Lockme messages, LOQED events and commands matching ``flt``, newest first."""
    out: list[EventOut] = []
    limit = max(1, min(flt.limit, 5000))
    room_locks: list[str] | None = None
    if flt.room_id is not None:
        room_locks = await _room_locks(session, flt.room_id)

    if "lockme" in flt.types and flt.lock_id is None:
        stmt = select(LockmeMessage).order_by(LockmeMessage.received_at.desc())
        if flt.room_id is not None:
            stmt = stmt.where(LockmeMessage.room_id == flt.room_id)
        if flt.reservation_id is not None:
            stmt = stmt.where(LockmeMessage.reservation_id == flt.reservation_id)
        if flt.start is not None:
            stmt = stmt.where(LockmeMessage.received_at >= flt.start)
        if flt.end is not None:
            stmt = stmt.where(LockmeMessage.received_at < flt.end)
        for m in (await session.execute(stmt.limit(limit))).scalars():
            out.append(
                EventOut(
                    type="lockme",
                    at=m.received_at,
                    id=m.message_id,
                    room_id=m.room_id,
                    lock_id=None,
                    reservation_id=m.reservation_id,
                    summary=_lockme_summary(m),
                    state=m.state.value,
                    detail=(m.last_error or "")[:200] or None,
                )
            )

    rooms_of: dict[str, list[int]] = {}
    for rid, lid in await session.execute(select(RoomLock.room_id, RoomLock.lock_id)):
        rooms_of.setdefault(lid, []).append(rid)

    def room_of(lock_id: str | None) -> int | None:
        if flt.room_id is not None:
            return flt.room_id
        rooms = rooms_of.get(lock_id or "", [])
        return rooms[0] if len(rooms) == 1 else None

    if "loqed" in flt.types:
        ev = select(LockEvent).order_by(LockEvent.received_at.desc(), LockEvent.id.desc())
        if flt.lock_id is not None:
            ev = ev.where(LockEvent.lock_id == flt.lock_id)
        if room_locks is not None:
            ev = ev.where(LockEvent.lock_id.in_(room_locks))
        if flt.reservation_id is not None:
            ev = ev.where(LockEvent.reservation_id == flt.reservation_id)
        if flt.start is not None:
            ev = ev.where(LockEvent.received_at >= flt.start)
        if flt.end is not None:
            ev = ev.where(LockEvent.received_at < flt.end)
        for e in (await session.execute(ev.limit(limit))).scalars():
            state = f" → {e.bolt_state}" if e.bolt_state else ""
            out.append(
                EventOut(
                    type="loqed",
                    at=e.received_at,
                    id=str(e.id),
                    room_id=room_of(e.lock_id),
                    lock_id=e.lock_id,
                    reservation_id=e.reservation_id,
                    summary=f"{e.source.value} {e.event_type or e.kind}{state}",
                    state=e.kind,
                    detail=_loqed_detail(e, keep_pii),
                )
            )

    if "command" in flt.types:
        cmd = select(Command).order_by(Command.created_at.desc(), Command.id)
        if flt.lock_id is not None:
            cmd = cmd.where(Command.lock_id == flt.lock_id)
        if room_locks is not None:
            cmd = cmd.where(Command.lock_id.in_(room_locks))
        if flt.reservation_id is not None:
            keys = await _action_keys_for(session, flt.reservation_id)
            cmd = cmd.where(Command.door_action_key.in_(keys))
        if flt.start is not None:
            cmd = cmd.where(Command.created_at >= flt.start)
        if flt.end is not None:
            cmd = cmd.where(Command.created_at < flt.end)
        commands = list((await session.execute(cmd.limit(limit))).scalars())
        plan: dict[str, tuple[int | None, list[int]]] = {}
        keys = sorted({c.door_action_key for c in commands if c.door_action_key})
        if keys:
            found = await session.execute(
                select(DoorAction.key, DoorAction.room_id, DoorAction.reservation_ids).where(
                    DoorAction.key.in_(keys)
                )
            )
            for key, action_room, ids in found.all():
                plan[key] = (action_room, [i for i in map(_as_int, ids or []) if i is not None])
        for c in commands:
            who = f" by {c.actor}" if c.actor else ""
            cmd_room, booking_ids = plan.get(c.door_action_key or "", (room_of(c.lock_id), []))
            booking = flt.reservation_id or (booking_ids[0] if booking_ids else None)
            out.append(
                EventOut(
                    type="command",
                    at=c.created_at,
                    id=c.id,
                    room_id=flt.room_id or cmd_room,
                    lock_id=c.lock_id,
                    reservation_id=booking,
                    summary=f"{c.origin.value} {c.action.value}{who}",
                    state=c.state.value,
                    detail=c.reason.value if c.reason else None,
                )
            )
    out.sort(key=lambda e: (e.at, e.type, e.id), reverse=True)
    return out[:limit]


async def _action_keys_for(session: AsyncSession, reservation_id: int) -> list[str]:
    reservation = await session.get(Reservation, reservation_id)
    if reservation is None:
        return []
    rows = await session.execute(
        select(DoorAction.key, DoorAction.reservation_ids).where(
            DoorAction.room_id == reservation.room_id
        )
    )
    return [
        key for key, ids in rows.all() if any(_as_int(i) == reservation_id for i in (ids or []))
    ]


CSV_COLUMNS = (
    "at",
    "type",
    "id",
    "room_id",
    "lock_id",
    "reservation_id",
    "summary",
    "state",
    "detail",
)


def _csv_cell(value: object) -> str:
    text = "" if value is None else str(value)
    # Spreadsheet formula injection: never start a cell with = + - @ (or tab/CR).
    if text and text[0] in "=+-@\t\r":
        text = "'" + text
    return text


def events_csv(events: Iterable[EventOut]) -> str:
    """The event log as CSV (UTC ISO times)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for e in events:
        writer.writerow(
            [
                e.at.isoformat(),
                e.type,
                _csv_cell(e.id),
                _csv_cell(e.room_id),
                _csv_cell(e.lock_id),
                _csv_cell(e.reservation_id),
                _csv_cell(e.summary),
                _csv_cell(e.state),
                _csv_cell(e.detail),
            ]
        )
    return buffer.getvalue()


# --------------------------------------------------------------------------- deliveries


async def list_deliveries(
    session: AsyncSession, *, limit: int = 100, with_attempts: bool = True
) -> list[DeliveryOut]:
    rows = list(
        (
            await session.execute(
                select(WebhookDelivery)
                .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
                .limit(limit)
            )
        ).scalars()
    )
    attempts: dict[int, list[DeliveryAttemptOut]] = {}
    if with_attempts and rows:
        for a in (
            await session.execute(
                select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id.in_([r.id for r in rows]))
                .order_by(WebhookAttempt.at, WebhookAttempt.id)
            )
        ).scalars():
            attempts.setdefault(a.delivery_id, []).append(
                DeliveryAttemptOut(
                    at=a.at, status_code=a.status_code, error=a.error, duration_ms=a.duration_ms
                )
            )
    return [
        DeliveryOut(
            id=r.id,
            endpoint_id=r.endpoint_id,
            message_id=r.message_id,
            event_type=r.event_type,
            state=r.state,
            attempts=r.attempts,
            next_attempt_at=r.next_attempt_at,
            last_attempt_at=r.last_attempt_at,
            last_status=r.last_status,
            last_error=r.last_error,
            created_at=r.created_at,
            finished_at=r.finished_at,
            attempt_log=attempts.get(r.id, []),
        )
        for r in rows
    ]
