"""Venues for the benchmarks: roomkey configs, secrets, and the requests the load sends.

Configs are written with roomkey's own :func:`roomkey.service.demo.config_toml` (the one the
demo and the end-to-end tests use), so the benchmarks run the service as a venue would.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import HttpRequest, LoadSpec
from roomkey.loqed.signing import decode_key, webhook_payload_hash
from roomkey.service.crypto import SECRET_KEY_ENV, generate_key
from roomkey.service.demo import SimLockSpec, config_toml

LOCKME_SECRET = "bench-lockme-hook"  # noqa: S105 - throwaway loopback secret
LOQED_SECRET = "bench-loqed-hook"  # noqa: S105 - throwaway loopback secret
CLIENT_ID = "roomkey-bench"
CLIENT_SECRET = "bench-client-secret"  # noqa: S105 - throwaway loopback secret
DEAD_URL = "http://127.0.0.1:9"
"""A loopback address nothing listens on (the discard port): for services never called."""


def b64_key(size: int = 32) -> str:
    return base64.b64encode(secrets.token_bytes(size)).decode("ascii")


def offline_lock(index: int) -> SimLockSpec:
    """A lock with a bridge at :data:`DEAD_URL` (its webhooks are verified; nothing is sent
    to it because it has no due actions)."""
    return SimLockSpec(
        roomkey_id=f"noise-{index}",
        name=f"Noise lock {index}",
        loqed_id=f"NOISE{index:015d}",
        bridge_id=f"nb{index}",
        bridge_url=f"{DEAD_URL}/bridges/nb{index}",
        local_key_id=1,
        key_secret=b64_key(),
        bridge_key=b64_key(),
    )


@dataclass
class Venue:
    """A written config plus the environment the service needs to read it."""

    directory: Path
    config_path: Path
    db_url: str
    env: dict[str, str]
    locks: list[SimLockSpec] = field(default_factory=list)
    rooms: list[tuple[int, str, list[str]]] = field(default_factory=list)


def write_venue(
    directory: Path,
    *,
    locks: Sequence[SimLockSpec],
    rooms: Sequence[tuple[int, str, Sequence[str]]],
    lockme_url: str = DEAD_URL,
    database_url: str | None = None,
    service: Mapping[str, Any] | None = None,
    loqed: Mapping[str, Any] | None = None,
    policy: Mapping[str, Any] | None = None,
) -> Venue:
    """Write ``roomkey.toml`` into ``directory`` (SQLite there unless ``database_url``)."""
    directory.mkdir(parents=True, exist_ok=True)
    db_url = database_url or f"sqlite+aiosqlite:///{(directory / 'roomkey.sqlite3').as_posix()}"
    text = config_toml(
        lockme_url=lockme_url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        rooms=[(rid, name, list(lock_ids)) for rid, name, lock_ids in rooms],
        locks=list(locks),
        data_dir=str(directory),
        database_url=db_url,
        webhook_secret=LOCKME_SECRET,
        service={
            "loqed_webhook_secret": LOQED_SECRET,
            "replica_id": "bench",
            "reconcile_days_ahead": 1,
            **(service or {}),
        },
        loqed={"max_clock_skew_seconds": 120, **(loqed or {})},
        policy=policy,
    )
    path = directory / "roomkey.toml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    env = {SECRET_KEY_ENV: generate_key()}
    listed = [(r, n, list(ls)) for r, n, ls in rooms]
    return Venue(directory, path, db_url, env, list(locks), listed)


# --------------------------------------------------------------------------- load requests


def lockme_load(run_tag: str) -> LoadSpec:
    """Lockme webhooks as Lockme sends them: empty body, a new ``X-MessageId`` each."""
    return LoadSpec(
        [HttpRequest("POST", f"/hooks/lockme/{LOCKME_SECRET}", {"User-Agent": "LockMe/1.0"})],
        unique_header="X-MessageId",
        unique_prefix=f"{run_tag}-",
    )


_EVENTS: list[dict[str, Any]] = [
    {"go_to_state": "OPEN", "event_type": "GO_TO_STATE_TWIST_ASSIST_OPEN", "key_local_id": 255},
    {
        "requested_state": "OPEN",
        "requested_state_numeric": 1,
        "event_type": "STATE_CHANGED_OPEN",
        "key_local_id": 255,
    },
    {
        "go_to_state": "DAY_LOCK",
        "event_type": "GO_TO_STATE_TWIST_ASSIST_LATCH",
        "key_local_id": 255,
    },
    {
        "requested_state": "DAY_LOCK",
        "requested_state_numeric": 2,
        "event_type": "STATE_CHANGED_LATCH",
        "key_local_id": 255,
    },
    {"battery_type": "NICKEL_METAL_HYDRIDE", "battery_percentage": 0},
]


def bridge_load(locks: Sequence[SimLockSpec], *, count: int = 400, timestamp: int) -> LoadSpec:
    """Signed bridge webhooks (``HASH``/``TIMESTAMP``) spread over ``locks``: consecutive
    events of one lock always differ, so every delivery is a new event to store."""
    requests: list[HttpRequest] = []
    for i in range(count):
        lock = locks[i % len(locks)]
        template = dict(_EVENTS[(i // len(locks)) % len(_EVENTS)])
        if "battery_percentage" in template:
            template["battery_percentage"] = 40 + (i % 60)
        body = {
            **template,
            "mac_wifi": f"aa:bb:cc:00:00:{i % len(locks):02x}",
            "mac_ble": f"aa:bb:cc:00:01:{i % len(locks):02x}",
        }
        raw = json.dumps(body, separators=(",", ":")).encode("utf-8")
        digest = webhook_payload_hash(decode_key(lock.bridge_key), timestamp, raw)
        requests.append(
            HttpRequest(
                "POST",
                f"/hooks/loqed/bridge/{lock.roomkey_id}",
                {
                    "Content-Type": "application/json",
                    "TIMESTAMP": str(timestamp),
                    "HASH": digest,
                },
                raw,
            )
        )
    return LoadSpec(requests)
