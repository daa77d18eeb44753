"""roomkey's configuration: one TOML file validated into typed models.

``load_config(path)`` returns a :class:`Config` or raises :class:`ConfigError` listing every
problem by key path, e.g. ``rooms[2].policy.unlock_lead_minutes: must be ≥ 0``. Messages never
contain values of secret fields. Any secret may be written as ``"env:VARNAME"`` to read it from
the environment at load time. See ``docs/configuration.md`` and ``examples/roomkey.toml``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from .db.engine import UnsupportedDatabaseError, normalize_url
from .policy import DoorPolicy

__all__ = [
    "AppAccess",
    "BridgeAccess",
    "CloudAccess",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "Defaults",
    "Department",
    "LockConfig",
    "LockmeConfig",
    "LoqedConfig",
    "RoomConfig",
    "ServiceConfig",
    "Transport",
    "load_config",
    "parse_config",
]

Transport = Literal["bridge", "cloud", "app"]
DEFAULT_TIMEZONE = "Europe/Warsaw"
_ENV_PREFIX = "env:"
_LOCK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


# --------------------------------------------------------------------------- errors


class ConfigIssue(BaseModel):
    """One problem: where (``rooms[2].policy.unlock_lead_minutes``) and what."""

    model_config = ConfigDict(frozen=True)

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The configuration is invalid. ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue], source: str | None = None) -> None:
        self.issues = issues
        self.source = source
        head = f"invalid configuration{f' in {source}' if source else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  {issue}" for issue in issues))


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


_FRIENDLY: dict[str, str] = {
    "greater_than_equal": "must be ≥ {ge}",
    "less_than_equal": "must be ≤ {le}",
    "greater_than": "must be > {gt}",
    "less_than": "must be < {lt}",
    "missing": "is required",
    "extra_forbidden": "unknown key",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "model_type": "must be a table",
    "dict_type": "must be a table",
    "string_too_short": "must not be empty",
    "too_short": "must have at least {min_length} item(s)",
}


def _issue_from_error(err: Mapping[str, Any]) -> ConfigIssue:
    """Format one pydantic error without ever echoing the input value."""
    etype = str(err.get("type", ""))
    ctx = err.get("ctx") or {}
    template = _FRIENDLY.get(etype)
    message: str
    if template is not None:
        try:
            message = template.format(**{k: v for k, v in ctx.items() if k != "error"})
        except (KeyError, IndexError):
            message = str(err.get("msg", "invalid value"))
    elif etype == "value_error":
        message = str(ctx.get("error", err.get("msg", "invalid value")))
    else:
        message = str(err.get("msg", "invalid value"))
    return ConfigIssue(path=_path(tuple(err.get("loc", ()))), message=message)


# --------------------------------------------------------------------------- field types


def _resolve_env(value: Any, info: ValidationInfo) -> Any:
    """``"env:NAME"`` → the value of environment variable NAME (context ``env`` or os.environ)."""
    if isinstance(value, str) and value.startswith(_ENV_PREFIX):
        name = value[len(_ENV_PREFIX) :].strip()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"invalid environment variable reference {value!r}")
        context = info.context if isinstance(info.context, Mapping) else {}
        env: Mapping[str, str] = context.get("env") or os.environ
        if name not in env:
            raise ValueError(f"environment variable {name} is not set")
        return env[name]
    return value


def _not_blank_secret(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise ValueError("must not be empty")
    return value


Secret = Annotated[SecretStr, BeforeValidator(_resolve_env), AfterValidator(_not_blank_secret)]
"""A secret string: hidden in repr/str/logs; may be given as ``env:VARNAME``."""


def _check_base64_secret(value: SecretStr) -> SecretStr:
    try:
        decoded = base64.b64decode(value.get_secret_value(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64 (as shown by LOQED)") from None
    if not decoded:
        raise ValueError("must not be empty")
    return value


Base64Secret = Annotated[Secret, AfterValidator(_check_base64_secret)]


def _check_http_url(value: str) -> str:
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError):
        raise ValueError("must be a valid http(s) URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]


def _check_secret_url(value: SecretStr) -> SecretStr:
    try:
        _check_http_url(value.get_secret_value())
    except ValueError:
        raise ValueError("must be an http:// or https:// URL with a host") from None
    return value


SecretUrl = Annotated[Secret, AfterValidator(_check_secret_url)]
"""A URL that embeds credentials (signed commands, api tokens): treated as a secret."""


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name like Europe/Warsaw)"
        ) from None
    return value


TimeZoneName = Annotated[str, AfterValidator(_check_timezone)]


def _check_lock_id(value: str) -> str:
    if not _LOCK_ID_RE.fullmatch(value):
        raise ValueError("must be 1-64 characters: letters, digits, '_', '.', '-'")
    return value


LockId = Annotated[str, AfterValidator(_check_lock_id)]
LocalKeyId = Annotated[int, Field(ge=0, le=250)]
"""A LOQED key slot: 0-250 (255 means "no key" in events and is never valid here)."""

NonEmptyStr = Annotated[str, Field(min_length=1)]


def _default_transports() -> list[Transport]:
    return ["bridge", "cloud", "app"]


def _unique_transports(value: list[Transport]) -> list[Transport]:
    if len(set(value)) != len(value):
        raise ValueError("each transport may appear once")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- sections


class ServiceConfig(_Model):
    """``[service]``: where roomkey keeps its data and how it is reached."""

    database_url: Secret | None = None
    """SQLAlchemy URL; default ``sqlite+aiosqlite:///<data_dir>/roomkey.sqlite3``. Secret
    because a PostgreSQL URL may carry a password."""
    data_dir: Path = Path("data")
    """Relative paths are resolved against the config file's directory."""
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    public_base_url: HttpUrl | None = None
    """How Lockme and LOQED reach this service (webhook URLs are built from it)."""
    lockme_webhook_secret: Secret | None = None
    """Secret path/query token in the Lockme webhook URL."""
    loqed_webhook_secret: Secret | None = None
    """Secret in the LOQED cloud webhook URL (cloud webhooks are unsigned)."""
    replica_id: str | None = Field(default=None, min_length=1, max_length=64)
    """Names this process in row claims; default ``<hostname>-<pid>``."""
    workers: int = Field(default=2, ge=1, le=64)
    """Concurrent pipeline workers in this process."""
    reconcile_days_ahead: int = Field(default=14, ge=1, le=366)
    reconcile_interval_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    gc_threshold: int = Field(default=50_000, ge=0, le=10_000_000)
    """First-generation threshold of Python's cyclic garbage collector for ``roomkey serve``
    (CPython's default 700 costs ~20 % CPU on bulk work); 0 keeps CPython's default."""

    @property
    def resolved_replica_id(self) -> str:
        return self.replica_id or f"{socket.gethostname()}-{os.getpid()}"

    def db_url(self) -> str:
        """The database URL (normalised to roomkey's async drivers)."""
        if self.database_url is None:
            path = (self.data_dir / "roomkey.sqlite3").as_posix()
            return f"sqlite+aiosqlite:///{path}"
        return normalize_url(self.database_url.get_secret_value()).render_as_string(
            hide_password=False
        )


class Department(_Model):
    id: int = Field(gt=0)
    name: NonEmptyStr


class LockmeConfig(_Model):
    """``[lockme]``: the OAuth client and the venue."""

    client_id: NonEmptyStr
    client_secret: Secret
    redirect_uri: HttpUrl = "http://127.0.0.1:8080/lockme/callback"
    api_domain: HttpUrl = "https://api.lock.me"
    version: Annotated[str, Field(pattern=r"^v2\.\d+$")] = "v2.4"
    token_storage: Literal["database", "file"] = "database"  # noqa: S105 - not a secret
    """``database``: the token is kept encrypted in the database, shared by every replica
    (``token_file``, if present, is imported once). ``file``: kept in ``token_file``."""
    token_file: Path | None = None
    """The token file (encrypted); default ``<data_dir>/lockme-token.json``."""
    venue_timezone: TimeZoneName = DEFAULT_TIMEZONE
    departments: list[Department] = Field(default_factory=list)
    max_concurrency: int = Field(default=8, ge=1, le=256)
    """Most Lockme API requests the service has in flight at once (per replica)."""


class LoqedConfig(_Model):
    """``[loqed]``: event handling and command pipeline settings."""

    dedupe_window_seconds: float = Field(default=10.0, ge=0, le=300)
    max_clock_skew_seconds: float = Field(default=10.0, ge=0, le=600)
    accept_missing_timestamp: bool = False
    """Bridge webhooks without TIMESTAMP (new firmware): reject (default) or accept."""
    transport_order: Annotated[list[Transport], AfterValidator(_unique_transports)] = Field(
        default_factory=lambda: _default_transports(), min_length=1
    )
    status_budget_file: Path | None = None
    """Persisted cloud status-read budget; default ``<data_dir>/loqed-status-budget.json``."""
    keep_event_pii: bool = False
    """Store key/user names and e-mails from lock events (off: dropped before storing)."""
    command_deadline_seconds: float = Field(default=30.0, gt=0, le=600)
    open_deadline_seconds: float = Field(default=10.0, gt=0, le=600)


class BridgeAccess(_Model):
    """Local bridge: ``url`` plus the lock key and the bridge key."""

    url: HttpUrl
    key_secret: Base64Secret
    local_key_id: LocalKeyId
    bridge_key: Base64Secret


class CloudAccess(_Model):
    """Integrations API: a personal access token and the 20-character lock id."""

    token: Secret
    lock_id: NonEmptyStr
    base_url: HttpUrl = "https://integrations.production.loqed.com"


class AppAccess(_Model):
    """app.loqed.com: either the four pre-made URLs, or api_token + lock id + key."""

    open_url: SecretUrl | None = None
    latch_url: SecretUrl | None = None
    night_lock_url: SecretUrl | None = None
    status_url: SecretUrl | None = None
    api_token: Secret | None = None
    lock_id: str | None = Field(default=None, min_length=1)
    key_secret: Base64Secret | None = None
    local_key_id: LocalKeyId | None = None
    base_url: HttpUrl = "https://app.loqed.com/API"

    @property
    def uses_urls(self) -> bool:
        return self.open_url is not None

    @model_validator(mode="after")
    def _one_form(self) -> AppAccess:
        urls = [self.open_url, self.latch_url, self.night_lock_url, self.status_url]
        keyed = [self.api_token, self.lock_id, self.key_secret, self.local_key_id]
        if any(u is not None for u in urls):
            if not all(u is not None for u in urls):
                raise ValueError("give all four of open_url, latch_url, night_lock_url, status_url")
            if any(k is not None for k in keyed):
                raise ValueError(
                    "give either the four URLs or api_token/lock_id/key_secret/local_key_id, "
                    "not both"
                )
            return self
        if not all(k is not None for k in keyed):
            raise ValueError(
                "give either the four URLs, or all of api_token, lock_id, key_secret, local_key_id"
            )
        return self


class LockConfig(_Model):
    """``[[locks]]``: one LOQED lock and every way roomkey may reach it."""

    id: LockId
    """roomkey's name for the lock, used by ``rooms[].locks``."""
    name: NonEmptyStr
    loqed_id: str | None = Field(default=None, min_length=1, max_length=64)
    """LOQED's lock id; default: ``cloud.lock_id`` or ``app.lock_id``."""
    bridge: BridgeAccess | None = None
    cloud: CloudAccess | None = None
    app: AppAccess | None = None

    @property
    def transports(self) -> list[Transport]:
        present: list[Transport] = []
        if self.bridge is not None:
            present.append("bridge")
        if self.cloud is not None:
            present.append("cloud")
        if self.app is not None:
            present.append("app")
        return present

    @property
    def resolved_loqed_id(self) -> str | None:
        if self.loqed_id:
            return self.loqed_id
        if self.cloud is not None:
            return self.cloud.lock_id
        if self.app is not None and self.app.lock_id:
            return self.app.lock_id
        return None

    def credentials(self) -> dict[str, Any]:
        """All transport settings with secrets revealed: for encrypted storage only."""

        def reveal(model: BaseModel | None) -> dict[str, Any] | None:
            if model is None:
                return None
            out: dict[str, Any] = {}
            for name, value in model:
                out[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
            return out

        return {
            "bridge": reveal(self.bridge),
            "cloud": reveal(self.cloud),
            "app": reveal(self.app),
        }

    @model_validator(mode="after")
    def _reachable(self) -> LockConfig:
        if not self.transports:
            raise ValueError("a lock needs at least one of [bridge], [cloud], [app]")
        ids = {
            x
            for x in (
                self.loqed_id,
                self.cloud.lock_id if self.cloud else None,
                self.app.lock_id if self.app else None,
            )
            if x
        }
        if len(ids) > 1:
            raise ValueError("loqed_id, cloud.lock_id and app.lock_id name different locks")
        return self


class RoomConfig(_Model):
    """``[[rooms]]``: a Lockme room, the locks on its doors and its policy overrides."""

    id: int = Field(gt=0)
    """Lockme room id."""
    name: NonEmptyStr
    timezone: TimeZoneName = DEFAULT_TIMEZONE
    department: int | None = Field(default=None, gt=0)
    locks: list[LockId] = Field(min_length=1)
    policy: dict[str, Any] = Field(default_factory=dict)
    """Overrides of ``[defaults.policy]`` (validated against DoorPolicy)."""


def _strict_policy(value: Any) -> Any:
    """Validate a policy table strictly (``true`` or ``"5"`` is not a number of minutes)."""
    if isinstance(value, Mapping):
        return DoorPolicy.model_validate_json(json.dumps(dict(value)), strict=True)
    return value


class Defaults(_Model):
    policy: Annotated[DoorPolicy, BeforeValidator(_strict_policy)] = Field(
        default_factory=DoorPolicy
    )


class Config(_Model):
    """The whole configuration file."""

    service: ServiceConfig = Field(default_factory=ServiceConfig)
    lockme: LockmeConfig
    loqed: LoqedConfig = Field(default_factory=LoqedConfig)
    locks: list[LockConfig] = Field(default_factory=list)
    rooms: list[RoomConfig] = Field(default_factory=list)
    defaults: Defaults = Field(default_factory=Defaults)

    @model_validator(mode="after")
    def _cross_check(self) -> Config:
        problems: list[str] = []
        problems += _duplicates("locks", [lock.id for lock in self.locks], "id")
        problems += _duplicates(
            "locks", [lock.resolved_loqed_id for lock in self.locks], "loqed_id"
        )
        problems += _duplicates("rooms", [room.id for room in self.rooms], "id")
        problems += _duplicates("lockme.departments", [d.id for d in self.lockme.departments], "id")
        known_locks = {lock.id for lock in self.locks}
        departments = {d.id for d in self.lockme.departments}
        for i, room in enumerate(self.rooms):
            seen: set[str] = set()
            for j, lock_id in enumerate(room.locks):
                if lock_id not in known_locks:
                    problems.append(f"rooms[{i}].locks[{j}]: unknown lock {lock_id!r}")
                if lock_id in seen:
                    problems.append(f"rooms[{i}].locks[{j}]: lock {lock_id!r} listed twice")
                seen.add(lock_id)
            if room.department is not None and departments and room.department not in departments:
                problems.append(
                    f"rooms[{i}].department: {room.department} is not in lockme.departments"
                )
            try:
                _merge_policy(self.defaults.policy, room.policy)
            except ValidationError as exc:
                for err in exc.errors():
                    issue = _issue_from_error(err)
                    problems.append(f"rooms[{i}].policy.{issue}")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def policy_for(self, room: RoomConfig | int) -> DoorPolicy:
        """The room's effective policy: ``[defaults.policy]`` + ``[rooms.policy]``."""
        found = room if isinstance(room, RoomConfig) else self.room(room)
        return _merge_policy(self.defaults.policy, found.policy)

    def room(self, room_id: int) -> RoomConfig:
        for room in self.rooms:
            if room.id == room_id:
                return room
        raise KeyError(room_id)

    def lock(self, lock_id: str) -> LockConfig:
        for lock in self.locks:
            if lock.id == lock_id:
                return lock
        raise KeyError(lock_id)

    def rooms_for_lock(self, lock_id: str) -> list[RoomConfig]:
        return [room for room in self.rooms if lock_id in room.locks]


def _merge_policy(defaults: DoorPolicy, overrides: dict[str, Any]) -> DoorPolicy:
    """``defaults`` with a room's overrides, validated strictly (``true`` or ``"5"`` is not a
    number of minutes), enum values given as their strings."""
    merged = {**defaults.model_dump(mode="json"), **overrides}
    return DoorPolicy.model_validate_json(json.dumps(merged), strict=True)


def _duplicates(section: str, values: list[Any], field: str) -> list[str]:
    first: dict[Any, int] = {}
    out: list[str] = []
    for i, value in enumerate(values):
        if value is None:
            continue
        if value in first:
            out.append(
                f"{section}[{i}].{field}: duplicate {value!r} (also {section}[{first[value]}])"
            )
        else:
            first[value] = i
    return out


# --------------------------------------------------------------------------- loading


def _split_cross_check(message: str) -> list[ConfigIssue]:
    issues = []
    for line in message.splitlines():
        path, sep, rest = line.partition(": ")
        if sep:
            issues.append(ConfigIssue(path=path, message=rest))
        else:
            issues.append(ConfigIssue(path="", message=line))
    return issues


def _resolve_paths(config: Config, base_dir: Path) -> Config:
    def absolute(p: Path) -> Path:
        p = p.expanduser()
        return p if p.is_absolute() else (base_dir / p)

    data_dir = absolute(config.service.data_dir)
    service = config.service.model_copy(update={"data_dir": data_dir})
    lockme = config.lockme.model_copy(
        update={
            "token_file": absolute(config.lockme.token_file)
            if config.lockme.token_file
            else data_dir / "lockme-token.json"
        }
    )
    loqed = config.loqed.model_copy(
        update={
            "status_budget_file": absolute(config.loqed.status_budget_file)
            if config.loqed.status_budget_file
            else data_dir / "loqed-status-budget.json"
        }
    )
    return config.model_copy(update={"service": service, "lockme": lockme, "loqed": loqed})


def parse_config(
    text: str,
    *,
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    source: str | None = None,
) -> Config:
    """Validate TOML ``text``. Relative paths resolve against ``base_dir`` (default: cwd)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        issue = ConfigIssue(path="", message=f"not valid TOML: {exc}")
        raise ConfigError([issue], source) from None
    try:
        config = Config.model_validate(data, context={"env": env})
    except ValidationError as exc:
        issues: list[ConfigIssue] = []
        for err in exc.errors(include_input=False, include_url=False):
            issue = _issue_from_error(err)
            if not issue.path and err.get("type") == "value_error":
                issues.extend(_split_cross_check(issue.message))
            else:
                issues.append(issue)
        raise ConfigError(issues, source) from None
    try:
        config.service.db_url()
    except UnsupportedDatabaseError as exc:
        issue = ConfigIssue(path="service.database_url", message=str(exc))
        raise ConfigError([issue], source) from None
    except Exception:  # URL parse errors quote the URL, which may carry a password
        raise ConfigError(
            [
                ConfigIssue(
                    path="service.database_url",
                    message="not a valid database URL (use sqlite+aiosqlite:///PATH or "
                    "postgresql+psycopg://USER@HOST/DB)",
                )
            ],
            source,
        ) from None
    return _resolve_paths(config, base_dir or Path.cwd())


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the TOML file at ``path``."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [ConfigIssue(path="", message=f"cannot read {file}: {exc.strerror}")], str(file)
        ) from None
    return parse_config(text, base_dir=file.resolve().parent, env=env, source=str(file))
