"""Shared pieces of the benchmarks: results, percentiles, CPU pinning, RSS, server processes.

Everything here is bounded: every wait has a deadline, every process started is stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

SERVER_CPU = 0
"""The CPU the measured server runs on (when the machine has two or more)."""
LOAD_CPU = 1
"""The CPU the load generator, the simulators and the orchestrator run on."""


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One measured figure, with its target when the issue sets one."""

    bench: str
    metric: str
    value: float | None
    unit: str
    target: str | None = None
    met: bool | None = None
    note: str = ""

    def shown(self) -> str:
        if self.value is None:
            return "n/a"
        if abs(self.value) >= 100:
            return f"{self.value:,.0f}"
        if abs(self.value) >= 10:
            return f"{self.value:.1f}"
        return f"{self.value:.2f}"


@dataclass
class BenchResult:
    """What one benchmark measured: table rows plus free-form details for the JSON."""

    name: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def add(
        self,
        metric: str,
        value: float | None,
        unit: str,
        *,
        target: str | None = None,
        met: bool | None = None,
        note: str = "",
    ) -> Row:
        row = Row(self.name, metric, value, unit, target, met, note)
        self.rows.append(row)
        return row

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seconds": round(self.seconds, 2),
            "error": self.error,
            "rows": [asdict(r) for r in self.rows],
            "details": self.details,
        }


def percentile(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (nearest rank, 0 < p ≤ 100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_mb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_mb = int(line.split()[1]) // 1024
    load = None
    with contextlib.suppress(OSError):
        load = os.getloadavg()
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_mb": mem_mb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": load,
        "wrk": shutil.which("wrk") is not None,
        "taskset": shutil.which("taskset") is not None,
    }


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary directory for one benchmark; kept (and its path printed) when the
    environment variable ``ROOMKEY_BENCH_KEEP`` is set, for reading the servers' logs."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if os.environ.get("ROOMKEY_BENCH_KEEP"):
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- CPUs and memory


def can_pin() -> bool:
    return (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")


def pin_self(cpu: int) -> None:
    """Keep this process on one CPU (no-op on one-CPU machines or without the syscall)."""
    if can_pin():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})


def taskset(cpu: int) -> list[str]:
    """A ``taskset -c CPU`` prefix when available, else nothing."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu)]
    return []


def _status_kb(pid: int, key: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process now (Linux ``VmRSS``)."""
    kb = _status_kb(pid, "VmRSS")
    return None if kb is None else kb / 1024


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of a process so far (Linux ``VmHWM``)."""
    kb = _status_kb(pid, "VmHWM")
    return None if kb is None else kb / 1024


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process (all its threads) has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return (int(fields[11]) + int(fields[12])) / ticks


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- server processes


class ServerProcess:
    """A server in its own process (optionally pinned to a CPU), stopped for sure on exit."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        port: int,
        cpu: int | None = SERVER_CPU,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        ready_path: str = "/health",
    ) -> None:
        self.args = [*(taskset(cpu) if cpu is not None else []), *args]
        self.port = port
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path
        self.ready_path = ready_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.ready_after: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, *, timeout: float = 60.0) -> float:
        """Start and wait until ``ready_path`` answers 200; returns seconds to ready."""
        log_file = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        target: Any = log_file if log_file is not None else subprocess.DEVNULL
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            self.args,
            stdout=target,
            stderr=target,
            env=self.env,
            cwd=REPO,
            start_new_session=True,
        )
        if log_file is not None:
            log_file.close()
        deadline = self.started_at + timeout
        with httpx.Client(timeout=1.0) as client:
            while time.perf_counter() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"server exited with {self.proc.returncode} while starting"
                        f"{self._log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.url + self.ready_path).status_code == 200:
                        self.ready_after = time.perf_counter() - self.started_at
                        return self.ready_after
                time.sleep(0.01)
        self.stop()
        raise TimeoutError(f"server not ready within {timeout:.0f} s{self._log_tail()}")

    def _log_tail(self, lines: int = 8) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "; log tail:\n" + "\n".join(line[:400] for line in tail)

    def stop(self, *, timeout: float = 15.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
