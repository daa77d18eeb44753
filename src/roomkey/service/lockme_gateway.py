"""Builds the Lockme SDK client the service uses, from the config.

The OAuth token lives in ``[lockme] token_file`` (default ``<data_dir>/lockme-token.json``),
written by ``roomkey lockme login``. With a :class:`~roomkey.service.crypto.SecretBox` the file
holds the token encrypted (Fernet); without one it is the SDK's plain 0600 JSON file. An
encrypted store still reads a plain file once (and writes it back encrypted on the next
refresh), so switching on encryption needs no new login.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx

from roomkey.lockme import AsyncLockmeClient, FileTokenStore, OAuthConfig, Token, TokenStore
from roomkey.lockme.token import parse_stored_token
from roomkey.service.config import Config
from roomkey.service.crypto import DecryptionError, SecretBox

__all__ = ["EncryptedFileTokenStore", "build_lockme_client", "oauth_config", "token_store"]

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


def token_store(config: Config, box: SecretBox | None = None) -> TokenStore:
    """Where the token is kept: ``[lockme] token_file``, encrypted when ``box`` is given."""
    path = config.lockme.token_file or config.service.data_dir / "lockme-token.json"
    if box is None:
        return FileTokenStore(path)
    return EncryptedFileTokenStore(path, box)


def build_lockme_client(
    config: Config,
    *,
    clock: Callable[[], float],
    box: SecretBox | None = None,
    store: TokenStore | None = None,
    http_client: httpx.AsyncClient | None = None,
) -> AsyncLockmeClient:
    """The async Lockme client for the service (venue time zone and slot from the config)."""
    return AsyncLockmeClient(
        oauth_config(config),
        store if store is not None else token_store(config, box),
        http_client=http_client,
        clock=clock,
        venue_tz=config.lockme.venue_timezone,
        default_duration=config.defaults.policy.default_slot_minutes,
    )
