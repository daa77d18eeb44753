"""Run roomkey's benchmarks and print one table; the JSON goes to ``bench/results/``.

    .venv/bin/python -m bench.run              # all five, full size (a few minutes)
    .venv/bin/python -m bench.run --short      # smoke mode: tiny sizes, seconds
    .venv/bin/python -m bench.run --only intake --only scale

Every benchmark is bounded in count and time and stops by itself. Timing targets are shown as
met/missed; nothing here fails on a missed target (the numbers are the product).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import b1_intake, b2_pipeline, b3_reaction, b4_scale, b5_footprint
from bench.common import LOAD_CPU, REPO, BenchResult, Row, machine_info, pin_self, write_json

BENCHMARKS: dict[str, Callable[..., BenchResult]] = {
    b1_intake.NAME: b1_intake.run,
    b2_pipeline.NAME: b2_pipeline.run,
    b3_reaction.NAME: b3_reaction.run,
    b4_scale.NAME: b4_scale.run,
    b5_footprint.NAME: b5_footprint.run,
}
RESULTS = REPO / "bench" / "results"


def render_table(results: list[BenchResult]) -> str:
    """A plain-text table (also pasted into docs/performance.md)."""
    header = ("benchmark", "metric", "value", "unit", "target", "met")
    lines = [header]
    for res in results:
        if res.error:
            lines.append((res.name, "ERROR", res.error.splitlines()[-1][:60], "", "", ""))
        for row in res.rows:
            met = "" if row.met is None else ("yes" if row.met else "MISSED")
            lines.append((res.name, row.metric, row.shown(), row.unit, row.target or "", met))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def load_results(path: Path) -> list[BenchResult]:
    """The results of a run saved as JSON."""
    data = json.loads(path.read_text(encoding="utf-8"))
    results = []
    for item in data["results"]:
        res = BenchResult(item["name"], details=item["details"], error=item["error"])
        res.seconds = item["seconds"]
        res.rows = [Row(**row) for row in item["rows"]]
        results.append(res)
    return results


def render_markdown(results: list[BenchResult]) -> str:
    """The same table in Markdown (for docs/performance.md)."""
    lines = [
        "| Benchmark | Metric | Value | Target | Met | Note |",
        "| --- | --- | ---: | --- | --- | --- |",
    ]
    for res in results:
        if res.error:
            lines.append(f"| {res.name} | ERROR | | | | {res.error.splitlines()[-1][:80]} |")
        for row in res.rows:
            met = "" if row.met is None else ("yes" if row.met else "**missed**")
            value = f"{row.shown()} {row.unit}".strip()
            cells = [res.name, row.metric, value, row.target or "", met, row.note]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--short", action="store_true", help="smoke mode: tiny and fast")
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHMARKS), help="run only these"
    )
    parser.add_argument("--out", type=Path, help="JSON file (default: bench/results/<stamp>.json)")
    parser.add_argument(
        "--pg-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help="an existing PostgreSQL database to connect to; the scale benchmark creates and "
        "drops its own database next to it ('none' skips PostgreSQL)",
    )
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="print the Markdown table of a saved run"
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        print(render_markdown(load_results(args.render)))
        return 0
    pin_self(LOAD_CPU)
    names = args.only or list(BENCHMARKS)
    started = dt.datetime.now(dt.UTC)
    info = machine_info()
    results: list[BenchResult] = []
    for name in names:
        print(f"== {name}{' (short)' if args.short else ''}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
        try:
            kwargs: dict[str, object] = {"short": args.short}
            if name == b4_scale.NAME:
                kwargs["pg_url"] = None if args.pg_url == "none" else args.pg_url
            res = BENCHMARKS[name](**kwargs)
        except Exception as exc:
            res = BenchResult(name, error=f"{type(exc).__name__}: {exc}")
            traceback.print_exc()
        res.seconds = time.perf_counter() - t0
        if load_before is not None:
            res.details["load_average_before_after"] = [load_before, os.getloadavg()]
        results.append(res)
        print(f"   done in {res.seconds:.1f} s", file=sys.stderr, flush=True)
    table = render_table(results)
    print(table)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS / f"{stamp}{'-short' if args.short else ''}.json"
    write_json(
        out,
        {
            "started": started.isoformat(),
            "short": args.short,
            "machine": info,
            "results": [r.as_dict() for r in results],
            "table": table,
            "markdown": render_markdown(results),
        },
    )
    print(f"\nJSON: {out}", file=sys.stderr)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
