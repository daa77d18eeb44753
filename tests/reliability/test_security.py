"""Security suite.

* Unauthenticated or wrongly signed webhooks (Lockme, LOQED bridge, LOQED cloud) are refused
  and logged.
* Secrets are encrypted at rest: after a real ``roomkey serve`` run, neither the database
  (the SQLite file's bytes; every PostgreSQL row as text) nor the token file holds any
  configured secret in clear.
* No secret, token or signed command URL in any log line, error page or API response: all
  logs and output of a full ``roomkey demo --for N`` run are searched for every secret in the
  demo's configuration, its token and key, and for ``command_signed_base64=``; error pages
  and every API answer are searched too.
* Constant-time comparisons: a spy on ``hmac.compare_digest``/``secrets.compare_digest``
  must see each secret check (Lockme URL secret, cloud URL secret, bridge HASH, CSRF).
* Sessions and CSRF: anonymous and read-only access refused, cookies HttpOnly/SameSite,
  CSRF required and bound to the session, logout revokes; login rate limit.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness.inproc import (
    CLIENT_SECRET,
    CLOUD_HOOK_SECRET,
    HOOK_SECRET,
    LOCK,
    Venue,
    api_token,
    login,
    make_users,
    make_venue,
    session_csrf,
)
from harness.modes import SABOTAGE, pick, record_figures
from harness.oracle import sync_engine
from harness.pg import create_database, drop_database
from harness.serve import HARNESS_ROOT, VENV_BIN, ServeProcess
from harness.world import free_port, make_world
from sqlalchemy import text

from roomkey.loqed.signing import decode_key, webhook_payload_hash
from roomkey.service.crypto import SecretBox
from roomkey.service.db.models import Base
from roomkey.service.lockme_gateway import EncryptedFileTokenStore

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(pick(300, 900))]

SIGNED_URL_MARK = "command_signed_base64="


def leaks(haystack: str, needles: Iterable[str]) -> list[str]:
    """The needles found in the haystack (shown shortened, never in full)."""
    return [f"{n[:4]}…({len(n)} chars)" for n in needles if n and n in haystack]


@pytest.fixture
async def venue(tmp_path: Path) -> AsyncIterator[Venue]:
    v = await make_venue(tmp_path, web=True, transports=("bridge", "cloud"))
    try:
        yield v
    finally:
        await v.close()


def venue_secrets(venue: Venue) -> list[str]:
    lock = venue.service.config.locks[0]
    found = [CLIENT_SECRET, HOOK_SECRET, CLOUD_HOOK_SECRET]
    for part in (lock.bridge, lock.cloud):
        if part is None:
            continue
        for _name, value in part:
            if hasattr(value, "get_secret_value"):
                found.append(value.get_secret_value())
    token = venue.service.lockme.store.load()
    if token is not None:
        found.append(token.access_token)
        if token.refresh_token:
            found.append(token.refresh_token)
    return found


# --------------------------------------------------------------------------- webhooks


async def test_unauthenticated_and_wrongly_signed_webhooks_are_refused_and_logged(
    venue: Venue, caplog: pytest.LogCaptureFixture
) -> None:
    client = venue.roomkey_client()
    caplog.set_level(logging.INFO)
    refused: dict[str, int] = {}

    async def check(name: str, response: httpx.Response, words: tuple[str, ...]) -> None:
        assert 400 <= response.status_code < 500, (name, response.status_code)
        assert response.json()["error"]["type"]
        refused[name] = response.status_code
        logged = [r.getMessage() for r in caplog.records]
        assert any(all(w in m.lower() for w in words) for m in logged), (name, logged[-5:])
        caplog.clear()

    response = await client.post("/hooks/lockme/not-the-secret", headers={"X-MessageId": "1"})
    await check("lockme_wrong_secret", response, ("lockme", "secret"))
    response = await client.post("/hooks/lockme", headers={"X-MessageId": "1"})
    await check("lockme_no_secret", response, ("lockme", "secret"))

    key = decode_key(venue.loqed.bridge("b1").bridge_key)
    body = json.dumps({"event_type": "STATE_CHANGED_OPEN", "key_local_id": 1}).encode()
    ts = int(venue.clock.time())
    cases = {
        "bridge_unsigned": {},
        "bridge_wrong_hash": {"HASH": "0" * 64, "TIMESTAMP": str(ts)},
        "bridge_other_key": {"HASH": webhook_payload_hash(b"x" * 32, ts, body),
                             "TIMESTAMP": str(ts)},
        "bridge_stale": {"HASH": webhook_payload_hash(key, ts - 3600, body),
                         "TIMESTAMP": str(ts - 3600)},
        "bridge_tampered": {"HASH": webhook_payload_hash(key, ts, body + b" "),
                            "TIMESTAMP": str(ts)},
    }
    for name, headers in cases.items():
        response = await client.post(f"/hooks/loqed/bridge/{LOCK}", content=body,
                                     headers={"Content-Type": "application/json", **headers})
        await check(name, response, ("bridge",))
    response = await client.post("/hooks/loqed/cloud/wrong-secret", content=body,
                                 headers={"Content-Type": "application/json"})
    await check("cloud_wrong_secret", response, ("cloud",))
    assert await venue.events() == []
    assert await venue.messages() == []
    record_figures("security", "webhooks_refused", {"cases": len(refused), **refused})


# --------------------------------------------------------------------------- at rest


async def _at_rest_run(db_url: str, tmp: Path) -> dict[str, Any]:
    """A real ``roomkey serve`` on ``db_url`` takes a booking through to a door command;
    returns the secrets of the run and where to look for them."""
    world = await make_world(rooms=1, open_rooms=0, seed=5)
    port = free_port()
    config = world.write_config(tmp, db_url=db_url, port=port, replica_id="at-rest")
    proc = ServeProcess(config, port=port, secret_key=world.secrets.secret_key,
                        log_path=tmp / "serve.log")
    try:
        world.point_webhooks_at(proc.url)
        await proc.start()
        room = world.rooms[0]
        start = world.now() + 4
        local = world.local(start)
        world.lockme.book(room.room_id, local.strftime("%Y-%m-%d"), local.strftime("%H:%M:%S"),
                          source="panel", status=1, duration=1)
        for _ in range(200):
            if world.loqed.received(room.lock.loqed_id):
                break
            await asyncio.sleep(0.1)
        assert world.loqed.received(room.lock.loqed_id), "the door command never arrived"
        await asyncio.sleep(1.0)
    finally:
        await proc.stop()
        await world.close()
    token = EncryptedFileTokenStore(tmp / "lockme-token.json",
                                    SecretBox([world.secrets.secret_key])).load()
    found = world.secrets.all(world)
    if token is not None:
        found += [token.access_token, *( [token.refresh_token] if token.refresh_token else [])]
    return {"secrets": found, "log": proc.log_text()}


async def test_secrets_are_encrypted_at_rest_on_sqlite_and_postgresql(tmp_path: Path) -> None:
    sqlite_file = tmp_path / "sqlite" / "roomkey.sqlite3"
    sqlite_file.parent.mkdir()
    pg_url = create_database("roomkey_sec")
    try:
        run, pg_run = await asyncio.gather(
            _at_rest_run(f"sqlite+aiosqlite:///{sqlite_file}", tmp_path / "sqlite"),
            _at_rest_run(pg_url, tmp_path / "postgres"),
        )
        engine = sync_engine(pg_url)
        rows: list[str] = []
        with engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                rows += [str(r[0]) for r in conn.execute(
                    text(f'SELECT t::text FROM "{table.name}" t'))]  # noqa: S608
        engine.dispose()
    finally:
        drop_database(pg_url)
    stored = b"".join(p.read_bytes() for p in sqlite_file.parent.glob("roomkey.sqlite3*"))
    token_file = (tmp_path / "sqlite" / "lockme-token.json").read_text(encoding="utf-8")
    assert run["secrets"]
    assert len(stored) > 10_000
    in_db = [f"{s[:4]}…" for s in run["secrets"] if s.encode() in stored]
    assert not in_db, f"secrets in clear in the SQLite file: {in_db}"
    in_token_file = leaks(token_file, run["secrets"])
    assert not in_token_file, "the token file holds the token in clear"
    for log in (run["log"], pg_run["log"]):
        in_log = leaks(log, run["secrets"] + pg_run["secrets"])
        assert not in_log, "a secret in serve's log"
        assert SIGNED_URL_MARK not in log
    dump = "\n".join(rows)
    assert len(rows) > 5
    in_pg = leaks(dump, pg_run["secrets"])
    assert not in_pg, "secrets in clear in PostgreSQL"
    record_figures("security", "at_rest", {
        "secrets_checked": len(run["secrets"]) + len(pg_run["secrets"]),
        "sqlite_bytes_scanned": len(stored), "postgres_rows_scanned": len(rows), "found": 0,
    })


# --------------------------------------------------------------------------- demo logs


def test_a_full_demo_run_writes_no_secret_or_signed_url_anywhere(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    seconds = pick(12, 90)
    if SABOTAGE:
        command = [sys.executable, "-m", "harness.sabotaged_serve"]
    else:
        command = [str(VENV_BIN / "roomkey")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMKEY_")}
    env["PYTHONPATH"] = str(HARNESS_ROOT)
    if SABOTAGE:
        env["ROOMKEY_SABOTAGE"] = SABOTAGE
    done = subprocess.run(
        [*command, "demo", "--for", str(seconds), "--data-dir", str(data), "--warp", "300",
         "--json"],
        capture_output=True, timeout=seconds + 120, env=env, check=False,
    )
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    assert done.returncode == 0, err[-2000:]
    config = tomllib.loads((data / "roomkey.toml").read_text(encoding="utf-8"))
    found: list[str] = [config["lockme"]["client_secret"],
                        config["service"]["lockme_webhook_secret"]]
    if "loqed_webhook_secret" in config["service"]:
        found.append(config["service"]["loqed_webhook_secret"])
    for lock in config.get("locks", []):
        for part in ("bridge", "cloud", "app"):
            for key, value in lock.get(part, {}).items():
                if key in ("key_secret", "bridge_key", "token", "api_token") or ("url" in key and (
                    "command" in key or "status" in key
                )):
                    found.append(str(value))
    key = (data / "secret.key").read_text(encoding="utf-8").strip()
    found.append(key)
    token = EncryptedFileTokenStore(data / "lockme-token.json", SecretBox([key])).load()
    assert token is not None
    found += [token.access_token] + ([token.refresh_token] if token.refresh_token else [])
    log = (data / "roomkey.log").read_text(encoding="utf-8", errors="replace")
    lines = len(log.splitlines()) + len(out.splitlines()) + len(err.splitlines())
    summary = json.loads(out) if out.strip().startswith("{") else {}
    places = {"roomkey.log": log, "stdout": out, "stderr": err}
    problems = {
        name: leaks(where, found) + ([SIGNED_URL_MARK] if SIGNED_URL_MARK in where else [])
        for name, where in places.items()
    }
    problems = {k: v for k, v in problems.items() if v}
    record_figures("security", "demo_logs", {
        "demo_seconds": seconds, "log_lines_scanned": lines, "secrets_searched": len(found),
        "found": sum(len(v) for v in problems.values()),
        "commands_in_demo": summary.get("commands_sent") or summary.get("commands"),
    })
    assert len(log.splitlines()) > 20, "the demo logged almost nothing: nothing was checked"
    assert not problems, f"secrets or signed URLs written: {problems}"


# --------------------------------------------------------------------------- pages and API


async def test_error_pages_and_api_answers_never_show_a_secret(venue: Venue) -> None:
    users = await make_users(venue)
    token = await api_token(venue, "admin")
    rid = venue.book("10:00:00")
    await venue.run()
    await venue.run_until(venue.at("09:50:00"))
    await venue.run(15)
    found = [*venue_secrets(venue), token]
    api = venue.roomkey_client()
    api.headers["Authorization"] = f"Bearer {token}"
    schema = (await api.get("/api/v1/openapi.json")).json()
    answers: dict[str, str] = {}
    for path, ops in schema["paths"].items():
        if "get" not in ops:
            continue
        concrete = (path.replace("{room_id}", str(venue.room)).replace("{lock_id}", LOCK)
                    .replace("{command_id}", "x").replace("{alert_id}", "1")
                    .replace("{endpoint_id}", "1").replace("{delivery_id}", "1"))
        response = await api.get(concrete)
        assert response.status_code < 500, (concrete, response.status_code)
        answers[concrete] = response.text
    browser = venue.roomkey_client()
    assert (await login(browser, "admin", users["admin"])).status_code in (302, 303)
    for page in ("/", "/locks", "/events", "/alerts", "/commands", "/rooms", "/webhooks",
                 f"/rooms/{venue.room}/settings", "/nope", "/rooms/999999/settings",
                 "/events.csv"):
        response = await browser.get(page)
        assert response.status_code < 500, (page, response.status_code)
        answers[page] = response.text
    errors = {
        "bad_bridge": await browser.post(f"/hooks/loqed/bridge/{LOCK}", content=b"{"),
        "bad_lockme": await browser.post(f"/hooks/lockme/{HOOK_SECRET}",
                                         headers={"X-MessageId": "../../etc"}),
        "bad_api": await api.post(f"/api/v1/rooms/{venue.room}/explode"),
        "bad_form": await browser.post("/reconcile", data={"csrf_token": "forged"}),
    }
    for name, response in errors.items():
        assert 400 <= response.status_code < 500, (name, response.status_code)
        answers[name] = response.text
    bad = {where: leaks(body, found) for where, body in answers.items()}
    bad = {k: v for k, v in bad.items() if v}
    signed = [k for k, body in answers.items() if SIGNED_URL_MARK in body]
    assert rid
    assert len(answers) > 20
    assert not bad, f"secrets shown: {bad}"
    assert not signed, f"signed command URLs shown: {signed}"
    record_figures("security", "pages_and_api",
                   {"answers_scanned": len(answers), "secrets_searched": len(found), "found": 0})


# --------------------------------------------------------------------------- constant time


async def test_every_secret_check_compares_in_constant_time(
    venue: Venue, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[bytes, bytes]] = []

    def spy(original: Any) -> Any:
        def compare(a: Any, b: Any) -> bool:
            as_bytes = [x.encode() if isinstance(x, str) else bytes(x) for x in (a, b)]
            seen.append((as_bytes[0], as_bytes[1]))
            return bool(original(a, b))

        return compare

    monkeypatch.setattr(hmac, "compare_digest", spy(hmac.compare_digest))
    monkeypatch.setattr(secrets, "compare_digest", spy(secrets.compare_digest))

    def compared(value: str) -> bool:
        needle = value.encode()
        return any(needle in a or needle in b for a, b in seen)

    client = venue.roomkey_client()
    checks: dict[str, bool] = {}

    seen.clear()
    await client.post("/hooks/lockme/guess-Lockme-1", headers={"X-MessageId": "1"})
    checks["lockme_url_secret"] = compared("guess-Lockme-1") and compared(HOOK_SECRET)

    seen.clear()
    await client.post("/hooks/loqed/cloud/guess-Cloud-2", content=b"{}")
    checks["cloud_url_secret"] = compared("guess-Cloud-2") and compared(CLOUD_HOOK_SECRET)

    seen.clear()
    body = b'{"event_type":"STATE_CHANGED_OPEN"}'
    ts = int(venue.clock.time())
    wrong = "ab" * 32
    await client.post(f"/hooks/loqed/bridge/{LOCK}", content=body,
                      headers={"HASH": wrong, "TIMESTAMP": str(ts)})
    checks["bridge_hash"] = compared(wrong)

    users = await make_users(venue)
    browser = venue.roomkey_client()
    await login(browser, "admin", users["admin"])
    seen.clear()
    await browser.post("/reconcile", data={"csrf_token": "forged-csrf-3"})
    checks["csrf"] = compared("forged-csrf-3")

    seen.clear()
    page = await browser.get("/login")
    await browser.post("/login", data={"username": "admin", "password": "x",
                                       "csrf_token": "forged-login-csrf-4"})
    checks["login_csrf"] = compared("forged-login-csrf-4") and page.status_code == 200

    record_figures("security", "constant_time", {"checks": len(checks), **checks})
    missing = [name for name, ok in checks.items() if not ok]
    assert not missing, f"secret checks not done with compare_digest: {missing}"


# --------------------------------------------------------------------------- sessions, CSRF


async def test_sessions_csrf_and_roles(venue: Venue) -> None:
    users = await make_users(venue)
    anonymous = venue.roomkey_client()
    refused = 0
    for page in ("/", "/locks", "/events", "/alerts", "/rooms", "/webhooks", "/commands"):
        response = await anonymous.get(page)
        assert response.status_code in (302, 303, 401), page
        assert "/login" in response.headers.get("location", "/login"), page
        refused += 1
    for path in ("/api/v1/rooms", "/api/v1/locks", "/api/v1/events", "/api/v1/me"):
        response = await anonymous.get(path)
        assert response.status_code == 401, path
        refused += 1
    response = await anonymous.post(f"/rooms/{venue.room}/door/open", data={})
    assert response.status_code in (401, 403), response.status_code

    admin = venue.roomkey_client()
    response = await login(admin, "admin", users["admin"])
    cookie = response.headers.get("set-cookie", "")
    assert "httponly" in cookie.lower(), cookie
    assert "samesite=lax" in cookie.lower(), cookie
    from roomkey.web import WebSettings

    assert WebSettings().cookie_secure, "session cookies must be Secure by default"
    csrf = await session_csrf(admin)
    # CSRF: missing, forged, or another session's token -> refused, nothing done
    viewer = venue.roomkey_client()
    await login(viewer, "viewer", users["viewer"])
    viewer_csrf = await session_csrf(viewer)
    for data in ({}, {"csrf_token": "forged"}, {"csrf_token": viewer_csrf}):
        response = await admin.post(f"/rooms/{venue.room}/door/open", data=data)
        assert response.status_code == 403, (data, response.status_code)
        refused += 1
    assert await venue.commands() == [], "a door command without a valid CSRF token"
    # read-only user: may look, may not act
    assert (await viewer.get("/")).status_code == 200
    response = await viewer.post(f"/rooms/{venue.room}/door/open",
                                 data={"csrf_token": viewer_csrf})
    assert response.status_code == 403
    viewer_token = await api_token(venue, "viewer")
    response = await venue.roomkey_client().post(
        f"/api/v1/rooms/{venue.room}/open", headers={"Authorization": f"Bearer {viewer_token}"})
    assert response.status_code == 403
    assert await venue.commands() == []
    # logout revokes the session: the old cookie no longer works
    old = dict(admin.cookies)
    response = await admin.post("/logout", data={"csrf_token": csrf})
    assert response.status_code in (302, 303)
    replay = venue.roomkey_client()
    replay.cookies.update(old)
    response = await replay.get("/alerts")
    assert response.status_code in (302, 303, 401), "a logged-out session still works"
    record_figures("security", "sessions_csrf", {"refusals_checked": refused + 4})


async def test_login_is_rate_limited(venue: Venue) -> None:
    users = await make_users(venue)
    client = venue.roomkey_client()
    statuses = [(await login(client, "admin", f"wrong-{i}")).status_code for i in range(5)]
    assert statuses == [401] * 5, statuses
    blocked = await login(client, "admin", users["admin"])
    assert blocked.status_code == 429, "the right password after 5 failures must still wait"
    assert int(blocked.headers["Retry-After"]) > 0
    other = await login(venue.roomkey_client(), "viewer", users["viewer"])
    assert other.status_code in (302, 303), "another user name is not blocked"
    record_figures("security", "login_rate_limit",
                   {"failures_before_block": 5, "blocked_status": 429})
