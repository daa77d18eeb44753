"""The Lockme OAuth token kept in the database, shared by every replica.

Lockme rotates the refresh token on every refresh, so replicas must share one token and refresh
it one at a time. :class:`DatabaseTokenStore` keeps it as :class:`~roomkey.service.crypto.
SecretBox` ciphertext in the ``secrets`` table (row ``lockme.oauth_token``, the same encryption
as :func:`~roomkey.service.db.inventory.put_secret`, so ``rotate_secrets`` re-encrypts it) and
provides the SDK's cross-process refresh lock (:class:`~roomkey.lockme.LockingTokenStore`):
a PostgreSQL advisory lock, or a file lock next to the SQLite file (see
:mod:`roomkey.service.db.replica_lock`).

The SDK's token store interface is synchronous (the sync CLI client uses it too), so the store
runs on a small synchronous SQLAlchemy engine of its own on the service's database (psycopg or
pysqlite, created on first use, at most a few connections). The async client calls it through
``aload``/``asave`` (:class:`~roomkey.lockme.AsyncTokenStore`), which run in a worker thread:
a database wait never blocks the event loop. Each operation is one statement (a select, an
upsert), so the SQLite connection runs in autocommit and never holds the write lock for long.

Migration from the token file: when the database holds no token yet and ``import_from`` (the
configured ``[lockme] token_file``) has one, the first ``load`` copies it in (insert-if-absent,
so racing replicas import it once) and logs it. From then on the file is not read again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine

from roomkey.lockme import Token, TokenStore
from roomkey.lockme.token import parse_stored_token
from roomkey.service.crypto import DecryptionError, SecretBox, SecretKeyError
from roomkey.service.db.engine import SQLITE_BUSY_TIMEOUT_MS, normalize_url, redact_url
from roomkey.service.db.models import StoredSecret
from roomkey.service.db.replica_lock import ReplicaLock

__all__ = ["LOCKME_TOKEN_SECRET", "DatabaseTokenStore", "is_shared_database", "sync_engine"]

log = logging.getLogger(__name__)

LOCKME_TOKEN_SECRET = "lockme.oauth_token"  # noqa: S105 - a row name, not a secret
"""Name of the ``secrets`` row holding the Lockme token."""

_secrets = StoredSecret.__table__


def is_shared_database(url: str | URL) -> bool:
    """False for an in-memory SQLite database (another engine would see a different one)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        return True
    database = parsed.database or ""
    return bool(database) and database != ":memory:" and not database.startswith("file:")


def _sqlite_autocommit(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # one statement = one transaction
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def sync_engine(url: str | URL) -> Engine:
    """A small synchronous engine on the service's database (pysqlite / psycopg)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_sync_engine(parsed.set(drivername="sqlite+pysqlite"))
        event.listen(engine, "connect", _sqlite_autocommit)
        return engine
    return create_sync_engine(parsed, pool_size=2, max_overflow=3, pool_pre_ping=True)


def _insert(engine: Engine) -> Any:
    """``INSERT INTO secrets`` with the dialect's ``ON CONFLICT`` clauses."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(StoredSecret)
    return sqlite.insert(StoredSecret)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class DatabaseTokenStore:
    """The Lockme token, encrypted in the ``secrets`` table; refreshes serialised across
    replicas. ``box`` None: every load/save fails with a clear :class:`SecretKeyError`."""

    def __init__(
        self,
        url: str | URL,
        box: SecretBox | None,
        *,
        name: str = LOCKME_TOKEN_SECRET,
        import_from: TokenStore | None = None,
        now: Callable[[], datetime] | None = None,
        poll_interval: float = 0.05,
    ) -> None:
        if not is_shared_database(url):
            raise ValueError("the Lockme token cannot be shared through an in-memory database")
        self._url = normalize_url(url)
        self._box = box
        self.name = name
        self.import_from = import_from
        self._now = now or _utc_now
        self._poll = poll_interval
        self._guard = threading.Lock()
        self._engine: Engine | None = None
        self._lock: ReplicaLock | None = None

    def __repr__(self) -> str:
        return f"DatabaseTokenStore({redact_url(self._url)!r}, name={self.name!r})"

    @property
    def location(self) -> str:
        """Where the token is, for messages (password hidden)."""
        return f"the database {redact_url(self._url)} (secret {self.name!r})"

    # -- plumbing ---------------------------------------------------------------------------
    def _db(self) -> Engine:
        with self._guard:
            if self._engine is None:
                self._engine = sync_engine(self._url)
            return self._engine

    def _replica_lock(self) -> ReplicaLock:
        engine = self._db()
        with self._guard:
            if self._lock is None:
                self._lock = ReplicaLock(engine, "lockme-token-refresh", poll_interval=self._poll)
            return self._lock

    def _sealer(self) -> SecretBox:
        if self._box is None:
            raise SecretKeyError(
                "ROOMKEY_SECRET_KEY is not set: the Lockme token is kept encrypted in the "
                'database ([lockme] token_storage = "database")'
            )
        return self._box

    def close(self) -> None:
        """Release the store's connections (it reconnects if used again)."""
        with self._guard:
            engine, self._engine, self._lock = self._engine, None, None
        if engine is not None:
            engine.dispose()

    # -- TokenStore -------------------------------------------------------------------------
    def load(self) -> Token | None:
        box = self._sealer()
        stored = self._read()
        if stored is None:
            return self._import_once(box)
        return self._open(box, stored)

    def save(self, token: Token) -> None:
        box = self._sealer()
        values = {"ciphertext": box.encrypt(token.to_json()), "updated_at": self._now()}
        engine = self._db()
        stmt = _insert(engine).values(name=self.name, **values).on_conflict_do_update(
            index_elements=[_secrets.c.name], set_=values
        )
        with engine.begin() as conn:
            conn.execute(stmt)

    async def aload(self) -> Token | None:
        return await asyncio.to_thread(self.load)

    async def asave(self, token: Token) -> None:
        await asyncio.to_thread(self.save, token)

    # -- LockingTokenStore ------------------------------------------------------------------
    def refresh_lock(self, timeout: float) -> AbstractContextManager[None]:
        """The cross-replica lock around a refresh (blocking)."""
        return self._replica_lock().hold(timeout)

    def async_refresh_lock(self, timeout: float) -> AbstractAsyncContextManager[None]:
        """The cross-replica lock around a refresh (for event loops)."""
        return self._replica_lock().hold_async(timeout)

    # -- internals --------------------------------------------------------------------------
    def _read(self) -> str | None:
        with self._db().connect() as conn:
            stored = conn.execute(
                select(_secrets.c.ciphertext).where(_secrets.c.name == self.name)
            ).scalar_one_or_none()
        return None if stored is None else str(stored)

    def _open(self, box: SecretBox, stored: str) -> Token:
        try:
            return parse_stored_token(box.decrypt(stored))
        except DecryptionError:
            raise DecryptionError(
                "the Lockme token in the database cannot be decrypted with ROOMKEY_SECRET_KEY"
            ) from None

    def _import_once(self, box: SecretBox) -> Token | None:
        if self.import_from is None:
            return None
        token = self.import_from.load()
        if token is None:
            return None
        engine = self._db()
        stmt = _insert(engine).values(
            name=self.name, ciphertext=box.encrypt(token.to_json()), updated_at=self._now()
        ).on_conflict_do_nothing(index_elements=[_secrets.c.name]).returning(_secrets.c.name)
        with engine.begin() as conn:
            inserted = conn.execute(stmt).scalar_one_or_none() is not None
        if inserted:
            log.info(
                "imported the Lockme token from %r into %s (one-time migration; the file is "
                "no longer read)",
                self.import_from,
                self.location,
            )
        stored = self._read()
        return None if stored is None else self._open(box, stored)
