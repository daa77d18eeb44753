"""The README's main command: ``roomkey demo --for 8`` as a real process, CI-style (no TTY)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(150)


def _roomkey() -> list[str]:
    script = Path(sys.executable).with_name("roomkey")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from roomkey.cli.app import main; main()"]


def test_demo_runs_for_eight_seconds_and_a_lock_confirms_a_move(tmp_path: Path) -> None:
    env = {**os.environ, "CI": "true", "NO_COLOR": "1"}
    env.pop("ROOMKEY_SECRET_KEY", None)  # the demo generates one
    result = subprocess.run(
        [*_roomkey(), "demo", "--for", "8", "--data-dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    log = result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "Traceback" not in log
    # The narration (stderr when stdout is not a terminal) shows the whole chain …
    assert "← Lockme webhook 'add'" in log
    assert "planned: unlock" in log
    assert "DAY_LOCK (planned, signed, via bridge)" in log
    assert "GO_TO_STATE" in log
    assert "STATE_CHANGED" in log
    assert "✓ confirmed by the lock" in log
    # … and stdout carries only the JSON summary.
    summary = json.loads(result.stdout)
    assert summary["commands"]["confirmed"] >= 1
    assert summary["commands_received_by_locks"] >= summary["commands"]["confirmed"]
    assert summary["lockme_messages"]["processed"] >= 3
    # Secrets never reach the terminal; the demo's data stays where it was asked to be.
    assert "roomkey-demo-secret" not in log + result.stdout
    assert (tmp_path / "demo" / "demo.sqlite3").exists()
    assert (tmp_path / "demo" / "roomkey.log").exists()


def test_demo_stops_on_ctrl_c_with_a_summary_and_exit_0(tmp_path: Path) -> None:
    env = {**os.environ, "CI": "true"}
    proc = subprocess.Popen(
        [*_roomkey(), "demo", "--data-dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (tmp_path / "demo" / "demo.sqlite3").exists():
            time.sleep(0.2)
        time.sleep(3)  # let it run a little
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    summary = json.loads(out)
    assert summary["lockme_messages"]["received"] >= 1
    assert summary["real_seconds"] > 0
