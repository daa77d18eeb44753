"""``roomkey demo``: the whole system on one machine, at time warp, narrated live.

What runs, all in one process and on loopback sockets, sharing ONE warped
:class:`~roomkey.sim.clock.SimClock`:

* the **Lockme simulator** (demo venue "Escape Warsaw": three rooms, OAuth client, pricers)
  with its booking **traffic generator** and a small "same-day" feeder that books slots later
  today, so doors really move during the demo;
* the **LOQED simulator**: one bridge and one lock per room, with a key for roomkey and the
  bridge webhooks pointed at roomkey;
* **roomkey itself** exactly as ``roomkey serve`` runs it: :func:`create_app` under uvicorn on
  127.0.0.1, the embedded SQLite database (migrated at start), a generated
  ``ROOMKEY_SECRET_KEY`` if none is set, the Lockme OAuth token in its (encrypted) token file.

Bookings reach roomkey as Lockme webhooks over HTTP; roomkey fetches them with the Lockme
SDK, plans door actions, sends signed commands to the bridge, and the lock confirms each move
with signed ``GO_TO_STATE`` / ``STATE_CHANGED`` webhooks. The narrator reads roomkey's own
database (what roomkey recorded, not what the simulators say) and prints one line per step in
venue-local (simulated) time. At the end — Ctrl-C or ``--for`` real seconds — a summary.

The pieces (:class:`LoopbackServer`, :func:`add_sim_lock`, :func:`config_toml`) are reused by
the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import random
import signal
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import uvicorn
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from roomkey.lockme import Token
from roomkey.service.config import Config, parse_config
from roomkey.service.crypto import SECRET_KEY_ENV, SecretBox, generate_key
from roomkey.service.db.models import (
    Command,
    CommandOrigin,
    CommandState,
    DoorAction,
    DoorActionStatus,
    LockEvent,
    LockmeMessage,
    MessageState,
    Reservation,
)
from roomkey.sim.clock import SimClock

__all__ = [
    "DemoOptions",
    "DemoSummary",
    "LoopbackServer",
    "SimLockSpec",
    "add_sim_lock",
    "config_toml",
    "dashboard_address",
    "run_demo",
    "run_demo_async",
]

log = logging.getLogger(__name__)

VENUE_TZ = ZoneInfo("Europe/Warsaw")
DEMO_DAY_START = dt.time(9, 47)
"""Simulated time the demo starts at (venue-local, today): doors unlock for 10:00 at 09:50."""
WEBHOOK_SECRET = "demo-hook"  # noqa: S105 - a throwaway secret for a local demo


# --------------------------------------------------------------------------- loopback servers


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host (several run in one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class LoopbackServer:
    """Serve an ASGI app with uvicorn on 127.0.0.1 inside the running event loop.

    ``port=0`` picks a free port (read :attr:`url` after :meth:`start`). Start and stop are
    bounded; ``lifespan="on"`` runs the app's lifespan (roomkey's app starts its workers).
    """

    def __init__(
        self, app: Any, *, host: str = "127.0.0.1", port: int = 0, lifespan: str = "off"
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server = _QuietServer(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                lifespan=lifespan,  # type: ignore[arg-type]
                log_config=None,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=2,
            )
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, *, wait: float = 20.0) -> None:
        self._task = asyncio.create_task(self._server.serve(), name=f"loopback-{self.port}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("server stopped while starting (port in use?)")
            if loop.time() > deadline:
                raise TimeoutError("server did not start in time")
            await asyncio.sleep(0.01)
        for server in self._server.servers:
            for sock in server.sockets:
                self.port = int(sock.getsockname()[1])

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=15)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._task = None

    async def __aenter__(self) -> LoopbackServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# --------------------------------------------------------------------------- world building


@dataclass(frozen=True)
class SimLockSpec:
    """A simulated lock as roomkey's config names it (secrets hidden from repr)."""

    roomkey_id: str
    name: str
    loqed_id: str
    bridge_id: str
    bridge_url: str
    local_key_id: int
    key_secret: str = field(repr=False)
    bridge_key: str = field(repr=False)


def add_sim_lock(
    sim: Any, *, roomkey_id: str, name: str, bridge_id: str, loqed_url: str, local_key_id: int = 1
) -> SimLockSpec:
    """Give ``sim`` (a LoqedSimulator) a bridge with one lock and a key for roomkey."""
    bridge = sim.add_bridge(bridge_id)
    lock = sim.add_lock(bridge_id, name=name)
    key = sim.add_key(lock.lock_id, local_id=local_key_id, name="roomkey", account_name="roomkey")
    return SimLockSpec(
        roomkey_id=roomkey_id,
        name=name,
        loqed_id=lock.lock_id,
        bridge_id=bridge_id,
        bridge_url=f"{loqed_url}/bridges/{bridge_id}",
        local_key_id=key.local_id,
        key_secret=key.secret,
        bridge_key=bridge.bridge_key,
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a valid TOML basic string
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _table(name: str, values: Mapping[str, Any]) -> str:
    lines = [f"[{name}]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def config_toml(
    *,
    lockme_url: str,
    client_id: str,
    client_secret: str,
    rooms: Sequence[tuple[int, str, Sequence[str]]],
    locks: Sequence[SimLockSpec],
    data_dir: str | None = None,
    database_url: str | None = None,
    webhook_secret: str = WEBHOOK_SECRET,
    service: Mapping[str, Any] | None = None,
    loqed: Mapping[str, Any] | None = None,
    policy: Mapping[str, Any] | None = None,
    room_policies: Mapping[int, Mapping[str, Any]] | None = None,
) -> str:
    """A roomkey config for simulated Lockme + LOQED (every key a real venue would set)."""
    parts = [
        _table(
            "service",
            {
                "data_dir": data_dir,
                "database_url": database_url,
                "lockme_webhook_secret": webhook_secret,
                **(service or {}),
            },
        ),
        _table(
            "lockme",
            {
                "client_id": client_id,
                "client_secret": client_secret,
                "api_domain": lockme_url,
                "venue_timezone": "Europe/Warsaw",
            },
        ),
        _table("loqed", {"transport_order": ["bridge"], **(loqed or {})}),
    ]
    for spec in locks:
        head = {"id": spec.roomkey_id, "name": spec.name, "loqed_id": spec.loqed_id}
        parts.append(
            "[[locks]]\n"
            + "\n".join(f"{k} = {_toml_value(v)}" for k, v in head.items())
            + "\n"
            + _table(
                "locks.bridge",
                {
                    "url": spec.bridge_url,
                    "key_secret": spec.key_secret,
                    "local_key_id": spec.local_key_id,
                    "bridge_key": spec.bridge_key,
                },
            )
        )
    if policy:
        parts.append(_table("defaults.policy", policy))
    for room_id, name, lock_ids in rooms:
        parts.append(
            "[[rooms]]\n"
            + "\n".join(
                f"{k} = {_toml_value(v)}"
                for k, v in {"id": room_id, "name": name, "locks": list(lock_ids)}.items()
            )
            + "\n"
        )
        overrides = (room_policies or {}).get(room_id)
        if overrides:
            parts.append(_table("rooms.policy", overrides))
    return "\n".join(parts)


def dashboard_address(app: Any, base_url: str) -> str | None:
    """The dashboard's URL once the dashboard (issue 5) mounts ``/dashboard`` on the app.

    This is the demo's hook for it: the banner prints whatever this returns.
    """
    for route in getattr(app, "routes", ()):
        path = getattr(route, "path", "")
        if isinstance(path, str) and path.rstrip("/") in ("/dashboard", "/ui"):
            return f"{base_url}{path.rstrip('/')}/"
    return None


# --------------------------------------------------------------------------- options & summary


@dataclass(frozen=True)
class DemoOptions:
    run_for: float | None = None
    """Real seconds to run (None: until Ctrl-C)."""
    warp: float = 120.0
    """Simulated seconds per real second."""
    port: int = 0
    """roomkey's loopback port (0: a free one)."""
    seed: int = 1
    data_dir: Path | None = None
    """Where the demo keeps its database and config (None: a temp directory, removed after)."""
    traffic_rate: float = 12.0
    """Lockme traffic generator events per simulated hour (bookings days ahead, edits, …)."""
    same_day_every: float = 25 * 60.0
    """Simulated seconds between same-day bookings (doors that move during the demo)."""


@dataclass
class DemoSummary:
    """What happened, counted from roomkey's database and the simulated locks."""

    simulated_from: str = ""
    simulated_to: str = ""
    real_seconds: float = 0.0
    messages_received: int = 0
    messages_processed: int = 0
    bookings: int = 0
    bookings_paid: int = 0
    actions_planned: int = 0
    actions_fired: int = 0
    actions_superseded: int = 0
    actions_skipped: int = 0
    commands_sent: int = 0
    commands_confirmed: int = 0
    commands_failed: int = 0
    lock_events: int = 0
    lock_commands_received: int = 0
    traffic: dict[str, int] = field(default_factory=dict)
    failed_to_start: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "simulated": {"from": self.simulated_from, "to": self.simulated_to},
            "real_seconds": round(self.real_seconds, 1),
            "lockme_messages": {
                "received": self.messages_received,
                "processed": self.messages_processed,
            },
            "bookings": {"total": self.bookings, "paid": self.bookings_paid},
            "door_actions": {
                "planned": self.actions_planned,
                "fired": self.actions_fired,
                "superseded": self.actions_superseded,
                "skipped": self.actions_skipped,
            },
            "commands": {
                "sent": self.commands_sent,
                "confirmed": self.commands_confirmed,
                "failed": self.commands_failed,
            },
            "lock_events": self.lock_events,
            "commands_received_by_locks": self.lock_commands_received,
            "traffic": dict(self.traffic),
        }

    def render(self) -> Table:
        table = Table(title="roomkey demo — summary", show_header=False)
        table.add_column("what")
        table.add_column("count", justify="right")
        rows = [
            ("simulated time", f"{self.simulated_from} → {self.simulated_to}"),
            ("Lockme webhooks received / processed",
             f"{self.messages_received} / {self.messages_processed}"),
            ("bookings (paid)", f"{self.bookings} ({self.bookings_paid})"),
            ("door actions planned", str(self.actions_planned)),
            ("door actions fired", str(self.actions_fired)),
            ("door actions superseded / skipped",
             f"{self.actions_superseded} / {self.actions_skipped}"),
            ("commands sent / confirmed", f"{self.commands_sent} / {self.commands_confirmed}"),
            ("commands failed", str(self.commands_failed)),
            ("lock events recorded", str(self.lock_events)),
        ]
        for what, count in rows:
            table.add_row(what, count)
        return table


# --------------------------------------------------------------------------- narrator


class Narrator:
    """Prints one line per step, read from roomkey's database, in venue-local sim time.

    Each line carries the time roomkey recorded for that step (message applied, action
    planned, command sent, event received, command confirmed), so the story stays in order
    even when several steps happen between two polls.
    """

    def __init__(
        self,
        console: Console,
        sessions: async_sessionmaker[AsyncSession],
        clock: SimClock,
        config: Config,
        *,
        plain: bool,
        hold: float = 0.0,
    ) -> None:
        self.console = console
        self.hold = dt.timedelta(seconds=hold)
        """Lines wait this long (simulated) before printing, so late commits still sort in."""
        self.sessions = sessions
        self.clock = clock
        self.plain = plain
        self.room_names = {r.id: r.name for r in config.rooms}
        self._messages: dict[str, str] = {}
        self._actions: dict[str, tuple[str, int, str]] = {}
        self._sent: set[str] = set()
        self._ended: dict[str, str] = {}
        self._last_event_id = 0
        self._since: dt.datetime | None = None
        self._lines: list[tuple[dt.datetime, int, str, str, str]] = []
        self._seq = 0
        self.confirmed = 0

    # -- output --------------------------------------------------------------------------
    def _add(self, at: dt.datetime | None, tag: str, text: str, style: str = "") -> None:
        moment = at or dt.datetime.fromtimestamp(self.clock.time(), dt.UTC)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        self._seq += 1
        self._lines.append((moment, self._seq, tag, text, style))

    def _flush(self, *, final: bool = False) -> None:
        cutoff = dt.datetime.fromtimestamp(self.clock.time(), dt.UTC) - self.hold
        ready = sorted(x for x in self._lines if final or x[0] <= cutoff)
        self._lines = [x for x in self._lines if not (final or x[0] <= cutoff)]
        for moment, _seq, tag, text, style in ready:
            stamp = moment.astimezone(VENUE_TZ).strftime("%H:%M:%S")
            if self.plain:
                self.console.file.write(f"{stamp}  {tag:<8} {text}\n")
                continue
            line = Text()
            line.append(f"{stamp}  ", style="dim")
            line.append(f"{tag:<8} ", style=style or "bold")
            line.append(text)
            self.console.print(line, highlight=False)
        if self.plain:
            self.console.file.flush()

    @staticmethod
    def _clock(moment: dt.datetime) -> str:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.astimezone(VENUE_TZ).strftime("%H:%M")

    def _when(self, moment: dt.datetime) -> str:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        local = moment.astimezone(VENUE_TZ)
        today = dt.datetime.fromtimestamp(self.clock.time(), VENUE_TZ).date()
        if local.date() == today:
            return local.strftime("%H:%M")
        return local.strftime("%a %d %b %H:%M")

    def _room(self, room_id: int | None) -> str:
        if room_id is None:
            return "?"
        return self.room_names.get(room_id, f"room {room_id}")

    # -- polling -------------------------------------------------------------------------
    async def poll(self, *, final: bool = False) -> None:
        now = dt.datetime.fromtimestamp(self.clock.time(), dt.UTC)
        since = (self._since or now - dt.timedelta(days=1)) - dt.timedelta(minutes=10)
        async with self.sessions() as session:
            await self._poll_messages(session, since)
            await self._poll_actions(session, since)
            await self._poll_commands(session, since)
            await self._poll_events(session)
        self._since = now
        self._flush(final=final)

    async def _poll_messages(self, session: AsyncSession, since: dt.datetime) -> None:
        stmt = select(LockmeMessage).where(
            or_(
                LockmeMessage.received_at >= since,
                LockmeMessage.applied_at >= since,
                LockmeMessage.state == MessageState.FAILED,
            )
        )
        for msg in (await session.execute(stmt)).scalars():
            state = msg.state.value
            previous = self._messages.get(msg.message_id)
            if previous == state:
                continue
            self._messages[msg.message_id] = state
            if msg.state is MessageState.FAILED:
                self._add(None, "lockme", f"message {msg.message_id} failed, will retry: "
                          f"{msg.last_error or '?'}", "red")
                continue
            if state not in ("applied", "acked") or previous in ("applied", "acked"):
                continue
            at = msg.applied_at or msg.received_at
            if msg.action == "test":
                self._add(at, "lockme", "test webhook acknowledged", "cyan")
                continue
            res = (
                await session.get(Reservation, msg.reservation_id)
                if msg.reservation_id is not None
                else None
            )
            if res is None:
                self._add(at, "booking", f"Lockme {msg.action or '?'} "
                          f"(message {msg.message_id})", "cyan")
                continue
            what = {"add": "new booking", "edit": "booking changed",
                    "delete": "booking deleted"}.get(msg.action or "", msg.action or "?")
            if res.deleted and msg.action != "delete":
                what = "booking gone"
            paid = "paid" if res.status else "unpaid cart"
            self._add(
                at,
                "booking",
                f"{what} #{res.id}: {self._room(res.room_id)}, {self._when(res.start_at)}"
                f"–{self._clock(res.end_at)}, {paid} ({res.source or '?'}) "
                f"← Lockme webhook '{msg.action}'",
                "cyan",
            )

    async def _poll_actions(self, session: AsyncSession, since: dt.datetime) -> None:
        stmt = select(DoorAction).where(DoorAction.updated_at >= since)
        for action in (await session.execute(stmt)).scalars():
            sig = (action.status.value, action.version, action.planned_at.isoformat())
            before = self._actions.get(action.key)
            if before == sig:
                continue
            self._actions[action.key] = sig
            bookings = ", ".join(f"#{r}" for r in action.reservation_ids) or "—"
            where = f"{self._room(action.room_id)} / {action.lock_id}"
            at = action.updated_at
            kind = action.kind.value
            if action.status is DoorActionStatus.PLANNED:
                verb = "planned" if before is None else "re-planned"
                self._add(at, "plan", f"{verb}: {kind} {where} at "
                          f"{self._when(action.planned_at)} (bookings {bookings})", "magenta")
            elif action.status is DoorActionStatus.SUPERSEDED and before is not None:
                self._add(at, "plan", f"dropped: {kind} {where} at "
                          f"{self._when(action.planned_at)} "
                          f"({action.reason or 'no longer needed'})", "magenta")
            elif action.status is DoorActionStatus.SKIPPED:
                self._add(at, "plan", f"skipped (too late): {kind} {where}", "yellow")
            elif action.status is DoorActionStatus.FAILED:
                self._add(at, "plan", f"failed: {kind} {where} ({action.reason or '?'})", "red")

    async def _poll_commands(self, session: AsyncSession, since: dt.datetime) -> None:
        stmt = select(Command).where(
            or_(
                Command.created_at >= since,
                Command.finished_at >= since,
                Command.sending_at >= since,
                Command.state.in_([CommandState.SENDING, CommandState.SENT,
                                   CommandState.ACCEPTED]),
            )
        )
        for cmd in (await session.execute(stmt)).scalars():
            origin = "manual" if cmd.origin is CommandOrigin.MANUAL else "planned"
            action = cmd.action.value.upper()
            if cmd.id not in self._sent and cmd.sending_at is not None:
                self._sent.add(cmd.id)
                self._add(cmd.sending_at, "command", f"{cmd.lock_id} ← {action} ({origin}, "
                          f"signed, via {cmd.transport or 'bridge'})", "blue")
            state = cmd.state
            if self._ended.get(cmd.id) == state.value:
                continue
            if state is CommandState.CONFIRMED:
                took = ""
                if cmd.sending_at is not None and cmd.confirmed_at is not None:
                    seconds = (cmd.confirmed_at - cmd.sending_at).total_seconds()
                    took = f" {seconds:.0f} s after sending"
                self.confirmed += 1
                self._add(_after(cmd.confirmed_at), "door", f"{cmd.lock_id} {cmd.action.value} "
                          f"✓ confirmed by the lock{took}", "bold green")
            elif state in (CommandState.FAILED, CommandState.EXPIRED):
                reason = cmd.reason.value if cmd.reason else "?"
                self._add(_after(cmd.finished_at), "door", f"{cmd.lock_id} {cmd.action.value} "
                          f"✗ {state.value} ({reason})", "bold red")
            elif state is CommandState.SUPERSEDED:
                self._add(cmd.finished_at, "command", f"{cmd.lock_id} {cmd.action.value} "
                          "superseded by a newer command", "dim")
            else:
                continue
            self._ended[cmd.id] = state.value

    async def _poll_events(self, session: AsyncSession) -> None:
        stmt = select(LockEvent).where(LockEvent.id > self._last_event_id).order_by(LockEvent.id)
        for event in (await session.execute(stmt)).scalars():
            self._last_event_id = max(self._last_event_id, event.id)
            key = "" if event.key_local_id is None else f" (key {event.key_local_id})"
            via = f"via {event.source.value} webhook"
            if event.kind in ("go_to_state", "state_changed"):
                style = "green" if event.kind == "state_changed" else ""
                self._add(event.received_at, "lock",
                          f"{event.lock_id} {event.event_type}{key} {via}", style)
            elif event.kind == "motor_stall":
                self._add(event.received_at, "lock", f"{event.lock_id} MOTOR STALL {via}",
                          "bold red")


def _after(moment: dt.datetime | None) -> dt.datetime | None:
    """A hair later: the outcome line follows the lock event that caused it."""
    return None if moment is None else moment + dt.timedelta(milliseconds=1)


async def summarize(
    sessions: async_sessionmaker[AsyncSession], summary: DemoSummary
) -> DemoSummary:
    async with sessions() as session:

        async def count(stmt: Any) -> int:
            return int((await session.execute(stmt)).scalar_one())

        summary.messages_received = await count(select(func.count()).select_from(LockmeMessage))
        summary.messages_processed = await count(
            select(func.count()).select_from(LockmeMessage).where(
                LockmeMessage.state.in_([MessageState.APPLIED, MessageState.ACKED])
            )
        )
        summary.bookings = await count(
            select(func.count()).select_from(Reservation).where(Reservation.deleted.is_(False))
        )
        summary.bookings_paid = await count(
            select(func.count()).select_from(Reservation).where(
                Reservation.deleted.is_(False), Reservation.status != 0
            )
        )
        summary.actions_planned = await count(select(func.count()).select_from(DoorAction))
        summary.actions_fired = await count(
            select(func.count()).select_from(DoorAction).where(
                DoorAction.status == DoorActionStatus.DONE
            )
        )
        summary.actions_superseded = await count(
            select(func.count()).select_from(DoorAction).where(
                DoorAction.status == DoorActionStatus.SUPERSEDED
            )
        )
        summary.actions_skipped = await count(
            select(func.count()).select_from(DoorAction).where(
                DoorAction.status.in_([DoorActionStatus.SKIPPED, DoorActionStatus.FAILED])
            )
        )
        summary.commands_sent = await count(
            select(func.count()).select_from(Command).where(Command.sending_at.is_not(None))
        )
        summary.commands_confirmed = await count(
            select(func.count()).select_from(Command).where(
                Command.state == CommandState.CONFIRMED
            )
        )
        summary.commands_failed = await count(
            select(func.count()).select_from(Command).where(
                Command.state.in_([CommandState.FAILED, CommandState.EXPIRED])
            )
        )
        summary.lock_events = await count(select(func.count()).select_from(LockEvent))
    return summary


# --------------------------------------------------------------------------- the demo


_ROOMS = (("vault-door", "The Vault — door"), ("tomb-door", "Pharaoh's Tomb — door"),
          ("station-door", "Space Station — door"))


def _demo_start(now: float) -> float:
    """Today's 09:47 in the venue (simulated start of the demo day)."""
    today = dt.datetime.fromtimestamp(now, VENUE_TZ).date()
    return dt.datetime.combine(today, DEMO_DAY_START, VENUE_TZ).timestamp()


def _secret_box(data_dir: Path) -> SecretBox:
    """The key from ``ROOMKEY_SECRET_KEY``, else one generated for (and kept in) the data dir."""
    if os.environ.get(SECRET_KEY_ENV, "").strip():
        return SecretBox.from_env()
    key_file = data_dir / "secret.key"
    if key_file.exists():
        return SecretBox([key_file.read_text(encoding="ascii").strip()])
    key = generate_key()
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    return SecretBox([key])


class SameDayFeeder:
    """Books slots later *today* (phone and walk-in bookings) so doors move during the demo."""

    def __init__(self, sim: Any, clock: SimClock, room_ids: Sequence[int], *, seed: int,
                 every: float) -> None:
        self.sim = sim
        self.clock = clock
        self.room_ids = list(room_ids)
        self.rng = random.Random(seed)  # noqa: S311 - demo traffic, not crypto
        self.every = every
        self._timer: Any = None
        self.booked: list[int] = []

    def opening(self) -> None:
        """The first bookings of the day: paid ones at 10:00 and 10:10 (short ones), one
        back-to-back with the first (the door stays unlocked between them) and an unpaid cart
        (it lapses after 20 minutes and never opens a door)."""
        today = dt.datetime.fromtimestamp(self.clock.time(), VENUE_TZ).date().isoformat()
        plan = [
            (self.room_ids[0], "10:00:00", "panel", 1, "Anna", 4, 60),
            (self.room_ids[1], "10:00:00", "web", 1, "Piotr", 3, 30),
            (self.room_ids[2], "10:10:00", "panel", 1, "Ewa", 2, 30),
            (self.room_ids[0], "11:20:00", "panel", 1, "Kasia", 5, 60),
            (self.room_ids[2], "11:30:00", "web", 0, "Marek", 2, 60),
        ]
        for room_id, hour, source, status, name, people, minutes in plan:
            self._book(room_id, today, hour, source, status, name, people, minutes)

    def start(self) -> None:
        self._timer = self.clock.call_later(self.every, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        now = dt.datetime.fromtimestamp(self.clock.time(), VENUE_TZ)
        start = now + dt.timedelta(minutes=self.rng.choice((50, 60, 70, 80)))
        start = start.replace(minute=(start.minute // 10) * 10, second=0, microsecond=0)
        if start.date() == now.date() and start.hour < 23:
            paid = self.rng.random() < 0.8
            self._book(
                self.rng.choice(self.room_ids), start.date().isoformat(),
                start.strftime("%H:%M:00"), "panel" if paid else "web", 1 if paid else 0,
                self.rng.choice(("Ola", "Jan", "Ewa", "Adam", "Zofia", "Tomasz")),
                self.rng.randint(2, 6),
                self.rng.choice((30, 45, 60)),
            )
        self._timer = self.clock.call_later(self.every, self._tick)

    def _book(self, room_id: int, day: str, hour: str, source: str, status: int, name: str,
              people: int, minutes: int = 60) -> None:
        from roomkey.sim.lockme import SimError

        try:
            rid = self.sim.book(room_id, day, hour, source=source, status=status, name=name,
                                people=people, duration=minutes)
        except SimError:
            return  # slot taken or not offered: a real customer would pick another
        self.booked.append(rid)


def _plain_console(console: Console) -> bool:
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    return ci or not console.is_terminal


async def run_demo_async(
    options: DemoOptions,
    console: Console,
    *,
    plain: bool | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[dict[str, str]], None] | None = None,
) -> DemoSummary:
    """Run the demo until ``stop`` is set or ``options.run_for`` real seconds passed."""
    from roomkey.service.app import create_app
    from roomkey.service.db.engine import create_engine, create_session_factory
    from roomkey.service.db.migrate import upgrade_async
    from roomkey.service.lockme_gateway import token_store
    from roomkey.service.runtime import Service
    from roomkey.sim.lockme import LockmeSimulator
    from roomkey.sim.lockme.demo import DEMO_CLIENT
    from roomkey.sim.lockme.demo import seed_demo as seed_lockme
    from roomkey.sim.lockme.traffic import TrafficGenerator
    from roomkey.sim.loqed import LoqedSimulator, SimConfig

    plain = _plain_console(console) if plain is None else plain
    stop = stop or asyncio.Event()
    started_real = time.monotonic()
    summary = DemoSummary()

    temp: tempfile.TemporaryDirectory[str] | None = None
    if options.data_dir is None:
        temp = tempfile.TemporaryDirectory(prefix="roomkey-demo-")
        data_dir = Path(temp.name)
    else:
        data_dir = options.data_dir.expanduser().resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("demo.sqlite3", "demo.sqlite3-wal", "demo.sqlite3-shm",
                      "lockme-token.json"):
            (data_dir / stale).unlink(missing_ok=True)  # every run starts a fresh venue

    # One clock for everything, paused (nearly) while the servers start.
    start_at = _demo_start(time.time())
    clock = SimClock(start=start_at, warp=1e-6)
    lockme_sim = LockmeSimulator(clock, seed=options.seed)
    venue = seed_lockme(lockme_sim)
    room_ids: list[int] = list(venue["room_ids"])
    dept_id = int(venue["department_id"])
    loqed_sim = LoqedSimulator(clock, config=SimConfig(seed=options.seed))
    loqed_sim.socket_mode = True

    servers: list[LoopbackServer] = []
    service: Service | None = None
    feeder: SameDayFeeder | None = None
    narrator_engine = None
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    try:
        lockme_server = LoopbackServer(lockme_sim.app)
        await lockme_server.start()
        servers.append(lockme_server)
        loqed_server = LoopbackServer(loqed_sim.app)
        await loqed_server.start()
        servers.append(loqed_server)
        await clock.start()

        specs = [
            add_sim_lock(loqed_sim, roomkey_id=rk_id, name=name, bridge_id=f"b{i + 1}",
                         loqed_url=loqed_server.url)
            for i, (rk_id, name) in enumerate(_ROOMS)
        ]
        names = ("The Vault", "Pharaoh's Tomb", "Space Station")
        text = config_toml(
            lockme_url=lockme_server.url,
            client_id=DEMO_CLIENT["client_id"],
            client_secret=DEMO_CLIENT["client_secret"],
            rooms=[(rid, names[i], [specs[i].roomkey_id]) for i, rid in enumerate(room_ids)],
            locks=specs,
            data_dir=str(data_dir),
            database_url=f"sqlite+aiosqlite:///{(data_dir / 'demo.sqlite3').as_posix()}",
            service={"reconcile_days_ahead": 3, "replica_id": "demo"},
            loqed={"command_deadline_seconds": 120, "open_deadline_seconds": 60},
        )
        config_file = data_dir / "roomkey.toml"
        fd = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        config = parse_config(text, base_dir=data_dir, source=str(config_file))
        box = _secret_box(data_dir)
        token_store(config, box).save(
            Token.model_validate(lockme_sim.issue_token(DEMO_CLIENT["client_id"]))
        )
        url = config.service.db_url()
        await upgrade_async(url)
        service = Service(config, clock=clock, secret_box=box)
        app = create_app(service)
        roomkey_server = LoopbackServer(app, port=options.port, lifespan="on")
        await roomkey_server.start()
        servers.append(roomkey_server)

        # Point both simulators at roomkey, as a venue would in Lockme's panel / LOQED's app.
        lockme_sim.configure_department(
            dept_id, webhook_url=f"{roomkey_server.url}/hooks/lockme/{WEBHOOK_SECRET}"
        )
        for spec in specs:
            loqed_sim.add_bridge_webhook(
                spec.bridge_id, f"{roomkey_server.url}/hooks/loqed/bridge/{spec.roomkey_id}"
            )

        narrator_engine = create_engine(url)
        narrator = Narrator(console, create_session_factory(narrator_engine), clock, config,
                            plain=plain, hold=0.6 * options.warp)
        addresses = {
            "roomkey": roomkey_server.url,
            "lockme_simulator": lockme_server.url,
            "loqed_simulator": loqed_server.url,
            "config": str(config_file),
        }
        dashboard = dashboard_address(app, roomkey_server.url)
        if dashboard:
            addresses["dashboard"] = dashboard
            from roomkey.web import create_demo_credentials

            creds = await create_demo_credentials(service)
            addresses["dashboard_login"] = ", ".join(
                f"{c.username} / {c.password} ({c.role.value})" for c in creds
            )
        _banner(console, options, addresses, plain)
        if on_ready is not None:
            on_ready(addresses)

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)

        # Time starts now.
        clock.set_warp(options.warp)
        summary.simulated_from = _stamp(clock.time())
        feeder = SameDayFeeder(lockme_sim, clock, room_ids, seed=options.seed,
                               every=options.same_day_every)
        feeder.opening()
        feeder.start()
        traffic = TrafficGenerator(lockme_sim, seed=options.seed, rate=options.traffic_rate)
        lockme_sim.traffic = traffic
        traffic.start()

        deadline = None if options.run_for is None else time.monotonic() + options.run_for
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                await narrator.poll()
            except Exception as exc:  # the narrator must never stop the demo
                log.debug("narrator poll failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.25)
        with contextlib.suppress(Exception):
            await narrator.poll(final=True)
        summary.simulated_to = _stamp(clock.time())
        summary.traffic = dict(traffic.summary().get("by_kind", {}))
        summary.lock_commands_received = len(loqed_sim.received())
        await summarize(narrator.sessions, summary)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        if feeder is not None:
            feeder.stop()
        if lockme_sim.traffic is not None:
            lockme_sim.traffic.stop()
        for server in reversed(servers):  # roomkey first, then the simulators
            with contextlib.suppress(Exception):
                await server.stop()
        if service is not None:
            with contextlib.suppress(Exception):
                await service.aclose()
        if narrator_engine is not None:
            await narrator_engine.dispose()
        with contextlib.suppress(Exception):
            await loqed_sim.aclose()
        with contextlib.suppress(Exception):
            await lockme_sim.aclose()
        await clock.stop()
        if temp is not None:
            with contextlib.suppress(Exception):
                temp.cleanup()
    summary.real_seconds = time.monotonic() - started_real
    return summary


def _stamp(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, VENUE_TZ).strftime("%Y-%m-%d %H:%M")


def _banner(console: Console, options: DemoOptions, addresses: Mapping[str, str],
            plain: bool) -> None:
    lines = [
        f"roomkey demo — time warp ×{options.warp:g} (1 real second = "
        f"{options.warp:g} simulated seconds), venue time Europe/Warsaw",
        f"  roomkey          {addresses['roomkey']}  (SQLite, webhooks over HTTP)",
        f"  Lockme simulator {addresses['lockme_simulator']}",
        f"  LOQED simulator  {addresses['loqed_simulator']}",
        f"  config           {addresses['config']}",
    ]
    if "dashboard" in addresses:
        lines.append(f"  dashboard        {addresses['dashboard']}")
    if "dashboard_login" in addresses:
        lines.append(f"  demo logins      {addresses['dashboard_login']}")
    lines.append(
        "  stop with Ctrl-C" if options.run_for is None
        else f"  running for {options.run_for:g} s"
    )
    for line in lines:
        if plain:
            console.file.write(line + "\n")
        else:
            console.print(line, highlight=False, markup=False)
    if plain:
        console.file.flush()


def run_demo(options: DemoOptions, *, console: Console, plain: bool | None = None) -> DemoSummary:
    """Synchronous entry point for ``roomkey demo``.

    roomkey's own logs go to ``roomkey.log`` in the data directory given with ``--data-dir``
    (the terminal shows the narration); errors also reach stderr, redacted.
    """
    from roomkey.service.logging import RedactionFilter, configure_logging

    if options.data_dir is not None:
        options.data_dir.expanduser().mkdir(parents=True, exist_ok=True)
        log_file: Any = open(  # noqa: SIM115 - closed below
            options.data_dir.expanduser() / "roomkey.log", "a", encoding="utf-8"
        )
    else:
        log_file = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    handler = configure_logging(level=logging.INFO, json_lines=True, stream=log_file)
    errors = logging.StreamHandler()
    errors.setLevel(logging.ERROR)
    errors.addFilter(RedactionFilter())
    errors.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(errors)
    try:
        return _run_demo_sync(options, console, plain)
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().removeHandler(errors)
        log_file.close()


def _run_demo_sync(options: DemoOptions, console: Console, plain: bool | None) -> DemoSummary:
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_demo_async(options, console, plain=plain))
    return DemoSummary(failed_to_start=True)
