"""Benchmark 4 — scale: plan and store 100,000 reservations across 1,000 rooms and 1,500 locks.

The venue: 1,000 rooms, each with its own lock; rooms 2k and 2k+1 also share a back-door lock
(500 shared locks), so the planner merges windows across rooms on 500 locks. Bookings run
from tomorrow, six 60-minute slots a day two hours apart (door windows do not merge), odd
rooms one hour later than even ones (their windows do merge on the shared lock).

What is timed is the path the service itself takes for a batch of bookings (reconciliation,
``Reconciler._heal``): the reservations go through the mirror's bulk path
(``apply_snapshots``: one ``SELECT … FOR UPDATE`` and one ``INSERT … ON CONFLICT DO UPDATE``
per chunk) and then ``Service.replan_rooms`` plans the rooms the mirror reported as changed
(``plan_room`` + ``merge_lock_actions`` + ``diff_actions``) and stores door actions and door
windows in bulk; then commit. The same functions serve a single webhook (a set of one).
Reconciliation does this for the whole venue in one transaction; here the venue is streamed
in transactions of 20 rooms (2,000 reservations at 100k) so memory stays bounded — the
statements per reservation are the same either way, only the per-transaction fixed cost
(room scope, commit) is paid 50 times instead of once. Each size runs in a fresh process
pinned to :data:`~bench.common.SERVER_CPU`, so its peak RSS is its own; ``cpu_seconds`` is
that process's CPU time (roomkey, SQLAlchemy and the driver, and SQLite itself — not the
PostgreSQL server's).

Sizes: 1k / 10k / 100k reservations (1 / 10 / 100 per room), on SQLite and on PostgreSQL
(a database created for the run and dropped after). Target: 100k in ≤ 10 s with peak
RSS ≤ 300 MB; time should grow about linearly.

Run as a module it is the child that measures one size::

    python -m bench.b4_scale child --url URL --rooms 1000 --per-room 100 --workdir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import PYTHON, REPO, SERVER_CPU, BenchResult, taskset

NAME = "scale"
MARKER = "BENCHJSON "
TIME_TARGET_S = 10.0
RSS_TARGET_MB = 300.0
ROOMS_PER_TX = 20
SLOT_HOURS = (10, 12, 14, 16, 18, 20)


# --------------------------------------------------------------------------- the child


def _venue(rooms: int) -> tuple[list[Any], list[tuple[int, str, list[str]]]]:
    from bench.world import offline_lock

    own = [offline_lock(i) for i in range(rooms)]
    shared = [offline_lock(rooms + k) for k in range(rooms // 2)]
    room_specs = []
    for i in range(rooms):
        lock_ids = [own[i].roomkey_id]
        if i // 2 < len(shared):
            lock_ids.append(shared[i // 2].roomkey_id)
        room_specs.append((10_000 + i, f"Room {i}", lock_ids))
    return own + shared, room_specs


def _snapshots(room_id: int, index: int, per_room: int, first_day: dt.date) -> list[Any]:
    from roomkey.lockme.models import Reservation

    out = []
    offset = index % 2  # odd rooms an hour later: their windows merge on the shared lock
    for n in range(per_room):
        day = first_day + dt.timedelta(days=n // len(SLOT_HOURS))
        hour = SLOT_HOURS[n % len(SLOT_HOURS)] + offset
        rid = room_id * 1000 + n
        out.append(
            (
                rid,
                Reservation.model_validate(
                    {
                        "id": rid,
                        "roomid": room_id,
                        "date": day.isoformat(),
                        "hour": f"{hour:02d}:00:00",
                        "status": 1,
                        "source": "panel",
                        "duration": 60,
                        "name": "Guest",
                        "people": 4,
                        "time": "2026-01-01 10:00:00",
                    }
                ),
            )
        )
    return out


async def _child(url: str, rooms: int, per_room: int, workdir: Path) -> dict[str, Any]:
    from sqlalchemy import event, func, select

    from bench.world import write_venue
    from roomkey.service.clock import utc_now
    from roomkey.service.config import load_config
    from roomkey.service.crypto import SecretBox, generate_key
    from roomkey.service.db.migrate import upgrade_async
    from roomkey.service.db.models import DoorAction
    from roomkey.service.mirror import SnapshotInput, apply_snapshots
    from roomkey.service.runtime import Service

    locks, room_specs = _venue(rooms)
    venue = write_venue(workdir, locks=locks, rooms=room_specs, database_url=url)
    config = load_config(venue.config_path)
    t_setup = time.perf_counter()
    await upgrade_async(config.service.db_url())
    service = Service(config, secret_box=SecretBox([generate_key()]), load_optional_workers=False)
    statements = [0]

    def count(*_args: Any) -> None:
        statements[0] += 1

    event.listen(service.engine.sync_engine, "before_cursor_execute", count)
    try:
        await service.sync_inventory()
        setup_s = time.perf_counter() - t_setup
        statements[0] = 0
        first_day = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
        batches = [room_specs[i : i + ROOMS_PER_TX] for i in range(0, rooms, ROOMS_PER_TX)]
        stored = 0
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        for batch in batches:
            now = utc_now(service.clock)
            items = [
                SnapshotInput(rid, room_id, snap)
                for room_id, _name, _locks in batch
                for rid, snap in _snapshots(room_id, room_id - 10_000, per_room, first_day)
            ]
            async with service.session_factory() as session, session.begin():
                results = await apply_snapshots(session, items, now=now)
                rooms_changed = {room for result in results for room in result.rooms}
                await service.replan_rooms(session, rooms_changed, now=now)
            stored += len(items)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        sql = statements[0]
        async with service.session_factory() as session:
            actions = int(await session.scalar(select(func.count()).select_from(DoorAction)) or 0)
    finally:
        await service.aclose()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "reservations": stored,
        "rooms": rooms,
        "locks": len(locks),
        "door_actions": actions,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "sql_statements": sql,
        "setup_seconds": setup_s,
        "peak_rss_mb": peak_kb / 1024,
    }


# --------------------------------------------------------------------------- PostgreSQL


def _pg_admin(url: str, sql: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    with psycopg.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 5432,
        user=parsed.username or "postgres",
        password=parsed.password,
        dbname=parsed.database or "postgres",
        autocommit=True,
        connect_timeout=5,
    ) as conn:
        conn.execute(sql.encode())


def _pg_database(admin_url: str) -> tuple[str, str]:
    from sqlalchemy.engine import make_url

    name = f"roomkey_bench_{uuid.uuid4().hex[:10]}"
    _pg_admin(admin_url, f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    return name, url


def _pg_drop(admin_url: str, name: str) -> None:
    _pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------- the benchmark


def _measure(url: str, rooms: int, per_room: int, *, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="roomkey-bench-scale-") as tmp:
        args = [
            *taskset(SERVER_CPU),
            PYTHON,
            "-m",
            "bench.b4_scale",
            "child",
            "--url",
            url.replace("{dir}", tmp),
            "--rooms",
            str(rooms),
            "--per-room",
            str(per_room),
            "--workdir",
            tmp,
        ]
        try:
            done = subprocess.run(
                args, capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False
            )
        except subprocess.TimeoutExpired:
            return {"error": f"did not finish within {timeout:.0f} s", "timed_out": True}
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            data: dict[str, Any] = json.loads(line[len(MARKER) :])
            return data
    return {"error": f"exit {done.returncode}: {done.stderr.strip()[-400:]}"}


def run(*, short: bool, pg_url: str | None = None) -> BenchResult:
    result = BenchResult(NAME)
    if short:
        rooms, sizes = 10, [2]
    else:
        rooms, sizes = 1000, [1, 10, 100]
    timeout = 120.0 if short else 1200.0
    backends: list[tuple[str, str | None]] = [("sqlite", "sqlite+aiosqlite:///{dir}/scale.sqlite3")]
    if pg_url:
        backends.append(("postgresql", pg_url))
    details: dict[str, Any] = {"rooms": rooms, "rooms_per_transaction": ROOMS_PER_TX}
    for backend, url in backends:
        runs: dict[str, Any] = {}
        pg_name = None
        for per_room in sizes:
            try:
                if backend == "postgresql":
                    assert url is not None
                    pg_name, run_url = _pg_database(url)
                else:
                    assert url is not None
                    run_url = url
            except Exception as exc:
                runs[str(rooms * per_room)] = {"error": f"no PostgreSQL: {exc}"}
                break
            try:
                data = _measure(run_url, rooms, per_room, timeout=timeout)
            finally:
                if pg_name is not None and url is not None:
                    _pg_drop(url, pg_name)
                    pg_name = None
            runs[str(rooms * per_room)] = data
            if "error" in data:
                break
        details[backend] = runs
        _rows(result, backend, runs, largest=rooms * sizes[-1])
    result.details = details
    return result


def _rows(result: BenchResult, backend: str, runs: dict[str, Any], *, largest: int) -> None:
    done = {int(k): v for k, v in runs.items() if "error" not in v}
    for size, data in sorted(done.items()):
        is_target = size == 100_000
        result.add(
            f"{backend}: {size:,} reservations planned + stored",
            data["seconds"],
            "s",
            target=f"≤ {TIME_TARGET_S:g}" if is_target else None,
            met=data["seconds"] <= TIME_TARGET_S if is_target else None,
            note=f"{data['door_actions']:,} door actions, "
            f"{data['reservations'] / data['seconds']:,.0f} res/s, "
            f"{data['sql_statements'] / data['reservations']:.3f} SQL statements/res, "
            f"{1000 * data['cpu_seconds'] / data['reservations']:.3f} ms CPU/res"
            " (benchmark process: roomkey + driver)",
        )
        result.add(
            f"{backend}: {size:,} peak RSS",
            data["peak_rss_mb"],
            "MB",
            target=f"≤ {RSS_TARGET_MB:g}" if is_target else None,
            met=data["peak_rss_mb"] <= RSS_TARGET_MB if is_target else None,
        )
    sizes = sorted(done)
    if len(sizes) >= 2:
        small, big = sizes[0], sizes[-1]
        growth = (done[big]["seconds"] / done[small]["seconds"]) / (big / small)
        result.add(
            f"{backend}: time growth {small:,}→{big:,} ÷ linear",
            growth,
            "×",
            note="1.0 = exactly linear",
        )
    for key, failed in runs.items():
        if "error" in failed:
            result.add(f"{backend}: {int(key):,} reservations", None, "s", note=failed["error"])
            if int(key) == largest:
                result.rows[-1].target = f"≤ {TIME_TARGET_S:g}"
                result.rows[-1].met = False


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.b4_scale")
    parser.add_argument("mode", choices=["child"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rooms", type=int, required=True)
    parser.add_argument("--per-room", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    from roomkey.service.gc_tuning import tune_gc

    tune_gc()  # the child stands in for a `roomkey serve` process doing a full resync
    data = asyncio.run(_child(args.url, args.rooms, args.per_room, args.workdir))
    sys.stdout.write(MARKER + json.dumps(data) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
