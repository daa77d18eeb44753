"""Token refresh under contention: processes and threads, one token file, one refresh.

A real loopback HTTP server plays Lockme: a counting ``/access_token`` that rotates the refresh
token (an old one is rejected with ``invalid_grant``, so a second refresh would fail loudly) and a
``/v2.4/me`` that accepts only the current access token and echoes it back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from roomkey.lockme import FileTokenStore, LockmeClient, OAuthConfig, Token

WORKER = Path(__file__).with_name("contention_worker.py")


@dataclass
class TokenServerState:
    access: str = "old-access"
    refresh: str = "old-refresh"
    refresh_requests: int = 0
    rejected_refreshes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(state: TokenServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def _json(self, status: int, payload: object) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = parse_qs(self.rfile.read(length).decode())
            if self.path != "/access_token":
                self._json(404, {"message": "no route"})
                return
            with state.lock:
                state.refresh_requests += 1
                if form.get("refresh_token") != [state.refresh]:
                    state.rejected_refreshes += 1
                    self._json(400, {"error": "invalid_grant", "message": "refresh token used"})
                    return
                n = state.refresh_requests
                # widen the race window: the refresh takes a while on the server
                time.sleep(0.3)
                state.access, state.refresh = f"new-access-{n}", f"new-refresh-{n}"
                self._json(
                    200,
                    {
                        "token_type": "Bearer",
                        "expires_in": 3600,
                        "access_token": state.access,
                        "refresh_token": state.refresh,
                    },
                )

        def do_GET(self) -> None:
            with state.lock:
                current = state.access
            if self.headers.get("Authorization") != f"Bearer {current}":
                self._json(401, {"message": "token expired"})
                return
            self._json(200, {"userid": 1, "nick": "venue", "seen_token": current})

    return Handler


@pytest.fixture
def token_server() -> Iterator[tuple[str, TokenServerState]]:
    state = TokenServerState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def _expired_token_file(path: Path) -> None:
    FileTokenStore(path).save(
        Token(access_token="old-access", refresh_token="old-refresh", expires=time.time() - 30)
    )


def test_processes_and_threads_refresh_exactly_once(
    token_server: tuple[str, TokenServerState], tmp_path: Path
) -> None:
    base, state = token_server
    token_file = tmp_path / "token.json"
    _expired_token_file(token_file)
    processes, threads, tasks = 3, 3, 2
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), base, str(token_file), str(threads), str(tasks)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:  # release everyone at once
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert state.refresh_requests == 1, "exactly one refresh reached the server"
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    seen = [token for out, _ in outputs for token in json.loads(out.strip().splitlines()[-1])]
    assert len(seen) == processes * (threads + tasks) * 2
    assert state.rejected_refreshes == 0
    assert set(seen) == {"new-access-1"}
    stored = FileTokenStore(token_file).load()
    assert stored is not None
    assert stored.refresh_token == "new-refresh-1"


def test_threads_in_one_process_refresh_exactly_once(
    token_server: tuple[str, TokenServerState], tmp_path: Path
) -> None:
    base, state = token_server
    token_file = tmp_path / "token.json"
    _expired_token_file(token_file)
    oauth = OAuthConfig("roomkey", "s", "http://127.0.0.1/cb", api_domain=base)
    barrier = threading.Barrier(6)
    seen: list[str] = []

    def call() -> None:
        with LockmeClient(oauth, FileTokenStore(token_file)) as client:
            barrier.wait()
            user = client.me()
            seen.append(str((user.model_extra or {})["seen_token"]))

    workers = [threading.Thread(target=call) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert state.refresh_requests == 1
    assert seen == ["new-access-1"] * 6
