"""``roomkey serve`` as a real process: migrates, serves /health, /ready and the webhooks on
loopback, logs JSON lines on stderr (not a terminal), stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cli_support import CLIENT_SECRET, HOOK_SECRET, write_config

from roomkey.cli.output import ExitCode
from roomkey.service.crypto import generate_key

pytestmark = pytest.mark.timeout(90)


def _roomkey() -> list[str]:
    script = Path(sys.executable).with_name("roomkey")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from roomkey.cli.app import main; main()"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_runs_until_sigterm(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    port = _free_port()
    env = {**os.environ, "ROOMKEY_SECRET_KEY": generate_key()}
    proc = subprocess.Popen(
        [*_roomkey(), "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 40
        ready = None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"{base}/ready", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
        assert ready is not None
        assert ready.status_code == 200
        assert ready.json()["migrations"] is True
        assert httpx.get(f"{base}/health", timeout=2).json() == {"status": "ok"}
        # A wrong webhook secret is refused; the right one accepts a message id.
        wrong = httpx.post(f"{base}/hooks/lockme/wrong", headers={"X-MessageId": "1"})
        assert wrong.status_code == 404
        ok = httpx.post(f"{base}/hooks/lockme/{HOOK_SECRET}", headers={"X-MessageId": "77"})
        assert ok.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert out == ""  # serve prints no answer on stdout; everything is on stderr
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any("started" in line["msg"] for line in lines)
    for secret in (HOOK_SECRET, CLIENT_SECRET):
        assert secret not in err
    assert (tmp_path / "data" / "roomkey.sqlite3").exists()


def test_serve_no_migrate_on_a_fresh_database_exits_8(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    env = {**os.environ, "ROOMKEY_SECRET_KEY": generate_key()}
    result = subprocess.run(
        [*_roomkey(), "serve", "--config", str(config), "--port", str(_free_port()),
         "--no-migrate"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == ExitCode.DATABASE, result.stderr
    assert "roomkey db upgrade" in result.stderr
    assert "Traceback" not in result.stderr
