"""``roomkey user create`` (the first admin) and ``roomkey token create`` against a real
SQLite database; the created credentials work on the dashboard and the API."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from roomkey.cli.app import app
from roomkey.service.db.migrate import upgrade

CONFIG = """
[service]
data_dir = "data"

[lockme]
client_id = "roomkey"
client_secret = "lockme-client-secret"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    path = tmp_path / "roomkey.toml"
    path.write_text(CONFIG)
    upgrade(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'roomkey.sqlite3'}")
    return path


def _run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_first_admin_then_a_token(config_file: Path) -> None:
    code, out, err = _run(
        "user",
        "create",
        "root",
        "--admin",
        "--password-stdin",
        "-c",
        str(config_file),
        "--json",
        stdin="a-long-password-1\n",
    )
    assert code == 0, err
    assert json.loads(out) == {"username": "root", "role": "admin"}

    code, out, err = _run("token", "create", "root", "--name", "ci", "-c", str(config_file))
    assert code == 0, err
    token = json.loads(out)["token"]  # stdout is not a terminal: JSON
    assert token.startswith("rk_")
    assert len(token) > 40

    db = sqlite3.connect(config_file.parent / "data" / "roomkey.sqlite3")
    try:
        stored = db.execute("SELECT token_hash, prefix FROM web_api_tokens").fetchall()
        password_hash = db.execute("SELECT password_hash FROM web_users").fetchone()[0]
    finally:
        db.close()
    assert stored
    assert stored[0][0] != token
    assert token.startswith(stored[0][1])
    assert password_hash.startswith("$argon2id$")

    code, out, _ = _run("user", "list", "-c", str(config_file), "--json")
    assert code == 0
    assert json.loads(out)[0]["role"] == "admin"


def test_clear_errors(config_file: Path) -> None:
    code, _, err = _run(
        "user", "create", "x", "--password-stdin", "-c", str(config_file), "--json", stdin="short\n"
    )
    assert code == 1
    assert "at least 10 characters" in err
    code, _, err = _run("token", "create", "nobody", "-c", str(config_file), "--json")
    assert code == 4
    assert "no user 'nobody'" in err
    code, _, _ = _run(
        "user",
        "create",
        "dup",
        "--password-stdin",
        "-c",
        str(config_file),
        stdin="a-long-password-1\n",
    )
    assert code == 0
    code, _, err = _run(
        "user",
        "create",
        "dup",
        "--password-stdin",
        "-c",
        str(config_file),
        "--json",
        stdin="a-long-password-1\n",
    )
    assert code == 1
    assert "already exists" in err
