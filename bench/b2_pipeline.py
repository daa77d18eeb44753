"""Benchmark 2 — message pipeline: webhook → fetched → applied + planned → marked read.

The Lockme simulator runs on loopback (load CPU) and answers every API call after 50 ms (its
latency fault). N bookings are made on it at once; each becomes an ``add`` message that the
simulator delivers as a webhook. Measured: messages per second from the first booking to the
last mark-read, for

* **roomkey** — ``bench.servers roomkey``: the real service (receiver, durable insert, message
  worker with its configured concurrency toward Lockme), and
* **naive** — ``bench.servers naive``: one message at a time, the WordPress plugin's way
  (fetch, apply, mark read, next), applying with the same mirror + re-plan code.

Both run pinned to :data:`~bench.common.SERVER_CPU` with a fresh SQLite database. The
simulator counts API requests in flight on its side; the peak must never exceed the
configured concurrency. Target: roomkey ≥ 20× the naive consumer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

from bench.common import PYTHON, BenchResult, ServerProcess, free_port, scratch
from bench.simworld import LockmeWorld, venue_rooms
from bench.world import LOCKME_SECRET, offline_lock, write_venue

NAME = "pipeline"
RATIO_TARGET = 20.0
LATENCY_S = 0.05
CONCURRENCY = 32
"""The concurrency toward Lockme the benchmark configures (when roomkey has the setting)."""


def concurrency_setting() -> tuple[str, str] | None:
    """Where roomkey's config takes the message worker's concurrency toward Lockme, if it
    has such a key yet: ``(section, key)``."""
    from roomkey.service.config import LockmeConfig, ServiceConfig

    for section, model in (("lockme", LockmeConfig), ("service", ServiceConfig)):
        for key, info in model.model_fields.items():
            if info.annotation is int and ("concurren" in key or "in_flight" in key):
                return section, key
    return None


async def _variant(
    kind: str, messages: int, rooms: int, tmp: Path, *, within: float
) -> dict[str, Any]:
    world = LockmeWorld(rooms, latency=LATENCY_S)
    await world.start()
    server: ServerProcess | None = None
    try:
        locks = [offline_lock(i) for i in range(rooms)]
        setting = concurrency_setting()
        service_extra: dict[str, Any] = {}
        lockme_extra: dict[str, Any] = {}
        if setting is not None:
            (service_extra if setting[0] == "service" else lockme_extra)[setting[1]] = CONCURRENCY
        venue = write_venue(
            tmp / kind,
            locks=locks,
            rooms=venue_rooms(world.room_ids, [lock.roomkey_id for lock in locks]),
            lockme_url=world.url,
            service=service_extra,
        )
        if lockme_extra:
            _add_lockme_keys(venue.config_path, lockme_extra)
        world.save_token(venue)
        port = free_port()
        server = ServerProcess(
            [
                PYTHON,
                "-m",
                "bench.servers",
                kind,
                "--port",
                str(port),
                "--config",
                str(venue.config_path),
            ],
            port=port,
            env=venue.env,
            log_path=tmp / f"{kind}.log",
            ready_path="/ready" if kind == "roomkey" else "/health",
        )
        await asyncio.to_thread(server.start)
        world.point_webhooks_at(f"{server.url}/hooks/lockme/{LOCKME_SECRET}")
        await world.inflight.wait_quiet(0.5)  # start-up reconciliation done
        world.inflight.reset()
        first_day = dt.date.today() + dt.timedelta(days=3)
        t0 = time.time()
        booked = []
        for n in range(messages):
            room = world.room_ids[n % rooms]
            slot = n // rooms
            day = first_day + dt.timedelta(days=slot // 8)
            booked.append(
                world.sim.book(
                    room, day, f"{10 + slot % 8:02d}:00:00", source="panel", status=1, name="Guest"
                )
            )
        wanted = {m.id for m in world.sim.messages() if m.reservationid in set(booked)}
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if all(world.sim.message(mid).read for mid in wanted):
                break
            await asyncio.sleep(0.02)
        read_at = [world.sim.message(mid).read_at for mid in wanted]
        done = [t for t in read_at if t is not None]
        finished = max(world.inflight.marked_read.values(), default=None)
        elapsed = (finished - t0) if finished is not None and len(done) == len(wanted) else None
        return {
            "messages": len(wanted),
            "read": len(done),
            "seconds": elapsed,
            "msgs_per_s": len(wanted) / elapsed if elapsed else None,
            "peak_in_flight": world.inflight.peak,
            "api_requests": world.inflight.total,
            "configured_concurrency": CONCURRENCY if setting else None,
            "concurrency_key": ".".join(setting) if setting else None,
            "timed_out": len(done) < len(wanted),
        }
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
        await world.aclose()


def _add_lockme_keys(path: Path, values: dict[str, Any]) -> None:
    text = path.read_text(encoding="utf-8")
    lines = "".join(f"{k} = {v!r}\n" for k, v in values.items())
    path.write_text(text.replace("[lockme]\n", "[lockme]\n" + lines, 1), encoding="utf-8")


async def _run(short: bool) -> BenchResult:
    result = BenchResult(NAME)
    rooms = 4 if short else 40
    # A burst of 1,000 webhooks: several seconds at roomkey's rate, so the figure is the
    # sustained rate, not the ramp (200 gave the same rate in the 2026-11-22 runs).
    n_roomkey = 8 if short else 1000
    n_naive = 4 if short else 100
    with scratch("roomkey-bench-pipeline-") as tmp:
        naive = await _variant("naive", n_naive, rooms, tmp, within=n_naive * 0.5 + 30)
        ours = await _variant("roomkey", n_roomkey, rooms, tmp, within=240)
    result.details = {"latency_s": LATENCY_S, "naive": naive, "roomkey": ours}
    result.add(
        "roomkey msgs/s (webhook → marked read)",
        ours["msgs_per_s"],
        "msg/s",
        note=f"{ours['read']}/{ours['messages']} messages",
    )
    result.add(
        "naive one-at-a-time msgs/s",
        naive["msgs_per_s"],
        "msg/s",
        note=f"{naive['read']}/{naive['messages']} messages",
    )
    ratio = (
        ours["msgs_per_s"] / naive["msgs_per_s"]
        if ours["msgs_per_s"] and naive["msgs_per_s"]
        else None
    )
    result.add(
        "roomkey ÷ naive",
        ratio,
        "×",
        target=f"≥ {RATIO_TARGET:g}",
        met=None if ratio is None else ratio >= RATIO_TARGET,
    )
    configured = ours["configured_concurrency"]
    result.add(
        "peak requests in flight at Lockme (roomkey)",
        ours["peak_in_flight"],
        "requests",
        target=f"≤ {configured}" if configured else "≤ configured",
        met=ours["peak_in_flight"] <= configured if configured else None,
        note=f"config key {ours['concurrency_key']}"
        if configured
        else "roomkey has no concurrency setting yet",
    )
    result.add("peak requests in flight at Lockme (naive)", naive["peak_in_flight"], "requests")
    return result


def run(*, short: bool) -> BenchResult:
    return asyncio.run(_run(short))
