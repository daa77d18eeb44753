"""HTTP load generation: Debian's ``wrk`` when installed, else a bounded Python generator.

Both are closed-loop (each connection sends its next request when the answer arrived), run in
their own process pinned to :data:`bench.common.LOAD_CPU`, stop after ``duration`` seconds and
report requests/s and latency percentiles in the same shape. The Python fallback is much
slower than wrk; on a two-core box it can become the bottleneck, which pushes ratios towards
1 — the result records which tool ran.

Run as a module it is the fallback generator itself::

    python -m bench.loadgen SPEC.json   # prints one JSON line
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import LOAD_CPU, PYTHON, REPO, percentile, taskset

MARKER = "BENCHJSON "


@dataclass(frozen=True)
class HttpRequest:
    """One request to send (cycled in order)."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class LoadSpec:
    """What to send: ``requests`` in a cycle; with ``unique_header`` every request also gets
    that header with a value never used before (``unique_prefix`` + a counter)."""

    requests: list[HttpRequest]
    unique_header: str | None = None
    unique_prefix: str = ""


@dataclass
class LoadResult:
    tool: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    errors: int
    non_2xx: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_load(
    port: int,
    spec: LoadSpec,
    *,
    duration: float,
    connections: int = 32,
    timeout: float = 5.0,
    prefer_wrk: bool = True,
) -> LoadResult:
    """Load ``127.0.0.1:port`` for ``duration`` seconds; blocks until done (bounded)."""
    if prefer_wrk and wrk_available():
        return _run_wrk(port, spec, duration=duration, connections=connections, timeout=timeout)
    return _run_python(port, spec, duration=duration, connections=connections, timeout=timeout)


def start_load(
    port: int,
    spec: LoadSpec,
    *,
    duration: float,
    connections: int = 32,
    timeout: float = 5.0,
) -> tuple[subprocess.Popen[str], str, Path]:
    """Start a load run in the background; finish it with :func:`finish_load`."""
    tmp = Path(tempfile.mkdtemp(prefix="roomkey-bench-load-"))
    if wrk_available():
        script = tmp / "load.lua"
        script.write_text(_lua(spec), encoding="utf-8")
        args = [
            *taskset(LOAD_CPU),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            f"--timeout={timeout:g}s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ]
        tool = "wrk"
    else:
        spec_file = tmp / "spec.json"
        spec_file.write_text(
            json.dumps(_spec_json(port, spec, duration, connections, timeout)), encoding="utf-8"
        )
        args = [*taskset(LOAD_CPU), PYTHON, "-m", "bench.loadgen", str(spec_file)]
        tool = "python"
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    return proc, tool, tmp


def finish_load(handle: tuple[subprocess.Popen[str], str, Path], *, duration: float) -> LoadResult:
    proc, tool, tmp = handle
    try:
        out, err = proc.communicate(timeout=duration + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for line in out.splitlines():
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER) :])
            return _result(tool, data)
    raise RuntimeError(f"{tool} gave no result (exit {proc.returncode}): {err.strip()[-500:]}")


def _run_wrk(
    port: int, spec: LoadSpec, *, duration: float, connections: int, timeout: float
) -> LoadResult:
    handle = start_load(port, spec, duration=duration, connections=connections, timeout=timeout)
    return finish_load(handle, duration=duration)


def _run_python(
    port: int, spec: LoadSpec, *, duration: float, connections: int, timeout: float
) -> LoadResult:
    tmp = Path(tempfile.mkdtemp(prefix="roomkey-bench-load-"))
    spec_file = tmp / "spec.json"
    spec_file.write_text(
        json.dumps(_spec_json(port, spec, duration, connections, timeout)), encoding="utf-8"
    )
    proc = subprocess.Popen(
        [*taskset(LOAD_CPU), PYTHON, "-m", "bench.loadgen", str(spec_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    return finish_load((proc, "python", tmp), duration=duration)


def _result(tool: str, data: dict[str, Any]) -> LoadResult:
    seconds = data["duration_us"] / 1e6
    requests = int(data["requests"])
    errors = sum(int(data.get(k, 0)) for k in ("connect", "read", "write", "timeout"))
    return LoadResult(
        tool=tool,
        requests=requests,
        seconds=seconds,
        rps=requests / seconds if seconds > 0 else 0.0,
        p50_ms=data["p50_us"] / 1000 if data.get("p50_us") is not None else None,
        p99_ms=data["p99_us"] / 1000 if data.get("p99_us") is not None else None,
        max_ms=data["max_us"] / 1000 if data.get("max_us") is not None else None,
        errors=errors,
        non_2xx=int(data.get("status", 0)),
    )


# --------------------------------------------------------------------------- wrk


def _lua_str(text: str) -> str:
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def _lua(spec: LoadSpec) -> str:
    entries = []
    for req in spec.requests:
        headers = ", ".join(f"[ {_lua_str(k)} ] = {_lua_str(v)}" for k, v in req.headers.items())
        entries.append(
            f"{{{_lua_str(req.method)}, {_lua_str(req.path)}, {{{headers}}}, "
            f"{_lua_str(req.body.decode('utf-8'))}}}"
        )
    unique = _lua_str(spec.unique_header) if spec.unique_header else "nil"
    return f"""
local specs = {{
{",".join(entries)}
}}
local unique = {unique}
local prefix = {_lua_str(spec.unique_prefix)}
local prebuilt = {{}}
local i = 0
local counter = 0

init = function(args)
  if unique == nil then
    for k, s in ipairs(specs) do
      prebuilt[k] = wrk.format(s[1], s[2], s[3], s[4])
    end
  end
end

request = function()
  i = i % #specs + 1
  if unique == nil then
    return prebuilt[i]
  end
  counter = counter + 1
  local s = specs[i]
  local headers = {{}}
  for k, v in pairs(s[3]) do headers[k] = v end
  headers[unique] = prefix .. counter
  return wrk.format(s[1], s[2], headers, s[4])
end

done = function(summary, latency, requests)
  io.write(string.format(
    '{MARKER}{{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
end
"""


# --------------------------------------------------------------------------- Python fallback


def _spec_json(
    port: int, spec: LoadSpec, duration: float, connections: int, timeout: float
) -> dict[str, Any]:
    return {
        "port": port,
        "duration": duration,
        "connections": connections,
        "timeout": timeout,
        "unique_header": spec.unique_header,
        "unique_prefix": spec.unique_prefix,
        "requests": [
            {
                "method": r.method,
                "path": r.path,
                "headers": r.headers,
                "body": base64.b64encode(r.body).decode("ascii"),
            }
            for r in spec.requests
        ],
    }


def _render(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _generate(spec: dict[str, Any]) -> dict[str, Any]:
    port = int(spec["port"])
    duration = float(spec["duration"])
    timeout = float(spec["timeout"])
    unique = spec.get("unique_header")
    prefix = str(spec.get("unique_prefix") or "")
    reqs = [
        (r["method"], r["path"], dict(r["headers"]), base64.b64decode(r["body"]))
        for r in spec["requests"]
    ]
    prebuilt = [_render(*r) for r in reqs]
    state = {"i": 0, "counter": 0}
    latencies: list[float] = []
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    start = time.perf_counter()
    deadline = start + duration

    def next_request() -> bytes:
        state["i"] = (state["i"] + 1) % len(reqs)
        if unique is None:
            return prebuilt[state["i"]]
        state["counter"] += 1
        method, path, headers, body = reqs[state["i"]]
        return _render(method, path, {**headers, unique: f"{prefix}{state['counter']}"}, body)

    async def connection() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            errors["connect"] += 1
            return
        try:
            while time.perf_counter() < deadline:
                payload = next_request()
                sent = time.perf_counter()
                writer.write(payload)
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
                    status = int(head.split(b" ", 2)[1])
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value.strip())
                    if length:
                        await asyncio.wait_for(reader.readexactly(length), timeout)
                except TimeoutError:
                    errors["timeout"] += 1
                    return
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    errors["read"] += 1
                    return
                latencies.append((time.perf_counter() - sent) * 1e6)
                if status >= 400:
                    errors["status"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(int(spec["connections"]))))
    elapsed = time.perf_counter() - start
    return {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "p50_us": percentile(latencies, 50),
        "p99_us": percentile(latencies, 99),
        "max_us": max(latencies) if latencies else None,
        **errors,
    }


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        import uvloop

        result = uvloop.run(_generate(spec))
    except ImportError:
        result = asyncio.run(_generate(spec))
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
