"""``roomkey lockme login --config``: the OAuth login saves the token where the service reads
it (encrypted in its database), against the Lockme simulator on loopback, SQLite and PostgreSQL.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cli_support import create_pg_database, drop_pg_database
from typer.testing import CliRunner

from roomkey.cli.app import app
from roomkey.lockme import Token
from roomkey.service.crypto import SECRET_KEY_ENV, SecretBox, generate_key
from roomkey.service.db.migrate import upgrade
from roomkey.service.lockme_token_store import DatabaseTokenStore, sync_engine
from roomkey.sim.clock import SimClock
from roomkey.sim.lockme import LockmeSimulator

CLIENT_SECRET = "login-config-client-secret-never-printed"
runner = CliRunner()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'roomkey.sqlite3'}"
        upgrade(url)
        yield url
        return
    url = create_pg_database("roomkey_login")
    try:
        upgrade(url)
        yield url
    finally:
        drop_pg_database(url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(app_: Any) -> Iterator[str]:
    """The simulator on a loopback uvicorn in a thread (the CLI is a blocking program)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app_, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:  # a real server binding, not simulated time
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def write_config(tmp_path: Path, *, db_url: str, lockme_url: str, redirect: str) -> Path:
    path = tmp_path / "roomkey.toml"
    path.write_text(
        f"""
[service]
data_dir = "data"
database_url = "{db_url}"

[lockme]
client_id = "roomkey"
client_secret = "{CLIENT_SECRET}"
api_domain = "{lockme_url}"
redirect_uri = "{redirect}"
""",
        encoding="utf-8",
    )
    return path


def test_login_with_config_saves_the_token_encrypted_in_the_database(
    tmp_path: Path, db_url: str
) -> None:
    key = generate_key()
    box = SecretBox([key])
    redirect = f"http://127.0.0.1:{free_port()}/lockme/callback"
    sim = LockmeSimulator(SimClock(manual=True))
    sim.add_oauth_client("roomkey", CLIENT_SECRET, redirect)
    with serve(sim.app) as lockme_url:
        config = write_config(tmp_path, db_url=db_url, lockme_url=lockme_url, redirect=redirect)
        env = {SECRET_KEY_ENV: key}
        login = runner.invoke(
            app, ["lockme", "login", "--config", str(config), "--fetch", "--timeout", "20"],
            env=env,
        )
        assert login.exit_code == 0, login.output
        assert "Logged in as" in login.output
        assert "the database" in login.output
        assert CLIENT_SECRET not in login.output
        assert [g.grant_type for g in sim.oauth.grants] == ["authorization_code"]

        store = DatabaseTokenStore(db_url, box)
        try:
            saved = store.load()
        finally:
            store.close()
        assert isinstance(saved, Token)
        assert saved.access_token not in login.output
        assert not (tmp_path / "data" / "lockme-token.json").exists()  # no file written
        engine = sync_engine(db_url)
        try:
            with engine.connect() as conn:
                rows = conn.exec_driver_sql("SELECT name, ciphertext FROM secrets").all()
        finally:
            engine.dispose()
        assert [r[0] for r in rows] == ["lockme.oauth_token"]
        assert saved.access_token not in rows[0][1]

        # the other commands read the same store
        me = runner.invoke(app, ["lockme", "me", "--config", str(config), "--json"], env=env)
        assert me.exit_code == 0, me.output
        assert '"nick"' in me.output

        # $ROOMKEY_CONFIG stands for --config when no client flags are given
        test = runner.invoke(app, ["lockme", "test"], env={**env, "ROOMKEY_CONFIG": str(config)})
        assert test.exit_code == 0, test.output
        assert test.output.strip() == "OK"

        # without the key the database store cannot be used: a clear error, exit 1
        keyless = runner.invoke(
            app, ["lockme", "me", "--config", str(config)], env={SECRET_KEY_ENV: ""}
        )
        assert keyless.exit_code == 1
        assert SECRET_KEY_ENV in keyless.output


def test_login_with_config_needs_a_migrated_database(tmp_path: Path) -> None:
    redirect = f"http://127.0.0.1:{free_port()}/lockme/callback"
    config = write_config(
        tmp_path,
        db_url=f"sqlite+aiosqlite:///{tmp_path / 'missing.sqlite3'}",
        lockme_url="http://127.0.0.1:9",
        redirect=redirect,
    )
    result = runner.invoke(
        app, ["lockme", "login", "--config", str(config), "--no-browser", "--timeout", "1"],
        env={SECRET_KEY_ENV: generate_key()},
    )
    assert result.exit_code == 1
    assert "roomkey db upgrade" in result.output
    assert not (tmp_path / "missing.sqlite3").exists()


def test_login_without_config_still_needs_the_client_flags(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["lockme", "login", "--token-file", str(tmp_path / "t.json"), "--no-browser"]
    )
    assert result.exit_code == 2
    assert "--client-id" in result.output
