"""Builds the Lockme SDK client the service uses, from the config.

Where the OAuth token lives is ``[lockme] token_storage``:

* ``database`` (default): encrypted in the service's database
  (:class:`~roomkey.service.lockme_token_store.DatabaseTokenStore`), one token for every
  replica, refreshed by one replica at a time under a database lock. A token already in
  ``[lockme] token_file`` is imported once when the database has none.
* ``file``: ``[lockme] token_file`` (default ``<data_dir>/lockme-token.json``). With a
  :class:`~roomkey.service.crypto.SecretBox` the file holds the token encrypted (Fernet); without
  one it is the SDK's plain 0600 JSON file. An encrypted store still reads a plain file once (and
  writes it back encrypted on the next refresh), so switching on encryption needs no new login.
  Replicas on several hosts cannot share a file lock: use ``database`` there.

``roomkey lockme login --config`` saves through the same store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy.engine import URL

from roomkey.lockme import AsyncLockmeClient, FileTokenStore, OAuthConfig, Token, TokenStore
from roomkey.lockme.token import parse_stored_token
from roomkey.service.config import Config
from roomkey.service.crypto import DecryptionError, SecretBox
from roomkey.service.lockme_token_store import DatabaseTokenStore, is_shared_database

__all__ = [
    "EncryptedFileTokenStore",
    "build_lockme_client",
    "file_token_store",
    "oauth_config",
    "token_store",
]

log = logging.getLogger(__name__)

_ENCRYPTED_PREFIX = "fernet:"


class EncryptedFileTokenStore:
    """A :class:`~roomkey.lockme.FileTokenStore` whose content is encrypted at rest."""

    def __init__(self, path: str | os.PathLike[str], box: SecretBox) -> None:
        self._plain = FileTokenStore(path)
        self._box = box
        self.path = self._plain.path
        self.lock_path: Path | None = self._plain.lock_path

    def load(self) -> Token | None:
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        if not text:
            return None
        if not text.startswith(_ENCRYPTED_PREFIX):
            return parse_stored_token(text)  # written by a plain store; re-encrypted on save
        try:
            return parse_stored_token(self._box.decrypt(text[len(_ENCRYPTED_PREFIX) :]))
        except DecryptionError:
            raise DecryptionError(
                f"the Lockme token file {self.path} cannot be decrypted with ROOMKEY_SECRET_KEY"
            ) from None

    def save(self, token: Token) -> None:
        self._write(_ENCRYPTED_PREFIX + self._box.encrypt(token.to_json()))

    def _write(self, text: str) -> None:
        """Atomic replace of the file, mode 0600."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def __repr__(self) -> str:
        return f"EncryptedFileTokenStore({str(self.path)!r})"


def oauth_config(config: Config) -> OAuthConfig:
    """The SDK's OAuth settings from ``[lockme]``."""
    lockme = config.lockme
    return OAuthConfig(
        client_id=lockme.client_id,
        client_secret=lockme.client_secret.get_secret_value(),
        redirect_uri=lockme.redirect_uri,
        api_domain=lockme.api_domain,
        version=lockme.version,
    )


def file_token_store(config: Config, box: SecretBox | None = None) -> TokenStore:
    """``[lockme] token_file``, encrypted when ``box`` is given."""
    path = config.lockme.token_file or config.service.data_dir / "lockme-token.json"
    if box is None:
        return FileTokenStore(path)
    return EncryptedFileTokenStore(path, box)


def token_store(
    config: Config,
    box: SecretBox | None = None,
    engine_url: str | URL | None = None,
    *,
    clock: Callable[[], float] | None = None,
) -> TokenStore:
    """Where the service keeps the token (``[lockme] token_storage``).

    ``engine_url`` is the service's database. Without it (a tool writing a token before the
    database exists), or with ``token_storage = "file"``, or on an in-memory SQLite database
    (which no other process can see), the token file is used. With ``database`` storage the
    file is the one-time import source.
    """
    fallback = file_token_store(config, box)
    if config.lockme.token_storage != "database" or engine_url is None:  # noqa: S105
        return fallback
    if not is_shared_database(engine_url):
        log.warning("in-memory database: the Lockme token stays in the token file")
        return fallback
    now = None if clock is None else (lambda: datetime.fromtimestamp(clock(), tz=UTC))
    return DatabaseTokenStore(engine_url, box, import_from=fallback, now=now)


def build_lockme_client(
    config: Config,
    *,
    clock: Callable[[], float],
    box: SecretBox | None = None,
    store: TokenStore | None = None,
    http_client: httpx.AsyncClient | None = None,
    engine_url: str | URL | None = None,
) -> AsyncLockmeClient:
    """The async Lockme client for the service (venue time zone and slot from the config).

    ``store`` overrides :func:`token_store` (tests); ``engine_url`` is the service's database.
    """
    return AsyncLockmeClient(
        oauth_config(config),
        store if store is not None else token_store(config, box, engine_url, clock=clock),
        http_client=http_client,
        clock=clock,
        venue_tz=config.lockme.venue_timezone,
        default_duration=config.defaults.policy.default_slot_minutes,
    )
