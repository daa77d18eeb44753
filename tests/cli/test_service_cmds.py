"""``roomkey`` service commands against a small real SQLite database (no network needed).

Every command: JSON when stdout is not a terminal, tables on a terminal, clean errors on
stderr with distinct exit codes, no tracebacks, no secrets.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cli_support import (
    CLIENT_SECRET,
    HOOK_SECRET,
    KEY_SECRET,
    as_json,
    create_pg_database,
    drop_pg_database,
    invoke,
    run,
    seed,
    write_config,
)
from cryptography.fernet import Fernet

from roomkey.cli import output
from roomkey.cli.output import ExitCode, to_jsonable
from roomkey.service.crypto import SecretBox, generate_key
from roomkey.service.db.migrate import head_revision

SECRETS = (CLIENT_SECRET, HOOK_SECRET, KEY_SECRET)


def no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch) -> SecretBox:
    key = generate_key()
    monkeypatch.setenv("ROOMKEY_SECRET_KEY", key)
    return SecretBox([key])


@pytest.fixture
def seeded(tmp_path: Path, box: SecretBox) -> tuple[Path, dict[str, dt.datetime]]:
    config = write_config(tmp_path)
    times = run(seed(config, box, now=dt.datetime.now(dt.UTC)))
    return config, times


def test_help_lists_every_service_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for name in ("serve", "demo", "db", "rooms", "locks", "plan", "events", "sync", "open",
                 "unlock", "lock", "secret-key", "lockme", "sim"):
        assert name in result.stdout


# --------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    "command",
    [["rooms"], ["locks"], ["plan"], ["events"], ["sync"], ["db", "upgrade"], ["serve"],
     ["unlock", "101"], ["open", "101"], ["lock", "101"]],
)
def test_missing_config_exits_3_with_a_hint_and_no_traceback(
    command: list[str], tmp_path: Path, box: SecretBox
) -> None:
    result = invoke(*command, "--config", str(tmp_path / "nope.toml"))
    assert result.exit_code == ExitCode.CONFIG
    assert "no configuration file" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""


def test_default_config_comes_from_the_environment(seeded: tuple[Path, object]) -> None:
    config, _ = seeded
    result = invoke("rooms", env={"ROOMKEY_CONFIG": str(config)})
    assert result.exit_code == 0, result.stderr
    assert [r["id"] for r in as_json(result)] == [101]


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ('[defaults.policy]\nunlock_lead_minutes = -5\n',
         "defaults.policy.unlock_lead_minutes: must be ≥ 0"),
        ('[[rooms]]\nid = 1\nname = "A"\nlocks = ["missing"]\n',
         "rooms[0].locks[0]: unknown lock 'missing'"),
        ('[service]\nport = "eighty"\n', "service.port: must be an integer"),
    ],
)
def test_invalid_config_names_the_bad_key_and_never_its_secret(
    tmp_path: Path, extra: str, problem: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        f'[lockme]\nclient_id = "x"\nclient_secret = "{CLIENT_SECRET}"\n' + extra,
        encoding="utf-8",
    )
    result = invoke("rooms", "--config", str(path), "--json")
    assert result.exit_code == ExitCode.CONFIG
    error = json.loads(result.stderr)["error"]
    assert error["type"] == "config"
    assert error["exit_code"] == 3
    assert problem in error["message"]
    no_secrets(result.stderr, result.stdout)


def test_not_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("this is = = not toml", encoding="utf-8")
    result = invoke("locks", "--config", str(path))
    assert result.exit_code == ExitCode.CONFIG
    assert "not valid TOML" in result.stderr


# --------------------------------------------------------------------------- database


def test_db_upgrade_creates_then_is_idempotent(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    first = invoke("db", "upgrade", "--config", str(config))
    assert first.exit_code == 0, first.stderr
    data = as_json(first)
    assert data["revision"] == head_revision()
    assert data["previous_revision"] is None
    assert data["changed"] is True
    second = as_json(invoke("db", "upgrade", "--config", str(config)))
    assert second["changed"] is False
    assert second["previous_revision"] == head_revision()


@pytest.mark.postgres
def test_db_upgrade_on_postgres_never_prints_the_password(tmp_path: Path) -> None:
    url = create_pg_database("roomkey_cli")
    try:
        with_password = url.replace("postgres@", "postgres:pw-very-secret@")
        config = write_config(tmp_path, database_url=with_password)
        result = invoke("db", "upgrade", "--config", str(config))
        assert result.exit_code == 0, result.stderr
        assert as_json(result)["revision"] == head_revision()
        assert "pw-very-secret" not in result.stdout + result.stderr
        assert "***" in as_json(result)["database"]
    finally:
        drop_pg_database(url)


def test_unreachable_database_exits_6_without_the_url(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, database_url="postgresql+psycopg://roomkey:hunter2-secret@127.0.0.1:9/x"
    )
    result = invoke("db", "upgrade", "--config", str(config))
    assert result.exit_code == ExitCode.UNREACHABLE
    assert "database cannot be reached" in result.stderr
    assert "hunter2-secret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["rooms"], ["locks"], ["plan"], ["events"]])
def test_read_commands_before_the_database_exists_exit_8(
    command: list[str], tmp_path: Path
) -> None:
    config = write_config(tmp_path)
    result = invoke(*command, "--config", str(config))
    assert result.exit_code == ExitCode.DATABASE
    assert "roomkey db upgrade" in result.stderr
    assert not (tmp_path / "data" / "roomkey.sqlite3").exists()  # nothing created by a read


def test_read_commands_on_an_empty_schema_exit_8(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "roomkey.sqlite3").write_bytes(b"")
    result = invoke("rooms", "--config", str(config))
    assert result.exit_code == ExitCode.DATABASE
    assert "not initialised" in result.stderr


# --------------------------------------------------------------------------- rooms / locks


def test_rooms_json_and_table(seeded: tuple[Path, dict[str, dt.datetime]],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    config, times = seeded
    result = invoke("rooms", "--config", str(config))
    assert result.exit_code == 0, result.stderr
    (room,) = as_json(result)
    assert room["id"] == 101
    assert room["locks"] == ["vault-door"]
    assert room["upcoming_bookings"] == 1
    assert room["policy"]["unlock_lead_minutes"] == 10
    assert room["next_action"]["kind"] == "unlock"
    at = dt.datetime.fromisoformat(room["next_action"]["at"])
    assert at == times["unlock_at"]
    no_secrets(result.stdout, result.stderr)

    monkeypatch.setattr(output, "stdout_is_tty", lambda: True)
    monkeypatch.setenv("COLUMNS", "200")
    table = invoke("rooms", "--config", str(config))
    assert table.exit_code == 0
    assert "Rooms" in table.stdout
    assert "The Vault" in table.stdout
    assert "10m / 15m" in table.stdout
    # --json wins over the terminal
    assert as_json(invoke("rooms", "--config", str(config), "--json"))[0]["id"] == 101


def test_locks_show_transports_and_state_never_credentials(
    seeded: tuple[Path, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = seeded
    result = invoke("locks", "--config", str(config))
    assert result.exit_code == 0, result.stderr
    (lock,) = as_json(result)
    assert lock["id"] == "vault-door"
    assert lock["transports"] == ["bridge"]
    assert lock["rooms"] == [101]
    assert lock["loqed_id"] == "Yq1gK4oeE9KWe0ByxjX2"
    no_secrets(result.stdout, result.stderr)
    monkeypatch.setattr(output, "stdout_is_tty", lambda: True)
    monkeypatch.setenv("COLUMNS", "200")
    table = invoke("locks", "--config", str(config))
    assert "vault-door" in table.stdout
    no_secrets(table.stdout)


# --------------------------------------------------------------------------- plan


def test_plan_lists_actions_with_commands_in_venue_time(
    seeded: tuple[Path, dict[str, dt.datetime]], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, times = seeded
    result = invoke("plan", "--config", str(config))
    assert result.exit_code == 0, result.stderr
    rows = as_json(result)
    assert [r["kind"] for r in rows] == ["unlock", "unlock", "lock"]
    past, unlock, lock = rows
    assert past["status"] == "done"
    assert past["command"]["state"] == "confirmed"
    assert dt.datetime.fromisoformat(unlock["planned_at"]) == times["unlock_at"]
    assert unlock["reservations"] == [10001]
    local = times["lock_at"].astimezone(ZoneInfo("Europe/Warsaw"))
    assert lock["planned_local"] == local.strftime("%Y-%m-%d %H:%M:%S")

    only = as_json(invoke("plan", "--config", str(config), "--status", "planned",
                          "--room", "the vault"))
    assert [r["status"] for r in only] == ["planned", "planned"]
    assert as_json(invoke("plan", "--config", str(config), "--since", "10m")) == rows[1:]
    monkeypatch.setattr(output, "stdout_is_tty", lambda: True)
    monkeypatch.setenv("COLUMNS", "200")
    assert "Door plan" in invoke("plan", "--config", str(config)).stdout


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["--room", "999"], ExitCode.NOT_FOUND, "no room '999'"),
        (["--lock", "front"], ExitCode.NOT_FOUND, "no lock 'front'"),
        (["--status", "bogus"], ExitCode.USAGE, "planned, done"),
        (["--since", "yesterday-ish"], ExitCode.USAGE, "neither a duration"),
        (["--days", "0"], ExitCode.USAGE, "greater than or equal to 1"),
    ],
)
def test_plan_wrong_arguments(
    seeded: tuple[Path, object], args: list[str], code: ExitCode, text: str
) -> None:
    config, _ = seeded
    result = invoke("plan", "--config", str(config), *args)
    assert result.exit_code == code
    assert text in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# --------------------------------------------------------------------------- events


def test_events_by_lock_and_room_oldest_first(
    seeded: tuple[Path, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = seeded
    result = invoke("events", "--config", str(config), "--lock", "vault-door")
    assert result.exit_code == 0, result.stderr
    found = as_json(result)
    assert [e["kind"] for e in found] == ["go_to_state", "state_changed"]
    assert {e["command_id"] for e in found} == {"cmd-1"}
    assert {e["reservation_id"] for e in found} == {10000}
    by_loqed_id = invoke("events", "--config", str(config), "--lock", "Yq1gK4oeE9KWe0ByxjX2")
    assert as_json(by_loqed_id) == found
    assert as_json(invoke("events", "--config", str(config), "--room", "101")) == found
    assert as_json(invoke("events", "--config", str(config), "--since", "5m")) == []
    assert len(as_json(invoke("events", "--config", str(config), "--limit", "1"))) == 1
    until = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).isoformat()
    assert as_json(invoke("events", "--config", str(config), "--until", until)) == []
    monkeypatch.setattr(output, "stdout_is_tty", lambda: True)
    monkeypatch.setenv("COLUMNS", "200")
    table = invoke("events", "--config", str(config))
    assert "STATE_CHANGED_LATCH" in table.stdout


@pytest.mark.parametrize(
    ("args", "code"),
    [(["--lock", "nope"], ExitCode.NOT_FOUND), (["--room", "Nope"], ExitCode.NOT_FOUND),
     (["--limit", "0"], ExitCode.USAGE), (["--since", "2x"], ExitCode.USAGE)],
)
def test_events_wrong_arguments(seeded: tuple[Path, object], args: list[str],
                                code: ExitCode) -> None:
    config, _ = seeded
    result = invoke("events", "--config", str(config), *args)
    assert result.exit_code == code
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- secret-key


def test_secret_key_generate_prints_a_fresh_fernet_key(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = invoke("secret-key", "generate")
    assert plain.exit_code == 0
    key = json.loads(plain.stdout)["key"]  # not a terminal: JSON
    Fernet(key)
    monkeypatch.setattr(output, "stdout_is_tty", lambda: True)
    monkeypatch.setenv("COLUMNS", "200")
    text = invoke("secret-key", "generate")
    Fernet(text.stdout.strip())
    assert text.stdout.strip() != key
    assert "ROOMKEY_SECRET_KEY" in text.stderr


# --------------------------------------------------------------------------- serve / sync args


def test_serve_needs_the_secret_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROOMKEY_SECRET_KEY", raising=False)
    config = write_config(tmp_path)
    result = invoke("serve", "--config", str(config))
    assert result.exit_code == ExitCode.CONFIG
    assert "ROOMKEY_SECRET_KEY is not set" in result.stderr


def test_serve_rejects_a_bad_secret_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOMKEY_SECRET_KEY", "not-a-key")
    config = write_config(tmp_path)
    result = invoke("serve", "--config", str(config))
    assert result.exit_code == ExitCode.CONFIG
    assert "not a valid Fernet key" in result.stderr
    assert "not-a-key" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [["--log-format", "xml"], ["--log-level", "loud"], ["--port", "70000"]],
)
def test_serve_wrong_options(tmp_path: Path, box: SecretBox, args: list[str]) -> None:
    config = write_config(tmp_path)
    result = invoke("serve", "--config", str(config), *args)
    assert result.exit_code == ExitCode.USAGE


def test_sync_before_db_upgrade_exits_8(tmp_path: Path, box: SecretBox) -> None:
    config = write_config(tmp_path)
    result = invoke("sync", "--config", str(config))
    assert result.exit_code == ExitCode.DATABASE


def test_sync_wrong_days(tmp_path: Path, box: SecretBox) -> None:
    config = write_config(tmp_path)
    assert invoke("sync", "--config", str(config), "--days", "0").exit_code == ExitCode.USAGE


def test_demo_wrong_options() -> None:
    assert invoke("demo", "--warp", "0").exit_code == ExitCode.USAGE
    assert invoke("demo", "--for", "-3").exit_code == ExitCode.USAGE
    assert invoke("demo", "--port", "-1").exit_code == ExitCode.USAGE


# --------------------------------------------------------------------------- manual, offline


@pytest.mark.parametrize("action", ["open", "unlock", "lock"])
def test_manual_unknown_room_exits_4(seeded: tuple[Path, object], action: str) -> None:
    config, _ = seeded
    result = invoke(action, "Atlantis", "--config", str(config))
    assert result.exit_code == ExitCode.NOT_FOUND
    assert "no room 'Atlantis'" in result.stderr


def test_manual_before_the_locks_are_synced_exits_8(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert invoke("db", "upgrade", "--config", str(config)).exit_code == 0
    result = invoke("unlock", "101", "--config", str(config))
    assert result.exit_code == ExitCode.DATABASE
    assert "not in the database yet" in result.stderr


def test_manual_empty_actor_is_a_usage_error(seeded: tuple[Path, object]) -> None:
    config, _ = seeded
    result = invoke("unlock", "101", "--config", str(config), "--actor", "  ")
    assert result.exit_code == ExitCode.USAGE


def test_manual_unreachable_bridge_exits_6_and_is_audited(
    seeded: tuple[Path, object],
) -> None:
    config, _ = seeded  # its bridge URL is 127.0.0.1:9, where nothing listens
    result = invoke("unlock", "The Vault", "--config", str(config), "--actor", "alice")
    assert result.exit_code == ExitCode.UNREACHABLE, result.stderr
    data = as_json(result)
    assert data["actor"] == "alice"
    (command,) = data["commands"]
    assert command["state"] == "failed"
    assert command["reason"] == "unreachable"
    no_secrets(result.stdout, result.stderr)

    from roomkey.service.config import load_config
    from roomkey.service.db.audit import list_audit
    from roomkey.service.db.engine import create_engine, create_session_factory

    async def audit() -> list[tuple[str, str]]:
        engine = create_engine(load_config(config).service.db_url())
        try:
            async with create_session_factory(engine)() as session:
                return [(e.actor, e.action) for e in await list_audit(session)]
        finally:
            await engine.dispose()

    assert ("alice", "manual.unlock") in run(audit())


def test_actor_defaults_to_user(seeded: tuple[Path, object]) -> None:
    config, _ = seeded
    result = invoke("lock", "101", "--config", str(config), "--no-wait",
                    env={"USER": "bob", "LOGNAME": None})
    assert as_json(result)["actor"] == "bob"


# --------------------------------------------------------------------------- output helpers


def test_to_jsonable_handles_the_types_commands_print() -> None:
    from enum import Enum

    from pydantic import SecretStr

    class Colour(Enum):
        RED = "red"

    moment = dt.datetime(2027, 1, 1, 12, tzinfo=dt.UTC)
    assert to_jsonable(
        {"at": moment, "c": Colour.RED, "s": SecretStr("x"), "p": Path("/a"), "t": (1, 2)}
    ) == {"at": "2027-01-01T12:00:00+00:00", "c": "red", "s": "***", "p": "/a", "t": [1, 2]}


def test_unexpected_errors_are_one_line_and_redacted(
    seeded: tuple[Path, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = seeded
    from roomkey.cli import service_cmds

    async def boom(*_args: object) -> object:
        raise RuntimeError(f"bad thing near ?api_token={CLIENT_SECRET}")

    monkeypatch.setattr(service_cmds, "_rooms", boom)
    result = invoke("rooms", "--config", str(config))
    assert result.exit_code == ExitCode.FAILURE
    assert "unexpected error: RuntimeError" in result.stderr
    assert "Traceback" not in result.stderr
    no_secrets(result.stderr)
