"""Benchmark 5 — footprint: idle ``roomkey serve`` RSS and start-up-to-ready time.

``roomkey serve`` (the installed console script, exactly as an operator runs it) is started
pinned to :data:`~bench.common.SERVER_CPU` on a venue of 8 rooms / 8 locks with embedded
SQLite. Ready = ``GET /ready`` answers 200 (database reachable, schema at head, workers
running). Measured twice: a first start on an empty data directory (creates the database and
runs the migrations) and a restart on the now-migrated database. The RSS is read from
``/proc`` after the service has been idle for a while.

Targets: idle RSS ≤ 150 MB; start-up to ready ≤ 2 s.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from bench.common import BenchResult, ServerProcess, free_port, rss_mb, scratch
from bench.world import offline_lock, write_venue

NAME = "footprint"
RSS_TARGET_MB = 150.0
READY_TARGET_S = 2.0


def _roomkey_cli() -> str:
    import sys

    local = Path(sys.executable).with_name("roomkey")
    if local.exists():
        return str(local)
    found = shutil.which("roomkey")
    if found is None:
        raise RuntimeError("the roomkey console script is not installed")
    return found


def run(*, short: bool) -> BenchResult:
    result = BenchResult(NAME)
    idle = 1.0 if short else 5.0
    locks = [offline_lock(i) for i in range(8)]
    rooms = [(2000 + i, f"Room {i}", [lock.roomkey_id]) for i, lock in enumerate(locks)]
    details: dict[str, object] = {"idle_seconds": idle}
    with scratch("roomkey-bench-footprint-") as tmp:
        venue = write_venue(Path(tmp), locks=locks, rooms=rooms)
        starts = ["first start (migrates)", "restart"]
        for start in starts[:1] if short else starts:
            port = free_port()
            server = ServerProcess(
                [
                    _roomkey_cli(),
                    "serve",
                    "--config",
                    str(venue.config_path),
                    "--port",
                    str(port),
                    "--log-format",
                    "json",
                ],
                port=port,
                env=venue.env,
                log_path=Path(tmp) / "serve.log",
                ready_path="/ready",
            )
            ready = server.start(timeout=60)
            try:
                time.sleep(idle)
                rss = rss_mb(server.pid)
            finally:
                server.stop()
            details[start] = {"ready_s": ready, "idle_rss_mb": rss}
            result.add(
                f"start-up to /ready, {start}",
                ready,
                "s",
                target=f"≤ {READY_TARGET_S:g}",
                met=ready <= READY_TARGET_S,
            )
            result.add(
                f"idle RSS after {start}",
                rss,
                "MB",
                target=f"≤ {RSS_TARGET_MB:g}",
                met=None if rss is None else rss <= RSS_TARGET_MB,
            )
    result.details = details
    return result
