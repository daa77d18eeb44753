"""The service's commands: ``serve``, ``demo``, ``db upgrade``, ``rooms``, ``locks``, ``plan``,
``events``, ``sync``, ``open|unlock|lock ROOM`` and ``secret-key generate``.

Every command takes ``--config PATH`` (default ``./roomkey.toml``, or ``$ROOMKEY_CONFIG``) and
``--json``; JSON is also printed whenever stdout is not a terminal. Only the answer goes to
stdout; notes, progress and errors go to stderr; expected errors exit with the codes of
:class:`roomkey.cli.output.ExitCode` and no traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import getpass
import os
import re
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

import typer
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from roomkey.cli.output import CliError, ExitCode, Output, fail, handle_errors, make_output
from roomkey.service.config import Config, ConfigError, ConfigIssue, RoomConfig, load_config

__all__ = ["DEFAULT_CONFIG", "load_cli_config", "register"]

DEFAULT_CONFIG = Path("roomkey.toml")
CONFIG_ENV = "ROOMKEY_CONFIG"

ConfigOpt = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        envvar=CONFIG_ENV,
        help="Configuration file (TOML).",
        show_envvar=True,
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON (automatic when stdout is not a terminal).")
]


# --------------------------------------------------------------------------- helpers


def load_cli_config(path: Path) -> Config:
    """Load the config, with a friendlier message when the default file is missing."""
    if not path.exists():
        raise ConfigError(
            [
                ConfigIssue(
                    path="",
                    message=f"no configuration file at {path} (pass --config PATH or set "
                    f"{CONFIG_ENV}; see examples/roomkey.toml)",
                )
            ],
            str(path),
        )
    return load_config(path)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def _database(config: Config) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the configured database, which must exist and be at the code's schema."""
    from roomkey.service.db.engine import create_engine, create_session_factory
    from roomkey.service.db.migrate import current_revision, head_revision

    url = config.service.db_url()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not os.path.exists(database):  # noqa: ASYNC240
            fail(
                f"no database at {database}",
                ExitCode.DATABASE,
                hint="run `roomkey db upgrade` (or start `roomkey serve`) first",
            )
    revision = await current_revision(url)
    head = head_revision()
    if revision is None:
        fail(
            "the database is not initialised",
            ExitCode.DATABASE,
            hint="run `roomkey db upgrade`",
        )
    if revision != head:
        fail(
            f"the database schema is at {revision}, this roomkey needs {head}",
            ExitCode.DATABASE,
            hint="run `roomkey db upgrade`",
        )
    engine: AsyncEngine = create_engine(url)
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


def _find_room(config: Config, room: str) -> RoomConfig:
    text = room.strip()
    for candidate in config.rooms:
        if text.isdigit() and candidate.id == int(text):
            return candidate
    for candidate in config.rooms:
        if candidate.name.casefold() == text.casefold():
            return candidate
    fail(f"no room {text[:80]!r} in the configuration", ExitCode.NOT_FOUND)


def _find_lock(config: Config, lock: str) -> str:
    text = lock.strip()
    for candidate in config.locks:
        if text in (candidate.id, candidate.resolved_loqed_id):
            return candidate.id
    fail(f"no lock {text[:80]!r} in the configuration", ExitCode.NOT_FOUND)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_moment(text: str, *, now: dt.datetime, tz: ZoneInfo, future: bool = False) -> dt.datetime:
    """``2h``/``30m``/``3d`` relative to ``now`` (back in time unless ``future``), or an ISO
    date/datetime (venue-local when it has no offset)."""
    match = _DURATION.match(text)
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        delta = dt.timedelta(seconds=seconds)
        return now + delta if future else now - delta
    try:
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither a duration (30m, 2h, 3d) nor an ISO date/time"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(dt.UTC)


def _local(moment: dt.datetime | None, tz: ZoneInfo) -> str:
    if moment is None:
        return "—"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def _utc(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _default_actor() -> str:
    for name in ("USER", "LOGNAME", "USERNAME"):
        value = os.environ.get(name)
        if value:
            return value
    with contextlib.suppress(Exception):
        return getpass.getuser()
    return "unknown"


# --------------------------------------------------------------------------- serve


def serve(
    config_path: ConfigOpt = DEFAULT_CONFIG,
    host: Annotated[
        str | None, typer.Option(help="Listen address (default: [service] host).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="TCP port (default: [service] port).")
    ] = None,
    migrate: Annotated[
        bool,
        typer.Option(
            "--migrate/--no-migrate",
            help="Upgrade the database schema before starting (use --no-migrate on replicas "
            "and run `roomkey db upgrade` once per release).",
        ),
    ] = True,
    log_format: Annotated[
        str, typer.Option(help="Log format on stderr: json, text or auto (text on a terminal).")
    ] = "auto",
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
    loop: Annotated[
        str,
        typer.Option(
            envvar="ROOMKEY_LOOP",
            help="Event loop: auto (uvloop when installed, else asyncio), uvloop or asyncio "
            "(the stock loop).",
        ),
    ] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Run the service: webhook receivers, workers, /health, /ready and /metrics."""
    out = make_output(as_json)
    if log_format not in ("json", "text", "auto"):
        raise typer.BadParameter("must be json, text or auto", param_hint="--log-format")
    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise typer.BadParameter("must be debug, info, warning or error", param_hint="--log-level")
    loop_factory(loop)  # refuse an unknown or missing loop before anything starts
    with handle_errors(out):
        config = load_cli_config(config_path)
        from roomkey.service.crypto import SecretBox
        from roomkey.service.logging import configure_logging

        box = SecretBox.from_env()
        json_lines = log_format == "json" or (log_format == "auto" and not _stderr_is_tty())
        configure_logging(level=level, json_lines=json_lines)
        from roomkey.service.gc_tuning import tune_gc

        tune_gc(config.service.gc_threshold)
        run_on_loop(
            _serve(
                config,
                box,
                host=host or config.service.host,
                port=config.service.port if port is None else port,
                migrate=migrate,
                out=out,
            ),
            loop=loop,
        )


T = TypeVar("T")

SERVE_LOOPS = ("auto", "uvloop", "asyncio")
"""``roomkey serve --loop`` choices (uvicorn's names)."""


def loop_factory(loop: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvicorn's event-loop factory for ``loop`` (``auto``: uvloop when installed), exactly
    what ``uvicorn.Server.run()`` would use."""
    import uvicorn

    if loop not in SERVE_LOOPS:
        raise typer.BadParameter(f"must be one of {', '.join(SERVE_LOOPS)}", param_hint="--loop")
    try:
        return uvicorn.Config("roomkey", loop=loop).get_loop_factory()
    except ImportError as exc:
        raise typer.BadParameter(
            f"{loop} is not installed (use --loop asyncio)", param_hint="--loop"
        ) from exc


def run_on_loop(coro: Coroutine[Any, Any, T], *, loop: str = "auto") -> T:
    """Run ``coro`` to completion on a fresh event loop of kind ``loop`` (see
    :func:`loop_factory`); ``roomkey serve`` and the benchmark servers run this way."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(coro)


def _stderr_is_tty() -> bool:
    import sys

    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


async def _serve(
    config: Config, box: Any, *, host: str, port: int, migrate: bool, out: Output
) -> None:
    import uvicorn

    from roomkey.service.app import create_app
    from roomkey.service.db.engine import redact_url
    from roomkey.service.db.migrate import current_revision, head_revision, upgrade_async
    from roomkey.service.runtime import Service

    url = config.service.db_url()
    if migrate:
        await upgrade_async(url)
    elif await current_revision(url) != head_revision():
        fail(
            "the database is not at this roomkey's schema",
            ExitCode.DATABASE,
            hint="run `roomkey db upgrade` (once, from one replica) or start with --migrate",
        )
    service = Service(config, secret_box=box)
    app = create_app(service)
    from roomkey.service.gc_tuning import freeze_startup_objects

    freeze_startup_objects()  # start-up objects live as long as the process

    class Server(uvicorn.Server):
        """Stops on SIGINT/SIGTERM and exits 0 (plain uvicorn re-raises the signal)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            loop = asyncio.get_running_loop()
            installed = []
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, self._stop_now)
                    installed.append(sig)
            try:
                yield
            finally:
                for sig in installed:
                    loop.remove_signal_handler(sig)

        def _stop_now(self) -> None:
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True

    server = Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
    )
    out.note(f"roomkey serving on http://{host}:{port} (database {redact_url(url)})")
    try:
        await server.serve()
    finally:
        await service.aclose()
    if not server.started:
        fail(
            f"roomkey did not start on {host}:{port} (address in use, or start-up failed: "
            "see the log above)"
        )


# --------------------------------------------------------------------------- db upgrade


def db_upgrade(config_path: ConfigOpt = DEFAULT_CONFIG, as_json: JsonOpt = False) -> None:
    """Create or upgrade the database schema to this roomkey's version (idempotent)."""
    out = make_output(as_json)
    with handle_errors(out):
        config = load_cli_config(config_path)
        from roomkey.service.db.engine import redact_url
        from roomkey.service.db.migrate import current_revision, head_revision, upgrade_async

        url = config.service.db_url()

        async def go() -> tuple[str | None, str | None]:
            before = await current_revision(url)
            await upgrade_async(url)
            return before, await current_revision(url)

        before, after = _run(go())
        result = {
            "database": redact_url(url),
            "previous_revision": before,
            "revision": after,
            "head": head_revision(),
            "changed": before != after,
        }
        out.emit(
            result,
            lambda r: (
                f"database {r['database']}: "
                + (
                    f"upgraded {r['previous_revision'] or 'nothing'} → {r['revision']}"
                    if r["changed"]
                    else f"already at {r['revision']}"
                )
            ),
        )


# --------------------------------------------------------------------------- secret-key


def secret_key_generate(as_json: JsonOpt = False) -> None:
    """Print a new ROOMKEY_SECRET_KEY (Fernet key for secrets at rest) on stdout."""
    out = make_output(as_json)
    from roomkey.service.crypto import generate_key

    key = generate_key()
    if out.json:
        out.console.file.write(f'{{"key": "{key}"}}\n')
    else:
        out.console.file.write(key + "\n")
        out.note("keep it safe: set it as ROOMKEY_SECRET_KEY for `roomkey serve`")


# --------------------------------------------------------------------------- rooms / locks


def rooms(config_path: ConfigOpt = DEFAULT_CONFIG, as_json: JsonOpt = False) -> None:
    """Configured rooms with their locks, policy, upcoming bookings and next door action."""
    out = make_output(as_json)
    with handle_errors(out):
        config = load_cli_config(config_path)
        data = _run(_rooms(config))
        out.emit(data, lambda d: _rooms_table(d))


async def _rooms(config: Config) -> list[dict[str, Any]]:
    from roomkey.service.db.models import DoorActionStatus
    from roomkey.service.db.plans import list_door_actions
    from roomkey.service.db.reservations import list_reservations

    now = _now()
    result: list[dict[str, Any]] = []
    async with _database(config) as sessions, sessions() as session:
        for room in config.rooms:
            policy = config.policy_for(room)
            bookings = await list_reservations(session, room_ids=[room.id], start=now)
            upcoming = [
                r for r in bookings if r.status or policy.bookings.value == "all"
            ]
            actions = await list_door_actions(
                session,
                room_id=room.id,
                statuses=[DoorActionStatus.PLANNED],
                start=now - dt.timedelta(days=1),
                limit=1,
            )
            nxt = actions[0] if actions else None
            result.append(
                {
                    "id": room.id,
                    "name": room.name,
                    "timezone": room.timezone,
                    "department": room.department,
                    "locks": list(room.locks),
                    "policy": policy.model_dump(mode="json"),
                    "upcoming_bookings": len(upcoming),
                    "next_action": None
                    if nxt is None
                    else {
                        "kind": nxt.kind.value,
                        "lock": nxt.lock_id,
                        "at": _utc(nxt.planned_at),
                        "at_local": _local(nxt.planned_at, ZoneInfo(room.timezone)),
                    },
                }
            )
    return result


def _rooms_table(data: list[dict[str, Any]]) -> Table:
    table = Table(title="Rooms")
    for column in ("id", "name", "locks", "lead/lag", "unlock", "bookings", "next action"):
        table.add_column(column, no_wrap=column in ("id", "locks"))
    for room in data:
        policy = room["policy"]
        nxt = room["next_action"]
        table.add_row(
            str(room["id"]),
            room["name"],
            ", ".join(room["locks"]),
            f"{policy['unlock_lead_minutes']}m / {policy['lock_lag_minutes']}m",
            policy["unlock_mode"],
            str(room["upcoming_bookings"]),
            "—" if nxt is None else f"{nxt['kind']} {nxt['lock']} at {nxt['at_local']}",
        )
    return table


def locks(config_path: ConfigOpt = DEFAULT_CONFIG, as_json: JsonOpt = False) -> None:
    """Configured locks: transports (never credentials), rooms and live state from events."""
    out = make_output(as_json)
    with handle_errors(out):
        config = load_cli_config(config_path)
        data = _run(_locks(config))
        out.emit(data, lambda d: _locks_table(d, ZoneInfo(config.lockme.venue_timezone)))


async def _locks(config: Config) -> list[dict[str, Any]]:
    from roomkey.service.db.models import Lock

    result: list[dict[str, Any]] = []
    async with _database(config) as sessions, sessions() as session:
        for lock in config.locks:
            row = await session.get(Lock, lock.id)
            result.append(
                {
                    "id": lock.id,
                    "name": lock.name,
                    "loqed_id": lock.resolved_loqed_id,
                    "transports": [
                        t for t in config.loqed.transport_order if t in lock.transports
                    ],
                    "rooms": [r.id for r in config.rooms_for_lock(lock.id)],
                    "bolt_state": row.bolt_state if row else None,
                    "online": row.online if row else None,
                    "battery_percentage": row.battery_percentage if row else None,
                    "wifi_strength": row.wifi_strength if row else None,
                    "ble_strength": row.ble_strength if row else None,
                    "last_event_at": _utc(row.last_event_at) if row else None,
                }
            )
    return result


def _locks_table(data: list[dict[str, Any]], tz: ZoneInfo) -> Table:
    table = Table(title="Locks")
    for column in ("id", "name", "transports", "rooms", "bolt", "online", "battery", "last event"):
        table.add_column(column, no_wrap=column == "id")
    for lock in data:
        last = lock["last_event_at"]
        table.add_row(
            lock["id"],
            lock["name"],
            " → ".join(lock["transports"]),
            ", ".join(str(r) for r in lock["rooms"]),
            lock["bolt_state"] or "?",
            "?" if lock["online"] is None else ("yes" if lock["online"] else "[red]no[/]"),
            "?" if lock["battery_percentage"] is None else f"{lock['battery_percentage']}%",
            "—" if last is None else _local(dt.datetime.fromisoformat(last), tz),
        )
    return table


# --------------------------------------------------------------------------- plan


def plan(
    config_path: ConfigOpt = DEFAULT_CONFIG,
    room: Annotated[str | None, typer.Option(help="Room id or name.")] = None,
    lock: Annotated[str | None, typer.Option(help="Lock id.")] = None,
    since: Annotated[
        str, typer.Option(help="Start: a duration back from now (1h, 2d) or an ISO date/time.")
    ] = "1h",
    days: Annotated[int, typer.Option(min=1, max=366, help="How many days ahead to show.")] = 7,
    status: Annotated[
        list[str] | None,
        typer.Option(help="Only these statuses (planned, done, superseded, skipped, failed)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Door actions planned (and done) per room and lock, in venue-local time."""
    out = make_output(as_json)
    with handle_errors(out):
        config = load_cli_config(config_path)
        from roomkey.service.db.models import DoorActionStatus

        statuses: list[DoorActionStatus] | None = None
        if status:
            try:
                statuses = [DoorActionStatus(s.strip().lower()) for s in status]
            except ValueError:
                raise typer.BadParameter(
                    "must be planned, done, superseded, skipped or failed", param_hint="--status"
                ) from None
        tz = ZoneInfo(config.lockme.venue_timezone)
        now = _now()
        start = parse_moment(since, now=now, tz=tz)
        room_cfg = _find_room(config, room) if room is not None else None
        lock_id = _find_lock(config, lock) if lock is not None else None
        data = _run(
            _plan(config, room_cfg, lock_id, start, now + dt.timedelta(days=days), statuses)
        )
        out.emit(data, lambda d: _plan_table(d))


async def _plan(
    config: Config,
    room: RoomConfig | None,
    lock_id: str | None,
    start: dt.datetime,
    end: dt.datetime,
    statuses: Sequence[Any] | None,
) -> list[dict[str, Any]]:
    from roomkey.service.db.models import Command
    from roomkey.service.db.plans import list_door_actions

    rows: list[dict[str, Any]] = []
    zones = {r.id: ZoneInfo(r.timezone) for r in config.rooms}
    default_tz = ZoneInfo(config.lockme.venue_timezone)
    async with _database(config) as sessions, sessions() as session:
        actions = await list_door_actions(
            session,
            room_id=room.id if room else None,
            lock_id=lock_id,
            statuses=statuses,
            start=start,
            end=end,
        )
        for action in actions:
            command = (
                await session.get(Command, action.command_id) if action.command_id else None
            )
            tz = zones.get(action.room_id, default_tz)
            rows.append(
                {
                    "key": action.key,
                    "room": action.room_id,
                    "lock": action.lock_id,
                    "kind": action.kind.value,
                    "planned_at": _utc(action.planned_at),
                    "planned_local": _local(action.planned_at, tz),
                    "status": action.status.value,
                    "reservations": list(action.reservation_ids),
                    "reason": action.reason,
                    "command": None
                    if command is None
                    else {
                        "id": command.id,
                        "action": command.action.value,
                        "state": command.state.value,
                        "reason": command.reason.value if command.reason else None,
                        "transport": command.transport,
                        "confirmed_at": _utc(command.confirmed_at),
                    },
                }
            )
    return rows


def _plan_table(data: list[dict[str, Any]]) -> Table:
    table = Table(title="Door plan (venue-local time)")
    for column in ("when", "room", "lock", "action", "status", "bookings", "command"):
        table.add_column(column)
    for row in data:
        cmd = row["command"]
        table.add_row(
            row["planned_local"],
            str(row["room"]),
            row["lock"],
            row["kind"],
            row["status"],
            ", ".join(str(r) for r in row["reservations"]),
            "—" if cmd is None else f"{cmd['action']} {cmd['state']}",
        )
    return table


# --------------------------------------------------------------------------- events


def events(
    config_path: ConfigOpt = DEFAULT_CONFIG,
    room: Annotated[str | None, typer.Option(help="Events of this room's locks.")] = None,
    lock: Annotated[str | None, typer.Option(help="Events of this lock.")] = None,
    since: Annotated[
        str, typer.Option(help="A duration back from now (30m, 24h, 7d) or an ISO date/time.")
    ] = "24h",
    until: Annotated[str | None, typer.Option(help="End (same forms as --since).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 200,
    as_json: JsonOpt = False,
) -> None:
    """Lock events (bolt moves, battery, online) linked to commands and reservations."""
    out = make_output(as_json)
    with handle_errors(out):
        config = load_cli_config(config_path)
        tz = ZoneInfo(config.lockme.venue_timezone)
        now = _now()
        start = parse_moment(since, now=now, tz=tz)
        end = parse_moment(until, now=now, tz=tz) if until is not None else None
        room_cfg = _find_room(config, room) if room is not None else None
        lock_id = _find_lock(config, lock) if lock is not None else None
        data = _run(_events(config, room_cfg, lock_id, start, end, limit))
        out.emit(data, lambda d: _events_table(d, tz))


async def _events(
    config: Config,
    room: RoomConfig | None,
    lock_id: str | None,
    start: dt.datetime,
    end: dt.datetime | None,
    limit: int,
) -> list[dict[str, Any]]:
    from roomkey.service.db.events import list_events

    async with _database(config) as sessions, sessions() as session:
        found = await list_events(
            session,
            lock_id=lock_id,
            room_id=room.id if room else None,
            start=start,
            end=end,
            limit=limit,
        )
    found.reverse()  # oldest first
    return [
        {
            "id": e.id,
            "lock": e.lock_id,
            "source": e.source.value,
            "event_type": e.event_type,
            "kind": e.kind,
            "bolt_state": e.bolt_state,
            "key_local_id": e.key_local_id,
            "occurred_at": _utc(e.occurred_at),
            "received_at": _utc(e.received_at),
            "command_id": e.command_id,
            "reservation_id": e.reservation_id,
        }
        for e in found
    ]


def _events_table(data: list[dict[str, Any]], tz: ZoneInfo) -> Table:
    table = Table(title="Lock events (venue-local time)")
    for column in ("received", "lock", "source", "event", "state", "key", "command", "booking"):
        table.add_column(column)
    for e in data:
        table.add_row(
            _local(dt.datetime.fromisoformat(e["received_at"]), tz),
            e["lock"] or "?",
            e["source"],
            e["event_type"],
            e["bolt_state"] or "",
            "" if e["key_local_id"] is None else str(e["key_local_id"]),
            (e["command_id"] or "")[:8],
            "" if e["reservation_id"] is None else str(e["reservation_id"]),
        )
    return table


# --------------------------------------------------------------------------- sync


def sync(
    config_path: ConfigOpt = DEFAULT_CONFIG,
    days: Annotated[
        int | None,
        typer.Option(min=1, max=366, help="Days ahead (default: [service] reconcile_days_ahead)."),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Run even if another replica holds the reconciliation lease.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-read every room's reservations from Lockme and heal the mirror and the plan."""
    out = make_output(as_json)
    with handle_errors(out):
        config = load_cli_config(config_path)
        from roomkey.service.crypto import SecretBox

        box = SecretBox.from_env()
        report = _run(_sync(config, box, days, force, out))
        data = report.as_dict()
        out.emit(data, _sync_text)
        if not report.ran:
            fail(
                f"reconciliation did not run: {report.reason or 'unknown reason'}",
                hint="another replica is reconciling; wait or pass --force",
            )
        if report.failures:
            fail(
                f"{len(report.failures)} Lockme read(s) failed: "
                + "; ".join(report.failures[:3]),
                ExitCode.UNREACHABLE,
            )


async def _sync(config: Config, box: Any, days: int | None, force: bool, out: Output) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from roomkey.service.db.migrate import current_revision, head_revision
    from roomkey.service.reconcile import ReconcileProgress
    from roomkey.service.runtime import Service

    revision = await current_revision(config.service.db_url())
    if revision != head_revision():
        fail(
            "the database is not initialised or not at this roomkey's schema",
            ExitCode.DATABASE,
            hint="run `roomkey db upgrade`",
        )
    service = Service(
        config, secret_box=box, instance_id=f"cli-sync-{os.getpid()}", load_optional_workers=False
    )
    show = not out.json and out.err.is_terminal
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=out.err,
        disable=not show,
        transient=False,
    )
    task = progress.add_task("reading reservations", total=None)

    def on_progress(p: ReconcileProgress) -> None:
        progress.update(
            task,
            completed=p.done,
            total=p.total,
            description=f"room {p.room_id} {p.date.isoformat()}",
        )
        if p.error:
            out.note(f"room {p.room_id} {p.date.isoformat()}: {p.error}")

    try:
        await service.sync_inventory()
        with progress:
            return await service.reconcile(progress=on_progress, days_ahead=days, force=force)
    finally:
        await service.aclose()


def _sync_text(data: dict[str, Any]) -> str:
    if not data["ran"]:
        return f"not run: {data['reason']}"
    return (
        f"read {len(data['rooms'])} room(s) × {data['days']} day(s): "
        f"{len(data['added'])} added, {len(data['changed'])} changed, "
        f"{len(data['deleted'])} deleted, {len(data['failures'])} failed read(s), "
        f"{data['rearmed_messages']} message(s) re-armed"
    )


# --------------------------------------------------------------------------- manual doors


ActorOpt = Annotated[
    str | None,
    typer.Option(help="Who does this, for the audit log (default: $USER)."),
]
WaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait", help="Wait for the lock to confirm (default) or return once sent."
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option(min=0.1, max=3600, help="Seconds to wait for the lock's confirmation."),
]
RoomArg = Annotated[str, typer.Argument(help="Room: Lockme room id or name.")]


def _manual_command(action: str) -> Any:
    def command(
        room: RoomArg,
        config_path: ConfigOpt = DEFAULT_CONFIG,
        actor: ActorOpt = None,
        wait: WaitOpt = True,
        timeout: TimeoutOpt = 60.0,
        as_json: JsonOpt = False,
    ) -> None:
        out = make_output(as_json)
        with handle_errors(out):
            config = load_cli_config(config_path)
            who = (actor if actor is not None else _default_actor()).strip()
            if not who:
                raise typer.BadParameter("must not be empty", param_hint="--actor")
            _find_room(config, room)
            data = _run(_manual(config, room, action, who, wait, timeout))
            out.emit(data, _manual_text)
            _manual_exit(data, wait)

    command.__doc__ = {
        "open": "Open a room's door(s) once (pull the latch), audited.",
        "unlock": "Unlock a room's door(s) (day lock: opens with the handle), audited.",
        "lock": "Lock a room's door(s) (the room's lock action), audited.",
    }[action]
    return command


async def _manual(
    config: Config, room: str, action: str, actor: str, wait: bool, wait_seconds: float
) -> dict[str, Any]:
    from roomkey.service.clock import SystemClock
    from roomkey.service.db.models import Lock
    from roomkey.service.executor import LoqedContext
    from roomkey.service.manual import (
        ManualError,
        UnknownRoomError,
        manual_action,
        resolve_room,
        wait_for_commands,
    )

    async with _database(config) as sessions:
        ctx = LoqedContext(
            config=config,
            sessions=sessions,
            clock=SystemClock(),
            owner=f"cli-{actor[:40]}-{os.getpid()}",
        )
        try:
            cfg = resolve_room(ctx, room)
        except UnknownRoomError as exc:
            raise CliError(str(exc), ExitCode.NOT_FOUND) from None
        async with sessions() as session:
            missing = [lid for lid in cfg.locks if await session.get(Lock, lid) is None]
        if missing:
            fail(
                f"lock(s) {', '.join(missing)} are not in the database yet",
                ExitCode.DATABASE,
                hint="start `roomkey serve` once with this configuration (it syncs rooms and "
                "locks)",
            )
        try:
            results = await manual_action(ctx, cfg.id, action, actor=actor, send=True)
        except ManualError as exc:
            raise CliError(str(exc), ExitCode.FAILURE) from None
        states: dict[str, str] = {r.command_id: r.state for r in results}
        reasons: dict[str, str | None] = {r.command_id: r.reason for r in results}
        if wait:
            final = await wait_for_commands(ctx, list(states), within=wait_seconds, poll=0.25)
            from roomkey.service.db.commands import get_command

            async with sessions() as session:
                for command_id in states:
                    row = await get_command(session, command_id)
                    if row is not None:
                        states[command_id] = row.state.value
                        reasons[command_id] = row.reason.value if row.reason else None
                    elif command_id in final:
                        states[command_id] = final[command_id].value
    return {
        "room": cfg.id,
        "action": action,
        "actor": actor,
        "waited": wait,
        "commands": [
            {
                "lock": r.lock_id,
                "command_id": r.command_id,
                "command": r.command,
                "decision": r.decision,
                "state": states[r.command_id],
                "reason": reasons[r.command_id],
            }
            for r in results
        ],
    }


def _manual_text(data: dict[str, Any]) -> str:
    lines = [f"{data['action']} room {data['room']} (by {data['actor']}):"]
    for c in data["commands"]:
        reason = f" ({c['reason']})" if c["reason"] else ""
        lines.append(f"  lock {c['lock']}: {c['command']} → {c['state']}{reason}")
    return "\n".join(lines)


_FAILED_STATES = {"failed", "expired", "superseded"}


def _manual_exit(data: dict[str, Any], wait: bool) -> None:
    commands = data["commands"]
    failed = [c for c in commands if c["state"] in _FAILED_STATES]
    if failed:
        if all(c["reason"] == "unreachable" for c in failed):
            fail(
                "the lock could not be reached: "
                + ", ".join(c["lock"] for c in failed),
                ExitCode.UNREACHABLE,
            )
        fail(
            "door command failed: "
            + ", ".join(f"{c['lock']} {c['state']} ({c['reason'] or 'no reason'})" for c in failed),
            ExitCode.DOOR_FAILED,
        )
    if wait and any(c["state"] != "confirmed" for c in commands):
        fail(
            "not confirmed by the lock in time: "
            + ", ".join(f"{c['lock']} {c['state']}" for c in commands if c["state"] != "confirmed"),
            ExitCode.NOT_CONFIRMED,
            hint="is `roomkey serve` running and receiving the lock's webhooks? "
            "check with `roomkey events --lock LOCK`",
        )


# --------------------------------------------------------------------------- demo


def demo(
    run_for: Annotated[
        float | None,
        typer.Option("--for", min=0.5, help="Stop by itself after SECONDS (real time)."),
    ] = None,
    warp: Annotated[
        float, typer.Option(min=1.0, max=3600.0, help="Simulated seconds per real second.")
    ] = 120.0,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="roomkey's loopback port (0: a free one).")
    ] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the booking traffic and lock timings.")] = 1,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Keep the demo's SQLite database here (default: a temp directory)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run roomkey with both simulators and booking traffic at time warp, narrating live."""
    from roomkey.service.demo import DemoOptions, run_demo

    out = make_output(as_json)
    with handle_errors(out):
        options = DemoOptions(
            run_for=run_for, warp=warp, port=port, seed=seed, data_dir=data_dir
        )
        summary = run_demo(options, console=out.err if out.json else out.console, plain=None)
        out.emit(summary.as_dict(), lambda s: summary.render())
        if summary.failed_to_start:
            raise typer.Exit(int(ExitCode.FAILURE))


# --------------------------------------------------------------------------- registration


def register(app: typer.Typer, sim_app: typer.Typer) -> None:
    """Add the service commands to the main app."""
    del sim_app
    app.command("serve")(serve)
    app.command("demo")(demo)
    db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
    db_app.command("upgrade")(db_upgrade)
    app.add_typer(db_app, name="db")
    app.command("rooms")(rooms)
    app.command("locks")(locks)
    app.command("plan")(plan)
    app.command("events")(events)
    app.command("sync")(sync)
    for action in ("open", "unlock", "lock"):
        app.command(action)(_manual_command(action))
    key_app = typer.Typer(help="ROOMKEY_SECRET_KEY management.", no_args_is_help=True)
    key_app.command("generate")(secret_key_generate)
    app.add_typer(key_app, name="secret-key")
