"""Secrets at rest: Fernet encryption with a key from the environment.

Every credential roomkey writes to its database (LOQED key secrets, bridge keys, API tokens,
signed app.loqed.com URLs, Lockme OAuth tokens) goes through a :class:`SecretBox` first.

The key comes from ``ROOMKEY_SECRET_KEY``: one url-safe base64 Fernet key, or several separated
by commas for rotation. The first key encrypts; every key decrypts (``MultiFernet``). To rotate:
put a new key first, keep the old one after it, run :meth:`SecretBox.rotate` over stored values
(``roomkey.service.db.inventory.rotate_secrets``), then drop the old key.

Create a key with :func:`generate_key`::

    python -c "from roomkey.service.crypto import generate_key; print(generate_key())"
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

__all__ = [
    "SECRET_KEY_ENV",
    "CryptoError",
    "DecryptionError",
    "SecretBox",
    "SecretKeyError",
    "generate_key",
]

SECRET_KEY_ENV = "ROOMKEY_SECRET_KEY"  # noqa: S105 - the variable name, not a secret


_HOW_TO_CREATE = (
    "create one with: python -c "
    "'from roomkey.service.crypto import generate_key; print(generate_key())'"
)


class CryptoError(Exception):
    """Base class for secrets-at-rest errors. Messages never contain key material."""


class SecretKeyError(CryptoError):
    """The encryption key is missing or malformed."""


class DecryptionError(CryptoError):
    """A stored value could not be decrypted: wrong key, or the value was tampered with."""


def generate_key() -> str:
    """A fresh random key, suitable as ``ROOMKEY_SECRET_KEY``."""
    return Fernet.generate_key().decode("ascii")


class SecretBox:
    """Encrypts and decrypts small secrets (str or JSON) with one or more Fernet keys."""

    __slots__ = ("_fernet", "_key_count")

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        if not keys:
            raise SecretKeyError(f"no encryption key given (set {SECRET_KEY_ENV})")
        fernets: list[Fernet] = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.strip()))
            except (ValueError, TypeError):
                raise SecretKeyError(
                    f"encryption key #{position} is not a valid Fernet key "
                    f"(32 url-safe base64-encoded bytes; {_HOW_TO_CREATE})"
                ) from None
        self._fernet = MultiFernet(fernets)
        self._key_count = len(fernets)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SecretBox:
        """The box for the key(s) in ``ROOMKEY_SECRET_KEY`` (comma-separated, newest first)."""
        env = os.environ if environ is None else environ
        raw = env.get(SECRET_KEY_ENV, "").strip()
        if not raw:
            raise SecretKeyError(
                f"{SECRET_KEY_ENV} is not set: roomkey needs it to store credentials encrypted. "
                f"{_HOW_TO_CREATE[0].upper()}{_HOW_TO_CREATE[1:]}, and keep it safe (losing it "
                "means re-entering every stored credential)."
            )
        return cls([part for part in (p.strip() for p in raw.split(",")) if part])

    def __repr__(self) -> str:
        return f"SecretBox(keys={self._key_count})"

    def encrypt(self, value: str | bytes) -> str:
        """Encrypt ``value``; the result is an ASCII token safe to store in a text column."""
        data = value.encode("utf-8") if isinstance(value, str) else value
        return self._fernet.encrypt(data).decode("ascii")

    def decrypt_bytes(self, token: str | bytes) -> bytes:
        """Decrypt a token made by :meth:`encrypt`."""
        raw = token.encode("ascii") if isinstance(token, str) else token
        try:
            return self._fernet.decrypt(raw)
        except (InvalidToken, ValueError, TypeError):
            raise DecryptionError(
                "stored secret cannot be decrypted with the configured key(s) "
                f"({SECRET_KEY_ENV} changed, or the value was tampered with)"
            ) from None

    def decrypt(self, token: str | bytes) -> str:
        """Decrypt a token made by :meth:`encrypt` into text."""
        return self.decrypt_bytes(token).decode("utf-8")

    def encrypt_json(self, value: Any) -> str:
        """Encrypt a JSON-serialisable value (keys sorted, so equal values compare equal)."""
        return self.encrypt(json.dumps(value, sort_keys=True, separators=(",", ":")))

    def decrypt_json(self, token: str | bytes) -> Any:
        """Decrypt a token made by :meth:`encrypt_json`."""
        return json.loads(self.decrypt_bytes(token))

    def rotate(self, token: str | bytes) -> str:
        """Re-encrypt ``token`` with the first (newest) key."""
        raw = token.encode("ascii") if isinstance(token, str) else token
        try:
            return self._fernet.rotate(raw).decode("ascii")
        except (InvalidToken, ValueError, TypeError):
            raise DecryptionError(
                "stored secret cannot be decrypted with the configured key(s)"
            ) from None
