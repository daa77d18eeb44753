"""Lay a room's timeline out for drawing: positions in percent of the shown range.

Four lanes per room — bookings, planned door windows with their actions, commands (with their
lifecycle state) and lock events — share one time axis, so a planned unlock without a
confirmed command under it stands out at a glance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from .schemas import RoomTimeline

__all__ = ["Bar", "Mark", "Tick", "TimelineView", "layout"]


@dataclass(frozen=True)
class Bar:
    left: float
    width: float
    label: str
    css: str
    title: str


@dataclass(frozen=True)
class Mark:
    left: float
    label: str
    css: str
    title: str


@dataclass(frozen=True)
class Tick:
    left: float
    label: str


@dataclass(frozen=True)
class TimelineView:
    room_id: int
    room_name: str
    timezone: str
    locks: list[str]
    ticks: list[Tick]
    now: float | None
    bookings: list[Bar]
    windows: list[Bar]
    actions: list[Mark]
    commands: list[Bar]
    events: list[Mark]
    gaps: int
    """Planned actions that are due but have no confirmed command (plan vs reality)."""


def _clamp(value: float) -> float:
    return max(0.0, min(100.0, value))


def layout(tl: RoomTimeline, *, now: datetime) -> TimelineView:
    tz = ZoneInfo(tl.room.timezone)
    span = (tl.end - tl.start).total_seconds() or 1.0

    def pos(moment: datetime) -> float:
        return _clamp((moment - tl.start).total_seconds() / span * 100.0)

    def hm(moment: datetime) -> str:
        return moment.astimezone(tz).strftime("%H:%M")

    def bar(start: datetime, end: datetime, label: str, css: str, title: str) -> Bar:
        left = pos(start)
        return Bar(left, max(0.4, pos(end) - left), label, css, title)

    ticks: list[Tick] = []
    local = tl.start.astimezone(tz).replace(minute=0, second=0, microsecond=0)
    hours = span / 3600
    step = timedelta(hours=1 if hours <= 12 else 2 if hours <= 26 else 6 if hours <= 50 else 24)
    t = local
    while t < tl.end:
        if t >= tl.start:
            label = t.strftime("%a %d %H:%M") if t.hour == 0 else t.strftime("%H:%M")
            ticks.append(Tick(pos(t), label))
        t = (t + step).astimezone(tz)

    bookings = [
        bar(
            b.start_at,
            b.end_at,
            f"#{b.id}",
            "booking paid" if b.paid else "booking unpaid",
            f"booking {b.id} {hm(b.start_at)}–{hm(b.end_at)} {'paid' if b.paid else 'unpaid'}",
        )
        for b in tl.bookings
    ]
    windows = [
        bar(
            w.start_at,
            w.end_at,
            "",
            "window",
            f"door window for #{w.reservation_id}: {hm(w.start_at)}–{hm(w.end_at)}",
        )
        for w in tl.windows
    ]
    confirmed = {c.id for c in tl.commands if c.state == "confirmed"}
    gaps = 0
    actions: list[Mark] = []
    for a in tl.actions:
        css = f"action {a.kind} status-{a.status}"
        if a.planned_at <= now and a.status in {"planned", "failed", "skipped"}:
            css += " gap"
            gaps += 1
        elif a.status == "done" and a.command_id and a.command_id not in confirmed:
            css += " unconfirmed"
        actions.append(
            Mark(
                pos(a.planned_at),
                a.kind.replace("_", " "),
                css,
                f"{a.kind} {a.lock_id} at {hm(a.planned_at)}: {a.status}"
                + (f" ({a.reason})" if a.reason else ""),
            )
        )
    commands: list[Bar] = []
    for c in tl.commands:
        end = c.confirmed_at or c.finished_at or c.accepted_at or c.sent_at or c.created_at
        commands.append(
            bar(
                c.created_at,
                max(end, c.created_at + timedelta(seconds=span / 400)),
                c.action.replace("_", " "),
                f"command state-{c.state} origin-{c.origin}",
                f"{c.origin} {c.action} → {c.lock_id}: {c.state}"
                + (f" ({c.reason})" if c.reason else "")
                + f", created {hm(c.created_at)}"
                + (f", confirmed {hm(c.confirmed_at)}" if c.confirmed_at else ""),
            )
        )
    events = [
        Mark(
            pos(e.received_at),
            e.bolt_state or e.kind,
            f"event kind-{e.kind}",
            f"{e.lock_id}: {e.event_type or e.kind}"
            + (f" → {e.bolt_state}" if e.bolt_state else "")
            + f" at {hm(e.received_at)}",
        )
        for e in tl.events
    ]
    now_pos = pos(now) if tl.start <= now < tl.end else None
    return TimelineView(
        room_id=tl.room.id,
        room_name=tl.room.name,
        timezone=tl.room.timezone,
        locks=tl.room.locks,
        ticks=ticks,
        now=now_pos,
        bookings=bookings,
        windows=windows,
        actions=actions,
        commands=commands,
        events=events,
        gaps=gaps,
    )
