"""The Lockme token in the database, shared by replicas (SQLite and PostgreSQL).

Covers: encrypted round trip (no clear token anywhere in the database), the store choice and the
``token_storage`` config key, the cross-replica refresh lock (advisory lock / file lock, with
timeouts and cancellation), two replicas on two engines racing for an expired token through the
Lockme simulator (exactly one refresh), and the one-time import of an existing token file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from roomkey.lockme import FileTokenStore, LockingTokenStore, Token
from roomkey.service.config import Config, ConfigError, parse_config
from roomkey.service.crypto import DecryptionError, SecretBox, SecretKeyError, generate_key
from roomkey.service.db.engine import create_engine, create_session_factory
from roomkey.service.db.inventory import get_secret
from roomkey.service.db.models import StoredSecret
from roomkey.service.lockme_gateway import CachedTokenStore, EncryptedFileTokenStore, token_store
from roomkey.service.lockme_token_store import LOCKME_TOKEN_SECRET, DatabaseTokenStore
from roomkey.service.runtime import Service
from roomkey.sim.clock import SimClock
from roomkey.sim.lockme import LockmeSimulator

START = 1_800_000_000.0
CLIENT_SECRET = "token-store-client-secret-never-logged"
LOCKME = "http://lockme.test"
TOKEN = Token(
    access_token="access-ZZZ-never-in-the-db",
    refresh_token="refresh-ZZZ-never-in-the-db",
    expires=START + 3600,
)


def make_config(tmp_path: Path, db_url: str, *, storage: str | None = None) -> Config:
    extra = f'token_storage = "{storage}"\n' if storage else ""
    return parse_config(
        f"""
[service]
data_dir = "data"
database_url = "{db_url}"

[lockme]
client_id = "roomkey"
client_secret = "{CLIENT_SECRET}"
api_domain = "{LOCKME}"
{extra}""",
        base_dir=tmp_path,
    )


@pytest.fixture
async def store(
    engine: AsyncEngine, db_url: str, secret_box: SecretBox
) -> AsyncIterator[DatabaseTokenStore]:
    s = DatabaseTokenStore(db_url, secret_box)
    try:
        yield s
    finally:
        s.close()


async def stored_rows(engine: AsyncEngine) -> list[StoredSecret]:
    async with create_session_factory(engine)() as session:
        return list((await session.execute(select(StoredSecret))).scalars())


# --------------------------------------------------------------------------- storage


async def test_the_token_round_trips_encrypted_and_never_in_clear(
    store: DatabaseTokenStore, engine: AsyncEngine, secret_box: SecretBox, db_backend: str,
    db_url: str,
) -> None:
    assert await store.aload() is None
    store.save(TOKEN)
    assert store.load() == TOKEN
    newer = TOKEN.model_copy(update={"access_token": "access-2-never-in-the-db"})
    await store.asave(newer)  # an upsert: still one row
    assert await store.aload() == newer

    rows = await stored_rows(engine)
    assert [r.name for r in rows] == [LOCKME_TOKEN_SECRET]
    for secret in (newer.access_token, TOKEN.access_token, str(TOKEN.refresh_token)):
        assert secret not in rows[0].ciphertext
    async with create_session_factory(engine)() as session:  # the data layer reads it too
        assert Token.model_validate_json(
            await get_secret(session, secret_box, LOCKME_TOKEN_SECRET) or ""
        ) == newer
    if db_backend == "sqlite":
        raw = b"".join(
            p.read_bytes() for p in Path(db_url.split("///", 1)[1]).parent.glob("*.sqlite3*")
        )
        assert newer.access_token.encode() not in raw
        assert str(TOKEN.refresh_token).encode() not in raw
    else:
        async with engine.connect() as conn:
            found = await conn.execute(text("SELECT t::text FROM secrets t"))
            dump = " ".join(str(v) for v in found.scalars())
        assert newer.access_token not in dump
    for shown in (repr(store), store.location):
        assert "never-in-the-db" not in shown


async def test_a_wrong_key_or_no_key_fails_clearly_without_leaking(
    store: DatabaseTokenStore, db_url: str
) -> None:
    store.save(TOKEN)
    other = DatabaseTokenStore(db_url, SecretBox([generate_key()]))
    keyless = DatabaseTokenStore(db_url, None)
    try:
        with pytest.raises(DecryptionError, match="ROOMKEY_SECRET_KEY") as wrong:
            other.load()
        assert TOKEN.access_token not in str(wrong.value)
        with pytest.raises(SecretKeyError, match="ROOMKEY_SECRET_KEY"):
            keyless.load()
        with pytest.raises(SecretKeyError):
            keyless.save(TOKEN)
    finally:
        other.close()
        keyless.close()


def test_token_storage_is_validated_and_defaults_to_the_database(tmp_path: Path) -> None:
    url = "sqlite+aiosqlite:///x.sqlite3"
    assert make_config(tmp_path, url).lockme.token_storage == "database"
    assert make_config(tmp_path, url, storage="file").lockme.token_storage == "file"
    with pytest.raises(ConfigError) as bad:
        make_config(tmp_path, url, storage="cloud")
    assert "lockme.token_storage" in str(bad.value)


def test_the_store_follows_the_config(tmp_path: Path, secret_box: SecretBox) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}"
    db = token_store(make_config(tmp_path, url), secret_box, url)
    assert isinstance(db, DatabaseTokenStore)
    assert isinstance(db, LockingTokenStore)
    assert isinstance(db.import_from, EncryptedFileTokenStore)  # the import source
    as_file = token_store(make_config(tmp_path, url, storage="file"), secret_box, url)
    assert isinstance(as_file, EncryptedFileTokenStore)
    assert isinstance(token_store(make_config(tmp_path, url, storage="file")), FileTokenStore)
    # no database given (a tool writing a token before the database exists), or one no other
    # process can see: the token file
    assert isinstance(token_store(make_config(tmp_path, url), secret_box), EncryptedFileTokenStore)
    memory = "sqlite+aiosqlite:///:memory:"
    assert isinstance(token_store(make_config(tmp_path, memory), secret_box, memory),
                      EncryptedFileTokenStore)


# --------------------------------------------------------------------------- the lock


async def test_the_refresh_lock_is_shared_by_stores_on_separate_engines(
    store: DatabaseTokenStore, db_url: str, db_backend: str, engine: AsyncEngine,
    secret_box: SecretBox,
) -> None:
    other = DatabaseTokenStore(db_url, secret_box, poll_interval=0.01)
    try:
        with store.refresh_lock(5):
            if db_backend == "postgresql":
                async with engine.connect() as conn:
                    held = (await conn.execute(text(
                        ADVISORY_LOCKS_HERE + " AND granted"
                    ))).scalar_one()
                assert held == 1
            with pytest.raises(TimeoutError), other.refresh_lock(0.1):
                pytest.fail("two replicas held the refresh lock at once")
            with pytest.raises(TimeoutError):
                async with other.async_refresh_lock(0.1):
                    pytest.fail("two replicas held the refresh lock at once")
            # a waiter cancelled mid-wait leaves nothing behind
            waiter = asyncio.create_task(_hold(other, 10))
            await asyncio.sleep(0.1)
            assert not waiter.done()
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        async with other.async_refresh_lock(1):  # free again for the other replica
            with pytest.raises(TimeoutError), store.refresh_lock(0.1):
                pytest.fail("two replicas held the refresh lock at once")
        with store.refresh_lock(1):
            pass
    finally:
        other.close()
    if db_backend == "postgresql":
        async with engine.connect() as conn:
            left = (await conn.execute(text(ADVISORY_LOCKS_HERE))).scalar_one()
        assert left == 0


ADVISORY_LOCKS_HERE = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
    "(SELECT oid FROM pg_database WHERE datname = current_database())"
)


async def _hold(store: DatabaseTokenStore, wait: float) -> None:
    async with store.async_refresh_lock(wait):
        await asyncio.sleep(60)


# --------------------------------------------------------------------------- replicas


def lockme_sim(clock: SimClock) -> LockmeSimulator:
    sim = LockmeSimulator(clock)
    sim.add_oauth_client("roomkey", CLIENT_SECRET, "http://127.0.0.1:8080/lockme/callback")
    return sim


def refreshes(sim: LockmeSimulator) -> list[bool]:
    return [g.ok for g in sim.oauth.grants if g.grant_type == "refresh_token"]


async def test_two_replicas_on_two_engines_refresh_an_expired_token_exactly_once(
    db_url: str, engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    clock = SimClock(start=START, manual=True)
    sim = lockme_sim(clock)
    config = make_config(tmp_path, db_url)
    first = Token.model_validate(sim.issue_token("roomkey"))
    seed = token_store(config, secret_box, db_url)
    seed.save(first)
    engine_b = create_engine(db_url)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url=LOCKME)
    replicas = [
        Service(config, clock=clock, engine=eng, secret_box=secret_box, lockme_http=http,
                instance_id=name, load_optional_workers=False)
        for name, eng in (("replica-a", engine), ("replica-b", engine_b))
    ]
    try:
        # the service reads the database store through its short-lived cache
        assert all(isinstance(r.lockme.store, CachedTokenStore) for r in replicas)
        assert all(isinstance(r.lockme.store.inner, DatabaseTokenStore) for r in replicas)  # type: ignore[attr-defined]
        assert first.expires is not None
        await clock.advance(first.expires - clock.time() + 1)  # both see it expired
        users = await asyncio.gather(*(r.lockme.me() for r in replicas for _ in range(3)))
        assert len({u.userid for u in users}) == 1
        assert refreshes(sim) == [True]  # one refresh reached Lockme, and it worked
        tokens = [await r.lockme.token() for r in replicas]
        assert tokens[0] == tokens[1]
        assert tokens[0].access_token != first.access_token
        assert seed.load() == tokens[0]
    finally:
        for replica in replicas:
            await replica.aclose()
        seed.close()
        await engine_b.dispose()
        await http.aclose()
        await sim.aclose()


# --------------------------------------------------------------------------- migration


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted-file", "plain-file"])
async def test_an_existing_token_file_is_imported_once(
    db_url: str, engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, encrypted: bool,
) -> None:
    config = make_config(tmp_path, db_url)
    assert config.lockme.token_file is not None
    file_store = (
        EncryptedFileTokenStore(config.lockme.token_file, secret_box)
        if encrypted else FileTokenStore(config.lockme.token_file)
    )
    file_store.save(TOKEN)
    before = config.lockme.token_file.read_bytes()
    caplog.set_level(logging.INFO, logger="roomkey.service.lockme_token_store")
    stores = [token_store(config, secret_box, db_url) for _ in range(2)]  # two replicas
    try:
        assert all(isinstance(s, DatabaseTokenStore) for s in stores)
        assert [s.load() for s in stores] == [TOKEN, TOKEN]
        imported = [r for r in caplog.records if "imported the Lockme token" in r.getMessage()]
        assert len(imported) == 1
        assert TOKEN.access_token not in caplog.text
        assert [r.name for r in await stored_rows(engine)] == [LOCKME_TOKEN_SECRET]

        newer = TOKEN.model_copy(update={"access_token": "access-after-refresh"})
        stores[0].save(newer)
        assert stores[1].load() == newer  # the database wins from now on
        assert config.lockme.token_file.read_bytes() == before  # the file is left untouched
        assert len([r for r in caplog.records if "imported" in r.getMessage()]) == 1
    finally:
        for s in stores:
            close = getattr(s, "close", None)
            if callable(close):
                close()


async def test_the_service_runs_on_an_imported_token(
    db_url: str, engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path
) -> None:
    clock = SimClock(start=START, manual=True)
    sim = lockme_sim(clock)
    config = make_config(tmp_path, db_url)
    assert config.lockme.token_file is not None
    token = Token.model_validate(sim.issue_token("roomkey"))
    EncryptedFileTokenStore(config.lockme.token_file, secret_box).save(token)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url=LOCKME)
    service = Service(config, clock=clock, engine=engine, secret_box=secret_box,
                      lockme_http=http, load_optional_workers=False)
    try:
        assert (await service.lockme.me()).userid
        async with create_session_factory(engine)() as session:
            assert await get_secret(session, secret_box, LOCKME_TOKEN_SECRET) == token.to_json()
    finally:
        await service.aclose()
        await http.aclose()
        await sim.aclose()


def test_the_store_never_shows_the_database_password(secret_box: SecretBox) -> None:
    store = DatabaseTokenStore("postgresql://roomkey:pw-never-shown@127.0.0.1:1/x", secret_box)
    for shown in (repr(store), store.location):
        assert "pw-never-shown" not in shown
        assert "127.0.0.1" in shown
    store.close()  # nothing was opened: the engine is created on first use


async def test_a_lock_whose_connection_died_is_released_without_failing_the_refresh(
    store: DatabaseTokenStore, db_url: str, db_backend: str, engine: AsyncEngine,
    secret_box: SecretBox,
) -> None:
    if db_backend != "postgresql":
        pytest.skip("advisory locks live in PostgreSQL sessions")
    other = DatabaseTokenStore(db_url, secret_box, poll_interval=0.01)
    try:
        # the connection holding the lock dies while the lock is held
        async with store.async_refresh_lock(5), engine.connect() as conn:
            holder = ADVISORY_LOCKS_HERE.replace("count(*)", "pid")
            pid = (await conn.execute(text(holder))).scalar_one()
            assert (await conn.execute(
                text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}
            )).scalar_one()
        # leaving the block did not raise; the lock went with the session
        with other.refresh_lock(2):
            store.save(TOKEN)  # and the store's pool still works (the dead connection dropped)
        assert other.load() == TOKEN
    finally:
        other.close()
