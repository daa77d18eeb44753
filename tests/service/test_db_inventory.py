"""Config → database mirror, with credentials encrypted at rest (never clear on disk)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from roomkey.service.config import Config, parse_config
from roomkey.service.crypto import SecretBox
from roomkey.service.db import inventory
from roomkey.service.db.models import Lock, Room

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEY_SECRET = base64.b64encode(b"very-secret-lock-key-material!!!").decode()
BRIDGE_KEY = base64.b64encode(b"bridge-key-material-for-webhooks").decode()
TOKEN = "pat-token-CLEARTEXT-MARKER"
CLIENT_SECRET = "lockme-client-secret-MARKER"


def _config(lead: int = 10, second_room_locks: str = '["a", "b"]') -> Config:
    return parse_config(
        f"""
[lockme]
client_id = "c"
client_secret = "{CLIENT_SECRET}"

[[locks]]
id = "a"
name = "A"
[locks.bridge]
url = "http://10.0.0.2"
key_secret = "{KEY_SECRET}"
local_key_id = 1
bridge_key = "{BRIDGE_KEY}"
[locks.cloud]
token = "{TOKEN}"
lock_id = "Yq1gK4oeE9KWe0ByxjX2"

[[locks]]
id = "b"
name = "B"
[locks.cloud]
token = "{TOKEN}"
lock_id = "Zq1gK4oeE9KWe0ByxjX2"

[defaults.policy]
unlock_lead_minutes = {lead}

[[rooms]]
id = 1
name = "One"
locks = ["a"]

[[rooms]]
id = 2
name = "Two"
locks = {second_room_locks}
[rooms.policy]
lock_lag_minutes = 5
"""
    )


async def test_sync_inventory_and_changes(
    session_factory: async_sessionmaker[AsyncSession], secret_box: SecretBox
) -> None:
    async with session_factory.begin() as s:
        report = await inventory.sync_inventory(s, _config(), secret_box, now=T0)
        assert report.locks_added == ["a", "b"]
        assert sorted(report.rooms_added) == [1, 2]
    async with session_factory.begin() as s:
        again = await inventory.sync_inventory(s, _config(), secret_box, now=T0)
        assert not again.changed
        creds = await inventory.lock_credentials(s, secret_box, "a")
        assert creds["bridge"]["key_secret"] == KEY_SECRET
        assert creds["cloud"]["token"] == TOKEN
        assert [r.id for r in await inventory.rooms_for_lock(s, "a")] == [1, 2]
        assert [lk.id for lk in await inventory.locks_for_room(s, 2)] == ["a", "b"]
        found = await inventory.find_lock_by_loqed_id(s, "Zq1gK4oeE9KWe0ByxjX2")
        assert found is not None
        assert found.id == "b"
        room2 = await s.get(Room, 2)
        assert room2 is not None
        assert room2.policy["lock_lag_minutes"] == 5
        assert room2.policy["unlock_lead_minutes"] == 10
    later = T0 + timedelta(hours=1)
    async with session_factory.begin() as s:
        changed = await inventory.sync_inventory(
            s, _config(lead=3, second_room_locks='["b"]'), secret_box, now=later
        )
        assert sorted(changed.rooms_updated) == [1, 2]
        assert not changed.locks_updated
        assert [lk.id for lk in await inventory.locks_for_room(s, 2)] == ["b"]
    cfg = _config()
    only_a = cfg.model_copy(update={"locks": cfg.locks[:1], "rooms": cfg.rooms[:1]})
    async with session_factory.begin() as s:
        gone = await inventory.sync_inventory(s, only_a, secret_box, now=later)
        assert gone.locks_deactivated == ["b"]
        assert gone.rooms_deactivated == [2]
        assert [lk.id for lk in await inventory.list_locks(s)] == ["a"]
        assert [lk.id for lk in await inventory.list_locks(s, active_only=False)] == ["a", "b"]
        assert [r.id for r in await inventory.list_rooms(s)] == [1]


def _read_sqlite_files(database: str) -> bytes:
    raw = b""
    for suffix in ("", "-wal"):
        path = Path(f"{database}{suffix}")
        if path.exists():
            raw += path.read_bytes()
    return raw


async def test_credentials_never_stored_in_clear(
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
    secret_box: SecretBox,
    db_url: str,
) -> None:
    async with session_factory.begin() as s:
        await inventory.sync_inventory(s, _config(), secret_box, now=T0)
        await inventory.put_secret(s, secret_box, "lockme_token", f'{{"t":"{TOKEN}"}}', now=T0)
    async with session_factory() as s:
        for lock in (await s.execute(select(Lock))).scalars():
            assert lock.credentials_enc is not None
            for marker in (KEY_SECRET, BRIDGE_KEY, TOKEN):
                assert marker not in lock.credentials_enc
            assert TOKEN not in repr(lock)
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        await engine.dispose()  # checkpoint-independent: read the main file and the WAL
        raw = _read_sqlite_files(str(url.database))
        assert b"Yq1gK4oeE9KWe0ByxjX2" in raw  # the (non-secret) lock id is there in clear…
        for marker in (KEY_SECRET, BRIDGE_KEY, TOKEN, CLIENT_SECRET):
            assert marker.encode() not in raw  # …the secrets are not
