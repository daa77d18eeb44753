"""Configuration: the example loads; every kind of bad value names its key; secrets stay hidden."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomkey.service.config import Config, ConfigError, load_config, parse_config
from roomkey.service.policy import UnlockMode

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "roomkey.toml"
KEY = base64.b64encode(b"k" * 32).decode()
SECRET_MARK = "SUPERSECRET-value-123"

EXAMPLE_ENV = {
    "ROOMKEY_LOCKME_WEBHOOK_SECRET": "lw",
    "ROOMKEY_LOQED_WEBHOOK_SECRET": "qw",
    "LOCKME_CLIENT_SECRET": SECRET_MARK,
    "VAULT_KEY_SECRET": KEY,
    "VAULT_BRIDGE_KEY": KEY,
    "LOQED_API_TOKEN": "jwt",
    "LAB_API_TOKEN": "tok",
    "LAB_KEY_SECRET": KEY,
    "BACK_OPEN_URL": "https://app.loqed.com/API/lock_command.php?api_token=a&x=1",
    "BACK_LATCH_URL": "https://app.loqed.com/API/lock_command.php?api_token=a&x=2",
    "BACK_NIGHT_LOCK_URL": "https://app.loqed.com/API/lock_command.php?api_token=a&x=3",
    "BACK_STATUS_URL": "https://app.loqed.com/API/lock_status.php?api_token=a",
}

MINIMAL = f"""
[lockme]
client_id = "c"
client_secret = "{SECRET_MARK}"

[[locks]]
id = "door"
name = "Door"
[locks.bridge]
url = "http://10.0.0.2"
key_secret = "{KEY}"
local_key_id = 1
bridge_key = "{KEY}"

[[rooms]]
id = 1
name = "Room"
locks = ["door"]
"""


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE, env=EXAMPLE_ENV)
    assert [lock.id for lock in config.locks] == ["vault-door", "lab-door", "back-door"]
    assert config.lock("vault-door").transports == ["bridge", "cloud"]
    back_app = config.lock("back-door").app
    assert back_app is not None
    assert back_app.uses_urls
    assert [r.id for r in config.rooms_for_lock("back-door")] == [101, 102]
    lab = config.policy_for(102)
    assert lab.unlock_lead_minutes == 5
    assert lab.unlock_mode == UnlockMode.OPEN
    assert config.policy_for(101).unlock_lead_minutes == 10
    assert config.service.data_dir == EXAMPLE.parent / "data"
    assert (
        config.service.db_url() == f"sqlite+aiosqlite:///{EXAMPLE.parent / 'data'}/roomkey.sqlite3"
    )
    assert config.lockme.token_file == EXAMPLE.parent / "data" / "lockme-token.json"
    assert config.lockme.client_secret.get_secret_value() == SECRET_MARK
    assert SECRET_MARK not in repr(config)
    assert SECRET_MARK not in str(config)
    creds = config.lock("vault-door").credentials()
    assert creds["bridge"]["key_secret"] == KEY
    assert creds["app"] is None


def test_defaults() -> None:
    config = parse_config(MINIMAL, base_dir=Path("/srv/rk"))
    assert config.service.reconcile_days_ahead == 14
    assert config.loqed.transport_order == ["bridge", "cloud", "app"]
    assert config.loqed.dedupe_window_seconds == 10
    assert not config.loqed.accept_missing_timestamp
    assert config.rooms[0].timezone == "Europe/Warsaw"
    assert config.lockme.venue_timezone == "Europe/Warsaw"
    assert config.lockme.version == "v2.4"
    assert config.lockme.max_concurrency == 8
    assert config.service.db_url() == "sqlite+aiosqlite:////srv/rk/data/roomkey.sqlite3"
    assert config.lock("door").resolved_loqed_id is None


def test_postgres_url_normalised_and_password_not_in_repr() -> None:
    text = MINIMAL.replace(
        "[lockme]", '[service]\ndatabase_url = "postgresql://rk:pw-XYZ@db/rk"\n\n[lockme]'
    )
    config = parse_config(text)
    assert config.service.db_url() == "postgresql+psycopg://rk:pw-XYZ@db/rk"
    assert "pw-XYZ" not in repr(config)


def _set(toml: str, section_line: str, line: str) -> str:
    """Insert ``line`` right after the first occurrence of ``section_line``."""
    assert section_line in toml
    return toml.replace(section_line, f"{section_line}\n{line}", 1)


BAD_CASES: list[tuple[str, str, str]] = [
    (
        _set(MINIMAL, "[[rooms]]", "timezone = 'Mars/Olympus'"),
        "rooms[0].timezone",
        "unknown time zone",
    ),
    (MINIMAL.replace('locks = ["door"]', 'locks = ["nope"]'), "rooms[0].locks[0]", "unknown lock"),
    (MINIMAL.replace('locks = ["door"]', 'locks = ["door", "door"]'), "rooms[0].locks[1]", "twice"),
    (MINIMAL.replace('locks = ["door"]', "locks = []"), "rooms[0].locks", "at least 1"),
    (MINIMAL + '\n[[rooms]]\nid = 1\nname = "B"\nlocks = ["door"]\n', "rooms[1].id", "duplicate"),
    (
        MINIMAL.replace("local_key_id = 1", "local_key_id = 251"),
        "locks[0].bridge.local_key_id",
        "≤ 250",
    ),
    (
        MINIMAL.replace("local_key_id = 1", "local_key_id = -1"),
        "locks[0].bridge.local_key_id",
        "≥ 0",
    ),
    (MINIMAL.replace('url = "http://10.0.0.2"', 'url = "ftp://x"'), "locks[0].bridge.url", "http"),
    (
        MINIMAL.replace(f'key_secret = "{KEY}"', 'key_secret = "%%%"'),
        "locks[0].bridge.key_secret",
        "base64",
    ),
    (_set(MINIMAL, "[[rooms]]", "bogus = 1"), "rooms[0].bogus", "unknown key"),
    (
        MINIMAL + "\n[rooms.policy]\nunlock_lead_minutes = -5\n",
        "rooms[0].policy.unlock_lead_minutes",
        "≥ 0",
    ),
    (
        MINIMAL + "\n[rooms.policy]\nunlock_mode = 'sometimes'\n",
        "rooms[0].policy.unlock_mode",
        "day_lock",
    ),
    (MINIMAL + "\n[rooms.policy]\nfoo = 1\n", "rooms[0].policy.foo", "unknown key"),
    (
        MINIMAL + "\n[defaults.policy]\nmerge_gap_minutes = 'x'\n",
        "defaults.policy.merge_gap_minutes",
        "integer",
    ),
    (
        MINIMAL + "\n[loqed]\ntransport_order = ['bridge', 'bridge']\n",
        "loqed.transport_order",
        "once",
    ),
    (MINIMAL + "\n[loqed]\ntransport_order = ['pigeon']\n", "loqed.transport_order[0]", "bridge"),
    (MINIMAL + "\n[loqed]\ndedupe_window_seconds = -1\n", "loqed.dedupe_window_seconds", "≥ 0"),
    (_set(MINIMAL, "[lockme]", "redirect_uri = 'not a url'"), "lockme.redirect_uri", "URL"),
    (_set(MINIMAL, "[lockme]", "version = 'v9'"), "lockme.version", "pattern"),
    (_set(MINIMAL, "[lockme]", "max_concurrency = 0"), "lockme.max_concurrency", "≥ 1"),
    (_set(MINIMAL, "[lockme]", "max_concurrency = 'many'"), "lockme.max_concurrency", "integer"),
    (
        _set(MINIMAL, "[lockme]", "[[lockme.departments]]\nid = 0\nname = 'x'"),
        "lockme.departments[0].id",
        "> 0",
    ),
    (MINIMAL.replace('client_id = "c"\n', ""), "lockme.client_id", "required"),
    ("[service]\nport = 70000\n" + MINIMAL, "service.port", "≤ 65535"),
    ("[service]\ndatabase_url = 'mysql://u:pw@h/db'\n" + MINIMAL, "service.database_url", "mysql"),
    ("[service]\nreconcile_days_ahead = 0\n" + MINIMAL, "service.reconcile_days_ahead", "≥ 1"),
    (MINIMAL.replace("[locks.bridge]", "[locks.nope]"), "locks[0].nope", "unknown key"),
    (MINIMAL + '\n[[locks]]\nid = "bare"\nname = "Bare"\n', "locks[1]", "at least one"),
    (
        MINIMAL
        + '\n[[locks]]\nid = "a p"\nname = "x"\n[locks.cloud]\ntoken = "t"\nlock_id = "L"\n',
        "locks[1].id",
        "letters",
    ),
    (
        MINIMAL + '\n[[locks]]\nid = "app"\nname = "x"\n[locks.app]\napi_token = "t"\n',
        "locks[1].app",
        "all of",
    ),
    (
        MINIMAL + '\n[[locks]]\nid = "u"\nname = "x"\n[locks.app]\nopen_url = "https://a/b"\n',
        "locks[1].app",
        "all four",
    ),
    (
        MINIMAL
        + '\n[[locks]]\nid = "door"\nname = "x"\n[locks.cloud]\ntoken = "t"\nlock_id = "L"\n',
        "locks[1].id",
        "duplicate",
    ),
    (
        MINIMAL
        + '\n[[locks]]\nid = "m"\nname = "x"\nloqed_id = "A"\n'
        + '[locks.cloud]\ntoken = "t"\nlock_id = "B"\n',
        "locks[1]",
        "different",
    ),
    ("not = [valid", "", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "path", "fragment"), BAD_CASES)
def test_bad_values_name_their_key(text: str, path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    paths = {issue.path: issue.message for issue in info.value.issues}
    assert path in paths, str(info.value)
    assert fragment.lower() in paths[path].lower(), str(info.value)
    assert SECRET_MARK not in str(info.value)


def test_lockme_max_concurrency_is_read() -> None:
    config = parse_config(_set(MINIMAL, "[lockme]", "max_concurrency = 3"))
    assert config.lockme.max_concurrency == 3


def test_all_problems_reported_at_once() -> None:
    text = MINIMAL.replace('locks = ["door"]', 'locks = ["x", "y"]')
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert [i.path for i in info.value.issues] == ["rooms[0].locks[0]", "rooms[0].locks[1]"]
    assert "rooms[0].locks[0]: unknown lock 'x'" in str(info.value)


def test_env_references() -> None:
    text = MINIMAL.replace(f'client_secret = "{SECRET_MARK}"', 'client_secret = "env:LM_SECRET"')
    config = parse_config(text, env={"LM_SECRET": "from-env"})
    assert config.lockme.client_secret.get_secret_value() == "from-env"
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    assert "lockme.client_secret: environment variable LM_SECRET is not set" in str(info.value)
    bad_key = MINIMAL.replace(f'key_secret = "{KEY}"', 'key_secret = "env:K"')
    with pytest.raises(ConfigError) as info:
        parse_config(bad_key, env={"K": SECRET_MARK})
    assert "locks[0].bridge.key_secret" in str(info.value)
    assert SECRET_MARK not in str(info.value)


def test_secrets_never_in_error_messages_even_when_wrong_type() -> None:
    text = MINIMAL.replace('url = "http://10.0.0.2"', f'url = "http://{SECRET_MARK}:x/"')
    text = text.replace("[[rooms]]", f"[[rooms]]\nbad = '{SECRET_MARK}'")
    with pytest.raises(ConfigError) as info:
        parse_config("[service]\ndatabase_url = 'postgresql://u:" + SECRET_MARK + "@@/x'\n" + text)
    assert SECRET_MARK not in str(info.value)
    assert SECRET_MARK not in repr(info.value.issues)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def _with_policy(field: str, value: Any, section: str = "rooms.policy") -> str:
    rendered = repr(value) if not isinstance(value, bool) else str(value).lower()
    if isinstance(value, str):
        rendered = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return MINIMAL + f"\n[{section}]\n{field} = {rendered}\n"


@settings(max_examples=60, deadline=None)
@given(
    field=st.sampled_from(["unlock_lead_minutes", "lock_lag_minutes", "merge_gap_minutes"]),
    section=st.sampled_from(["rooms.policy", "defaults.policy"]),
    value=st.one_of(
        st.integers(min_value=-10_000, max_value=10_000),
        st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=8),
        st.booleans(),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
    ),
)
def test_policy_minutes_accept_exactly_valid_integers(
    field: str, section: str, value: Any
) -> None:
    text = _with_policy(field, value, section)
    path = "rooms[0].policy" if section == "rooms.policy" else "defaults.policy"
    valid = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 24 * 60
    if not valid:
        with pytest.raises(ConfigError) as info:
            parse_config(text)
        assert any(i.path == f"{path}.{field}" for i in info.value.issues)
        return
    assert getattr(parse_config(text).policy_for(1), field) == value


@settings(max_examples=40, deadline=None)
@given(port=st.one_of(st.integers(-5, 70_000), st.text(alphabet="0123456789abc", max_size=5)))
def test_port_validation(port: Any) -> None:
    rendered = str(port) if isinstance(port, int) else f'"{port}"'
    text = f"[service]\nport = {rendered}\n" + MINIMAL
    try:
        valid = 1 <= int(port) <= 65535
    except ValueError:
        valid = False
    if not valid:
        with pytest.raises(ConfigError) as info:
            parse_config(text)
        assert [i.path for i in info.value.issues] == ["service.port"]
        return
    assert parse_config(text).service.port == int(port)


def test_config_is_frozen() -> None:
    config = parse_config(MINIMAL)
    with pytest.raises(Exception):
        config.service.port = 1  # type: ignore[misc]
    assert isinstance(config, Config)


def test_defaults_policy_applies_to_every_room_and_is_strict() -> None:
    text = MINIMAL + "\n[defaults.policy]\nunlock_lead_minutes = 3\nunlock_mode = 'open_house'\n"
    policy = parse_config(text).policy_for(1)
    assert policy.unlock_lead_minutes == 3
    assert policy.unlock_mode == UnlockMode.OPEN_HOUSE
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + "\n[defaults.policy]\nlock_lag_minutes = true\n")
    assert [i.path for i in info.value.issues] == ["defaults.policy.lock_lag_minutes"]
