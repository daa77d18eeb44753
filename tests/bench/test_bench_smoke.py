"""Smoke check of the benchmarks: ``python -m bench.run --short`` runs all five and reports.

No timing assertions: the numbers depend on the machine. What is checked is that every
benchmark ran to the end, produced its table rows and JSON, and that the functional facts
measured along the way hold (every webhook answered 2xx, every message marked read, every
reservation stored and planned, the concurrency toward Lockme within its configured bound).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
NAMES = {"intake", "pipeline", "reaction", "scale", "footprint"}
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _pg_url() -> str:
    url = os.environ.get("ROOMKEY_TEST_PG_URL", DEFAULT_PG_URL)
    try:
        import psycopg
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        with psycopg.connect(
            host=parsed.host or "127.0.0.1",
            port=parsed.port or 5432,
            user=parsed.username or "postgres",
            password=parsed.password,
            dbname=parsed.database or "postgres",
            connect_timeout=3,
        ):
            return url
    except Exception:
        if os.environ.get("ROOMKEY_REQUIRE_PG") == "1":
            raise
        return "none"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "short.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--short", "--out", str(out), "--pg-url", _pg_url()],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    data["stdout"] = done.stdout
    return data


def _result(report: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in report["results"] if r["name"] == name)
    return found


@pytest.mark.timeout(300)
def test_all_five_run_and_report(report: dict[str, Any]) -> None:
    assert {r["name"] for r in report["results"]} == NAMES
    assert report["short"] is True
    assert report["machine"]["cpus"] >= 1
    for result in report["results"]:
        assert result["error"] is None, result["error"]
        assert result["rows"], result["name"]
        for row in result["rows"]:
            assert row["unit"]
            assert row["metric"] in report["stdout"]


@pytest.mark.timeout(300)
def test_intake_every_webhook_answered(report: dict[str, Any]) -> None:
    details = _result(report, "intake")["details"]
    for hook in ("lockme", "loqed"):
        for kind in ("bare", "roomkey"):
            run = details[hook][kind]
            assert run["requests"] > 0
            assert run["non_2xx"] == 0, (hook, kind)


@pytest.mark.timeout(300)
def test_pipeline_marks_every_message_read_within_concurrency(report: dict[str, Any]) -> None:
    details = _result(report, "pipeline")["details"]
    for kind in ("naive", "roomkey"):
        run = details[kind]
        assert run["messages"] > 0
        assert run["read"] == run["messages"], kind
    assert details["naive"]["peak_in_flight"] == 1
    configured = details["roomkey"]["configured_concurrency"]
    if configured is not None:
        assert details["roomkey"]["peak_in_flight"] <= configured


@pytest.mark.timeout(300)
def test_reaction_measures_bookings_and_doors(report: dict[str, Any]) -> None:
    details = _result(report, "reaction")["details"]["under_load"]
    assert details["bookings"] > 0
    assert details["door_actions"] > 0
    assert details["load"]["requests"] > 0


@pytest.mark.timeout(300)
def test_scale_stores_and_plans_every_reservation(report: dict[str, Any]) -> None:
    details = _result(report, "scale")["details"]
    for backend in ("sqlite", "postgresql"):
        for size, run in details.get(backend, {}).items():
            assert "error" not in run, (backend, size, run)
            assert run["reservations"] == int(size)
            assert run["door_actions"] >= run["reservations"]
            assert run["peak_rss_mb"] > 0


@pytest.mark.timeout(300)
def test_footprint_reaches_ready(report: dict[str, Any]) -> None:
    details = _result(report, "footprint")["details"]
    first = details["first start (migrates)"]
    assert first["ready_s"] > 0
    assert first["idle_rss_mb"] > 0
