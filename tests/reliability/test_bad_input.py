"""Bad-input suite: generated input against every HTTP surface and against the config loader
and the CLI. Each must answer bad input with a clear 4xx (a typed JSON error for the
receivers and the API), never a 5xx, never crash, and store nothing half-way: a request
that was refused changes no row of the database.

Surfaces: the Lockme webhook receiver, the LOQED bridge and cloud webhook receivers, the
JSON API (schemathesis, from the OpenAPI schema the API serves), the dashboard's forms (as a
logged-in admin with a valid CSRF token, so the input reaches the handlers), the TOML config
loader and the ``roomkey`` CLI.
"""

from __future__ import annotations

import json
import string
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from harness.inproc import (
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
from harness.modes import pick, record_figures
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from roomkey.loqed.signing import decode_key, webhook_payload_hash
from roomkey.service.db.models import Base

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(pick(300, 3600))]

EXAMPLES = pick(50, 500)
COUNTS: dict[str, dict[str, int]] = {}

SUITE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.filter_too_much],
    database=None,
)


def count(surface: str, status: int) -> None:
    bucket = COUNTS.setdefault(surface, {"cases": 0, "2xx": 0, "4xx": 0, "5xx": 0})
    bucket["cases"] += 1
    bucket[f"{status // 100}xx"] = bucket.get(f"{status // 100}xx", 0) + 1
    record_figures("bad_input", surface, dict(bucket))


async def snapshot(venue: Venue) -> dict[str, int]:
    """Row counts of every table (to show a refused request stored nothing)."""
    async with venue.service.session_factory() as session:
        return {
            table.name: (await session.execute(select(func.count()).select_from(table))
                         ).scalar_one()
            for table in Base.metadata.sorted_tables
        }


def assert_clear_error(response: httpx.Response, *, json_error: bool = True) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    if json_error and response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), dict), body
        assert body["error"].get("type"), body


@pytest.fixture
async def venue(tmp_path: Path) -> AsyncIterator[Venue]:
    v = await make_venue(tmp_path, web=True)
    try:
        yield v
    finally:
        await v.close()


header_value = st.one_of(
    st.text(alphabet=string.printable.replace("\r", "").replace("\n", ""), max_size=150),
    st.binary(max_size=80).filter(lambda b: b"\r" not in b and b"\n" not in b),
    st.from_regex(r"\A[0-9]{1,12}\Z"),
)


# --------------------------------------------------------------------------- Lockme receiver


@SUITE
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    right_secret=st.booleans(),
    secret=st.text(max_size=60),
    ids=st.one_of(
        st.lists(header_value, max_size=3),
        st.from_regex(r"\A[A-Za-z0-9_-]{1,130}\Z").map(lambda v: [v]),
    ),
    body=st.binary(max_size=500),
    query=st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=3),
)
async def test_lockme_receiver_never_5xx_and_stores_only_what_it_accepts(
    venue: Venue, method: str, right_secret: bool, secret: str, ids: list[Any],
    body: bytes, query: dict[str, str],
) -> None:
    client = venue.roomkey_client()
    path = f"/hooks/lockme/{quote(HOOK_SECRET if right_secret else secret, safe='') or 'x'}"
    headers = [("X-MessageId", v) for v in ids]
    before = await snapshot(venue)
    response = await client.request(method, path, headers=headers, content=body, params=query)
    after = await snapshot(venue)
    count("lockme_receiver", response.status_code)
    assert_clear_error(response)
    if response.status_code == 200:
        assert response.json()["status"] == "accepted"
    else:
        assert after == before, f"{response.status_code} but the database changed"


# --------------------------------------------------------------------------- LOQED receivers

def _containers(key_size: int, min_key: int = 0) -> Any:
    """``extend`` for ``st.recursive``: lists and string-keyed tables of the children."""

    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(st.text(min_size=min_key, max_size=key_size), children, max_size=3),
        )

    return extend


json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                        st.text(max_size=40))
event_like = st.fixed_dictionaries(
    {},
    optional={
        "event_type": st.one_of(
            st.sampled_from(["STATE_CHANGED_OPEN", "STATE_CHANGED_LATCH", "GO_TO_STATE_DAY_LOCK",
                             "MOTOR_STALL", "BATTERY_CHANGED", "ONLINE_STATUS_CHANGED",
                             "GO_TO_STATE_MANUAL_UNLOCK_BLE_OPEN", "STATE_CHANGED_NIGHT_LOCK"]),
            st.text(max_size=40),
        ),
        "key_local_id": st.one_of(json_scalar, st.integers(-5, 300)),
        "battery_percentage": json_scalar,
        "battery_type": json_scalar,
        "ble_strength": json_scalar,
        "wifi_strength": json_scalar,
        "mac_wifi": json_scalar,
        "mac_ble": json_scalar,
        "lock_id": json_scalar,
        "go_to_state": json_scalar,
        "requested_state": json_scalar,
        "key_name_user": json_scalar,
        "key_account_email": json_scalar,
    },
)
bridge_body = st.one_of(
    st.binary(max_size=300),
    event_like.map(lambda d: json.dumps(d).encode()),
    st.recursive(json_scalar, _containers(8), max_leaves=8).map(lambda d: json.dumps(d).encode()),
)


@SUITE
@given(
    lock=st.one_of(st.just(LOCK), st.text(max_size=40)),
    body=bridge_body,
    signed=st.sampled_from(["right", "wrong", "none", "stale"]),
    hash_header=header_value,
    timestamp=st.one_of(header_value, st.integers(-2**40, 2**40).map(str)),
)
async def test_bridge_receiver_never_5xx_and_stores_only_verified_events(
    venue: Venue, lock: str, body: bytes, signed: str, hash_header: Any, timestamp: Any,
) -> None:
    client = venue.roomkey_client()
    key = decode_key(venue.loqed.bridge("b1").bridge_key)
    headers: list[tuple[str, Any]] = [("Content-Type", "application/json")]
    if signed in ("right", "stale"):
        ts = int(venue.clock.time()) - (0 if signed == "right" else 3600)
        headers += [("HASH", webhook_payload_hash(key, ts, body)), ("TIMESTAMP", str(ts))]
    elif signed == "wrong":
        headers += [("HASH", hash_header), ("TIMESTAMP", timestamp)]
    before = await snapshot(venue)
    response = await client.post(f"/hooks/loqed/bridge/{quote(lock, safe='') or 'x'}",
                                 headers=headers, content=body)
    after = await snapshot(venue)
    count("loqed_bridge_receiver", response.status_code)
    assert_clear_error(response)
    if response.status_code >= 400:
        assert after == before, f"{response.status_code} but the database changed"
    if signed != "right" or lock != LOCK:
        assert response.status_code >= 400, "an unverified bridge webhook was accepted"


@SUITE
@given(right=st.booleans(), secret=st.text(max_size=40), body=bridge_body,
       query=st.dictionaries(st.sampled_from(["lock", "x", ""]), st.text(max_size=30),
                             max_size=2))
async def test_cloud_receiver_never_5xx_and_stores_only_with_the_secret(
    venue: Venue, right: bool, secret: str, body: bytes, query: dict[str, str]
) -> None:
    client = venue.roomkey_client()
    path = f"/hooks/loqed/cloud/{quote(CLOUD_HOOK_SECRET if right else secret, safe='') or 'x'}"
    before = await snapshot(venue)
    response = await client.post(path, content=body, params=query,
                                 headers={"Content-Type": "application/json"})
    after = await snapshot(venue)
    count("loqed_cloud_receiver", response.status_code)
    assert_clear_error(response)
    if response.status_code >= 400:
        assert after == before, f"{response.status_code} but the database changed"
    if not right and secret != CLOUD_HOOK_SECRET:
        assert response.status_code >= 400, "a cloud webhook without the secret was accepted"


# --------------------------------------------------------------------------- the JSON API


@pytest.fixture
async def api_venue(venue: Venue) -> Venue:
    await make_users(venue)
    venue.tokens = {  # type: ignore[attr-defined]
        "admin": await api_token(venue, "admin"),
        "viewer": await api_token(venue, "viewer"),
    }
    return venue


_SCHEMA: dict[str, Any] = {}


async def api_schema(venue: Venue) -> Any:
    """The OpenAPI schema exactly as the API serves it at its stable URL."""
    if "schema" not in _SCHEMA:
        response = await venue.roomkey_client().get("/api/v1/openapi.json")
        assert response.status_code == 200
        _SCHEMA["schema"] = schemathesis.openapi.from_dict(response.json())
    return _SCHEMA["schema"]


def _cases(schema: Any) -> Any:
    """Positive and negative schemathesis cases for every API operation."""
    modes = schemathesis.GenerationMode
    return st.one_of(schema.as_strategy(modes.POSITIVE), schema.as_strategy(modes.NEGATIVE))


@SUITE
@given(data=st.data(), who=st.sampled_from(["admin", "viewer", "garbage", "none"]))
async def test_json_api_never_5xx_and_refusals_store_nothing(
    api_venue: Venue, data: st.DataObject, who: str
) -> None:
    if "strategy" not in _SCHEMA:
        _SCHEMA["strategy"] = _cases(await api_schema(api_venue))
    case = data.draw(_SCHEMA["strategy"])
    kwargs = case.as_transport_kwargs(base_url="http://roomkey.test")
    headers = {k: v for k, v in (kwargs.get("headers") or {}).items()
               if k.lower() not in ("authorization", "connection", "accept-encoding")}
    tokens = api_venue.tokens  # type: ignore[attr-defined]
    if who in tokens:
        headers["Authorization"] = f"Bearer {tokens[who]}"
    elif who == "garbage":
        headers["Authorization"] = "Bearer rk_" + "x" * 40
    request: dict[str, Any] = {"headers": headers, "params": kwargs.get("params") or None}
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    elif "data" in kwargs:
        request["content"] = kwargs["data"] if isinstance(kwargs["data"], bytes | str) else (
            json.dumps(kwargs["data"]))
    client = api_venue.roomkey_client()
    before = await snapshot(api_venue)
    response = await client.request(kwargs["method"], kwargs["url"], **request)
    after = await snapshot(api_venue)
    count("json_api", response.status_code)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} as {who}: {response.status_code} "
        f"{response.text[:300]}"
    )
    if response.status_code >= 400:
        assert after == before, f"{response.status_code} on {case.method} {case.path} stored"
    if who in ("garbage", "none"):  # refused (401; 400 when the request is malformed anyway)
        assert response.status_code in (400, 401), f"anonymous {case.method} {case.path}"
    if who == "viewer" and case.method.upper() != "GET":
        assert response.status_code in (401, 403, 404, 405, 422, 400), (
            f"read-only {case.method} {case.path}: {response.status_code}"
        )


# --------------------------------------------------------------------------- dashboard forms

FORMS = [
    ("POST", "/login"),
    ("POST", "/alerts/{id}/ack"),
    ("POST", "/rooms/{room}/door/{action}"),
    ("POST", "/reconcile"),
    ("POST", "/rooms/{room}/settings"),
    ("POST", "/webhooks/endpoints"),
    ("POST", "/webhooks/endpoints/{id}/{op}"),
    ("POST", "/webhooks/deliveries/{id}/retry"),
    ("POST", "/logout"),
]
form_value = st.one_of(st.text(max_size=60), st.sampled_from(
    ["", "0", "-1", "1e309", "NaN", "open", "unlock", "lock", "day_lock", "open_house",
     "http://127.0.0.1:1/x", "javascript:alert(1)", "<script>", "' OR 1=1 --", "\x00"]))


@SUITE
@given(
    form=st.sampled_from(FORMS),
    fields=st.dictionaries(
        st.sampled_from(["username", "password", "next", "unlock_lead_minutes",
                         "lock_lag_minutes", "unlock_mode", "bookings", "merge_gap_minutes",
                         "max_lateness_minutes", "default_slot_minutes", "lock_action",
                         "locks", "url", "description", "events", "confirm", "x"]),
        form_value, max_size=8),
    ident=st.one_of(st.integers(-3, 10**12).map(str), st.text(max_size=12)),
    action=st.one_of(st.sampled_from(["open", "unlock", "lock", "enable", "disable",
                                      "delete", "rotate"]), st.text(max_size=10)),
    with_csrf=st.booleans(),
)
async def test_dashboard_forms_never_5xx(
    api_venue: Venue, form: tuple[str, str], fields: dict[str, str], ident: str,
    action: str, with_csrf: bool,
) -> None:
    client = api_venue.roomkey_client()
    if not getattr(api_venue, "logged_in", False):
        users = await make_users(api_venue)
        response = await login(client, "admin", users["admin"])
        assert response.status_code in (302, 303), response.text[:200]
        api_venue.cookies = dict(client.cookies)  # type: ignore[attr-defined]
        api_venue.csrf = await session_csrf(client)  # type: ignore[attr-defined]
        api_venue.logged_in = True  # type: ignore[attr-defined]
    client.cookies.update(api_venue.cookies)  # type: ignore[attr-defined]
    method, template = form
    path = template.format(id=quote(ident, safe="") or "0", room=quote(ident, safe="") or "0",
                           action=quote(action, safe="") or "x", op=quote(action, safe="") or "x")
    if with_csrf:
        fields = {**fields, "csrf_token": api_venue.csrf}  # type: ignore[attr-defined]
    before = await snapshot(api_venue)
    response = await client.request(method, path, data=fields)
    after = await snapshot(api_venue)
    count("dashboard_forms", response.status_code)
    assert response.status_code < 500, f"{method} {path} {fields}: {response.status_code}"
    if not with_csrf and template != "/login":
        assert response.status_code in (400, 401, 403, 404, 405, 422), (
            f"{path} without CSRF: {response.status_code}"
        )
        ignore = {"web_login_attempts", "web_sessions"}
        assert {k: v for k, v in after.items() if k not in ignore} == {
            k: v for k, v in before.items() if k not in ignore}
    if template == "/logout" and response.status_code < 400:
        api_venue.logged_in = False  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- config loader

VALID_CONFIG: dict[str, Any] = tomllib.loads(
    """
[service]
data_dir = "data"
lockme_webhook_secret = "a-secret-of-enough-length"
replica_id = "r1"

[lockme]
client_id = "roomkey"
client_secret = "client-secret"
api_domain = "https://api.lock.me"

[loqed]
transport_order = ["bridge"]

[defaults.policy]
unlock_lead_minutes = 10
max_lateness_minutes = 15

[[locks]]
id = "door-1"
name = "Front door"
loqed_id = "Yq1gK4oeE9KWe0ByxjX2"

[locks.bridge]
url = "http://192.168.1.20"
key_secret = "S2V5S2V5S2V5S2V5S2V5S2V5S2V5S2V5S2V5S2V5S2U="
local_key_id = 1
bridge_key = "QnJpZGdlQnJpZGdlQnJpZGdlQnJpZGdlQnJpZGdlQnI="

[[rooms]]
id = 101
name = "The Vault"
locks = ["door-1"]
"""
)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if value == value and abs(value) != float("inf") else "nan"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


def to_toml(data: dict[str, Any]) -> str:
    """A small TOML writer for the generated configs (inline tables where nested)."""
    return "\n".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in data.items()) + "\n"


toml_scalar = st.one_of(st.integers(-10**6, 10**6), st.text(max_size=30), st.booleans(),
                        st.floats(allow_nan=False, allow_infinity=False))
toml_any = st.recursive(toml_scalar, _containers(8, min_key=1), max_leaves=6)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*prefix, i))
    return found


@st.composite
def mutated_config(draw: st.DrawFn) -> tuple[str, str]:
    data = json.loads(json.dumps(VALID_CONFIG))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        how = draw(st.sampled_from(["replace", "delete", "unknown"]))
        if how == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif how == "unknown" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(toml_any)
        else:
            parent[path[-1]] = draw(toml_any)
    return to_toml(data), "/".join(map(str, path))


@SUITE
@given(case=st.one_of(mutated_config(), st.text(max_size=300).map(lambda t: (t, "text"))))
def test_config_loader_gives_a_clear_error_pointing_at_the_key(
    case: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    from roomkey.service.config import Config, ConfigError, parse_config

    text, _where = case
    error: ConfigError | None = None
    try:
        config = parse_config(text, base_dir=Path("/nonexistent-base"), source="roomkey.toml")
    except ConfigError as exc:
        error = exc
    if error is not None:
        count("config_loader", 400)
        assert error.issues, "a ConfigError without issues"
        assert all(issue.message.strip() for issue in error.issues)
        assert "Traceback" not in str(error)
    else:
        count("config_loader", 200)
        assert isinstance(config, Config)


# --------------------------------------------------------------------------- CLI

CLI_COMMANDS = ["rooms", "locks", "plan", "events", "sync", "open", "unlock", "lock",
                "db upgrade", "secret-key generate", "serve"]
cli_token = st.one_of(
    st.sampled_from(["--json", "--room", "--lock", "--since", "--until", "--limit", "--days",
                     "--force", "--actor", "--wait", "--no-wait", "--timeout", "--port",
                     "--log-format", "--log-level", "-1", "0", "10**9", "101", "door-1",
                     "2h", "yesterday", "2027-13-45", "", "--", "--help-me"]),
    st.text(alphabet=string.ascii_letters + string.digits + "-_:. /", max_size=15),
)


@settings(SUITE, max_examples=pick(40, 400))
@given(
    command=st.sampled_from(CLI_COMMANDS),
    args=st.lists(cli_token, max_size=5),
    config_kind=st.sampled_from(["missing", "garbage", "valid-no-db", "invalid"]),
)
def test_cli_fails_cleanly_with_a_non_zero_exit_and_no_traceback(
    command: str, args: list[str], config_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from typer.testing import CliRunner

    from roomkey.cli.app import app

    base = tmp_path_factory.mktemp("cli")
    config = base / "roomkey.toml"
    if config_kind == "garbage":
        config.write_bytes(b"\xff\xfe[[[ not toml")
    elif config_kind == "valid-no-db":
        data = json.loads(json.dumps(VALID_CONFIG))
        data["service"]["data_dir"] = str(base / "data")
        data["lockme"]["api_domain"] = "http://127.0.0.1:9"
        config.write_text(to_toml(data), encoding="utf-8")
    elif config_kind == "invalid":
        config.write_text('[service]\nport = "eighty"\n', encoding="utf-8")
    if command == "serve":
        args = [a for a in args if a not in ("--port",)]
        if config_kind == "valid-no-db":
            config.write_text('[service]\nport = -1\n', encoding="utf-8")
    argv = [*command.split(), *args, "--config", str(config)]
    if command == "secret-key generate":
        argv = [*command.split(), *args]
    result = CliRunner().invoke(
        app, argv, env={"ROOMKEY_SECRET_KEY": "", "COLUMNS": "120"}, catch_exceptions=True
    )
    count("cli", 200 if result.exit_code == 0 else 400)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"roomkey {' '.join(argv)} crashed: {result.exception!r}")
    output = result.output + (result.stderr if result.stderr_bytes else "")
    assert "Traceback" not in output, output[-800:]
    if config_kind in ("missing", "garbage", "invalid") and command != "secret-key generate":
        assert result.exit_code != 0, f"roomkey {' '.join(argv)} succeeded on a bad config"
