"""Real ``roomkey serve`` processes: start, wait until ready, SIGKILL, restart.

Each process writes its stdout/stderr (JSON log lines) to one log file per replica, appended
across restarts, so a suite can read every line roomkey ever wrote. With a sabotage switch
set (``ROOMKEY_SABOTAGE``), the process is started through :mod:`harness.sabotaged_serve`,
which monkeypatches the broken behaviour in before running the same CLI; otherwise it is the
installed ``roomkey`` console script, untouched.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from harness.modes import SABOTAGE

VENV_BIN = Path(sys.executable).parent
HARNESS_ROOT = Path(__file__).resolve().parents[1]


class ServeProcess:
    """One replica of ``roomkey serve`` on a fixed loopback port."""

    def __init__(
        self,
        config: Path,
        *,
        port: int,
        secret_key: str,
        log_path: Path,
        migrate: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.port = port
        self.secret_key = secret_key
        self.log_path = log_path
        self.migrate = migrate
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.startup_seconds: list[float] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        args = [
            "serve", "--config", str(self.config), "--port", str(self.port),
            "--log-format", "json", "--log-level", "info",
            "--migrate" if self.migrate else "--no-migrate",
        ]
        if SABOTAGE:
            return [sys.executable, "-m", "harness.sabotaged_serve", *args]
        return [str(VENV_BIN / "roomkey"), *args]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMKEY_")}
        env.update(
            ROOMKEY_SECRET_KEY=self.secret_key,
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join(
                [str(HARNESS_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        )
        if SABOTAGE:
            env["ROOMKEY_SABOTAGE"] = SABOTAGE
        env.update(self.extra_env)
        return env

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self, *, ready_within: float = 60.0) -> float:
        """Start and wait for ``/ready``; returns the seconds it took."""
        assert not self.alive, "already running"
        began = time.monotonic()
        self._spawn()
        self.starts += 1
        await self.wait_ready(ready_within)
        took = time.monotonic() - began
        self.startup_seconds.append(took)
        return took

    def _spawn(self) -> None:
        with self.log_path.open("ab") as log:
            log.write(f'{{"harness": "start #{self.starts + 1}"}}\n'.encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                stdin=subprocess.DEVNULL,
            )

    async def wait_ready(self, within: float) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if not self.alive:
                    raise AssertionError(
                        f"roomkey serve exited with {self.proc.returncode if self.proc else '?'}; "
                        f"log: {self.log_tail()}"
                    )
                try:
                    response = await client.get(f"{self.url}/ready")
                    if response.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"roomkey serve not ready in {within}s: {self.log_tail()}")
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, like a power cut or the OOM killer."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.kills += 1

    async def stop(self) -> None:
        """SIGTERM (graceful), SIGKILL after 15 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        for _ in range(150):
            if self.proc.poll() is not None:
                return
            await asyncio.sleep(0.1)
        self.kill()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
