"""Benchmark 1 — webhook intake: roomkey's receivers with their durable insert vs a bare endpoint.

Same uvicorn settings, same load generator, same run: the bare Starlette endpoint
(:func:`bench.servers.bare_app`) and roomkey's app are each started pinned to
:data:`~bench.common.SERVER_CPU` and loaded from :data:`~bench.common.LOAD_CPU` with

* Lockme webhooks (empty body, a new ``X-MessageId`` per request: each id is durably
  stored — group commit: one multi-row ``INSERT … ON CONFLICT DO NOTHING`` per batch of
  concurrent webhooks — before its answer), and
* signed LOQED bridge webhooks (``HASH``/``TIMESTAMP`` verified, a receipt stored the same
  way before the answer; the event applier folds the effects in right after) spread over 8
  locks.

Target: roomkey ≥ 0.5× the bare endpoint's requests/s and p99 ≤ 20 ms.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.common import PYTHON, BenchResult, ServerProcess, cpu_seconds, free_port, scratch
from bench.loadgen import LoadResult, LoadSpec, run_load
from bench.world import bridge_load, lockme_load, offline_lock, write_venue

NAME = "intake"
EXPERIMENT = "roomkey:pool1"
"""Not a target: roomkey's receivers on a SQLite pool of ONE connection, so concurrent
writers queue in asyncio instead of sleeping in SQLite's busy handler (see
docs/performance.md)."""
RATIO_TARGET = 0.5
P99_TARGET_MS = 20.0


def _measure(
    server: ServerProcess, spec: LoadSpec, *, duration: float, warmup: float, connections: int
) -> tuple[LoadResult, float | None, float | None]:
    """The load result, the server's CPU milliseconds per request during it and (roomkey
    only) the SQL statements per request."""
    _prime(server, spec)
    if warmup > 0:
        run_load(server.port, spec, duration=warmup, connections=connections)
    before, sql_before = cpu_seconds(server.pid), _sql(server)
    load = run_load(server.port, spec, duration=duration, connections=connections)
    after, sql_after = cpu_seconds(server.pid), _sql(server)
    per_request = sql = None
    if before is not None and after is not None and load.requests:
        per_request = (after - before) * 1000 / load.requests
    if sql_before is not None and sql_after is not None and load.requests:
        sql = (sql_after - sql_before) / load.requests
    return load, per_request, sql


def _prime(server: ServerProcess, spec: LoadSpec, count: int = 8) -> None:
    """A few requests one by one, so first-request costs (imports, caches) are not measured."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for n, req in zip(range(count), itertools.cycle(spec.requests), strict=False):
            headers = dict(req.headers)
            if spec.unique_header:
                headers[spec.unique_header] = f"{spec.unique_prefix}prime{n}"
            client.request(req.method, req.path, headers=headers, content=req.body)


def _sql(server: ServerProcess) -> int | None:
    try:
        answer = httpx.get(f"{server.url}/_bench/sql", timeout=10)
    except httpx.HTTPError:
        return None
    return int(answer.json()["statements"]) if answer.status_code == 200 else None


def run(*, short: bool) -> BenchResult:
    result = BenchResult(NAME)
    duration = 1.0 if short else 8.0
    warmup = 0.0 if short else 1.0
    connections = 32
    locks = [offline_lock(i) for i in range(8)]
    rooms = [(1000 + i, f"Room {i}", [lock.roomkey_id]) for i, lock in enumerate(locks)]
    with scratch("roomkey-bench-intake-") as tmp:
        venue = write_venue(tmp, locks=locks, rooms=rooms)
        timestamp = int(time.time())
        loads: dict[str, Callable[[str], LoadSpec]] = {
            "lockme": lambda tag: lockme_load(tag),
            "loqed": lambda _tag: bridge_load(locks, timestamp=timestamp),
        }
        measured: dict[str, dict[str, LoadResult]] = {}
        cpu: dict[str, dict[str, float | None]] = {}
        sql: dict[str, float | None] = {}
        kinds = ["bare", "roomkey"] if short else ["bare", "roomkey", EXPERIMENT]
        servers: dict[str, ServerProcess] = {}
        try:
            for kind in kinds:  # all up at once; only the one being loaded is busy
                port = free_port()
                args = [PYTHON, "-m", "bench.servers", kind.split(":")[0], "--port", str(port)]
                if kind != "bare":
                    kind_venue = (
                        venue
                        if kind == "roomkey"
                        else write_venue(tmp / "experiment", locks=locks, rooms=rooms)
                    )
                    args += [
                        "--config",
                        str(kind_venue.config_path),
                        "--receivers-only",
                        "--count-sql",
                    ]
                if kind == EXPERIMENT:
                    args += ["--pool", "1"]
                log = tmp / f"{kind.replace(':', '-')}.log"
                servers[kind] = ServerProcess(args, port=port, env=venue.env, log_path=log)
                servers[kind].start()
            # Interleaved (per hook: bare, roomkey, experiment), so a change in the
            # machine's background load hits both sides of each ratio alike.
            for hook, make in loads.items():
                for kind in kinds:
                    spec = make(f"{kind.replace(':', '-')}-{hook}-{int(time.time())}")
                    load, per_request, statements = _measure(
                        servers[kind],
                        spec,
                        duration=duration,
                        warmup=warmup,
                        connections=connections,
                    )
                    measured.setdefault(hook, {})[kind] = load
                    cpu.setdefault(hook, {})[kind] = per_request
                    if kind == "roomkey":
                        sql[hook] = statements
        finally:
            for server in servers.values():
                server.stop()
    details: dict[str, Any] = {"duration_s": duration, "connections": connections}
    for hook, pair in measured.items():
        bare, ours = pair["bare"], pair["roomkey"]
        cpu_bare, cpu_ours = cpu[hook]["bare"], cpu[hook]["roomkey"]
        details[hook] = {
            "bare": {**bare.as_dict(), "server_cpu_ms_per_request": cpu_bare},
            "roomkey": {
                **ours.as_dict(),
                "server_cpu_ms_per_request": cpu_ours,
                "sql_statements_per_request": sql.get(hook),
            },
        }
        ratio = ours.rps / bare.rps if bare.rps else None
        label = "Lockme" if hook == "lockme" else "LOQED bridge"
        result.add(f"{label} receiver req/s", ours.rps, "req/s", note=f"tool {ours.tool}")
        result.add(f"bare endpoint req/s ({hook} requests)", bare.rps, "req/s")
        result.add(
            f"{label} throughput ÷ bare",
            ratio,
            "×",
            target=f"≥ {RATIO_TARGET}",
            met=None if ratio is None else ratio >= RATIO_TARGET,
        )
        result.add(f"{label} receiver p50", ours.p50_ms, "ms")
        result.add(
            f"{label} receiver p99",
            ours.p99_ms,
            "ms",
            target=f"≤ {P99_TARGET_MS:g}",
            met=None if ours.p99_ms is None else ours.p99_ms <= P99_TARGET_MS,
            note=f"bare p50 {bare.p50_ms:.2f} / p99 {bare.p99_ms:.2f} ms"
            if bare.p50_ms is not None and bare.p99_ms is not None
            else "",
        )
        result.add(
            f"{label} server CPU per request",
            cpu_ours,
            "ms",
            note=(f"bare {cpu_bare:.3f} ms; " if cpu_bare is not None else "")
            + (f"{sql[hook]:.1f} SQL statements/request" if sql.get(hook) is not None else ""),
        )
        experiment = pair.get(EXPERIMENT)
        if experiment is not None:
            details[hook]["experiment_sqlite_pool_1"] = experiment.as_dict()
            result.add(
                f"experiment: {label} receiver req/s, 1-connection SQLite pool",
                experiment.rps,
                "req/s",
                note=f"{experiment.rps / bare.rps:.2f}× bare; p50 {experiment.p50_ms} / "
                f"p99 {experiment.p99_ms} ms"
                if bare.rps
                else "",
            )
        errors = ours.errors + ours.non_2xx
        if errors:
            result.add(f"{label} receiver errors/non-2xx", errors, "requests")
    result.details = details
    return result
