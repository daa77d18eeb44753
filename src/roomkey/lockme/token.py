"""OAuth2 tokens and where they live.

:class:`Token` is the persisted shape the PHP SDK uses too (``access_token``, ``refresh_token``,
``expires`` as an absolute Unix timestamp, extra server keys kept). Secrets never appear in its
``repr``. :class:`FileTokenStore` writes the token with mode 0600 by atomic replace (temp file,
fsync, rename, fsync of the directory) and names the lock file used for single-flight refresh.

Two optional extensions of :class:`TokenStore` let other storage plug in: a
:class:`LockingTokenStore` brings its own cross-process refresh lock (e.g. a database advisory
lock shared by several hosts), used instead of the file lock; an :class:`AsyncTokenStore` has
awaitable ``aload``/``asave`` that the async client prefers (storage that would block the event
loop).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import InvalidResponseError

__all__ = [
    "AsyncTokenStore",
    "FileTokenStore",
    "LockingTokenStore",
    "MemoryTokenStore",
    "Token",
    "TokenStore",
]

# The PHP SDK reads an ``expires`` above this value as a timestamp, anything smaller as seconds.
_ABSOLUTE_EXPIRES_THRESHOLD = 1_349_067_600
_SECRET_KEYS = frozenset({"access_token", "refresh_token", "id_token", "code", "client_secret"})


class Token(BaseModel):
    """An OAuth2 token as stored on disk; ``repr`` shows only non-secret fields."""

    model_config = ConfigDict(extra="allow", frozen=True)

    access_token: str = Field(min_length=1, repr=False)
    refresh_token: str | None = Field(default=None, repr=False)
    expires: float | None = None
    token_type: str | None = "Bearer"  # noqa: S105 - a token type, not a secret

    @field_validator("expires", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expires must be a number")
        return value

    @classmethod
    def from_response(cls, payload: dict[str, Any], *, now: float) -> Token:
        """Build a token from a token-endpoint answer (``expires_in`` relative or ``expires``)."""
        data = dict(payload)
        expires_in = data.pop("expires_in", None)
        if data.get("expires") is None and expires_in is not None:
            data["expires"] = now + float(expires_in)
        else:
            expires = data.get("expires")
            if (
                isinstance(expires, int | float)
                and not isinstance(expires, bool)
                and expires < _ABSOLUTE_EXPIRES_THRESHOLD
            ):
                data["expires"] = now + float(expires)
        return cls.model_validate(data)

    def expires_within(self, margin: float, *, now: float) -> bool:
        """True if the token is expired or will be within ``margin`` seconds."""
        return self.expires is not None and self.expires - margin <= now

    def to_json(self) -> str:
        """Serialise (with secrets) for storage."""
        return self.model_dump_json(exclude_none=True)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        yield "expires", self.expires
        yield "token_type", self.token_type
        extra = self.model_extra or {}
        for key, value in extra.items():
            if key not in _SECRET_KEYS and isinstance(value, str | int | float | bool):
                yield key, value


def parse_stored_token(text: str) -> Token:
    """Parse stored token JSON; a relative ``expires`` is not re-based (it is an absolute ts)."""
    try:
        return Token.model_validate_json(text)
    except ValidationError as exc:
        raise InvalidResponseError(
            f"stored token is not valid token JSON ({exc.error_count()} errors)"
        ) from None


@runtime_checkable
class TokenStore(Protocol):
    """Where the client loads and saves its token."""

    def load(self) -> Token | None: ...

    def save(self, token: Token) -> None: ...


@runtime_checkable
class LockingTokenStore(TokenStore, Protocol):
    """A store that provides the cross-process lock around a refresh itself.

    The clients still serialise threads and coroutines of one process with a thread lock, then
    take this lock instead of the file lock next to ``lock_path``. Both context managers must
    give up after ``timeout`` seconds by raising :class:`TimeoutError` (the clients turn it into
    :class:`~roomkey.lockme.errors.NotSentError`), and the async one must not block the event
    loop while it waits.
    """

    def refresh_lock(self, timeout: float) -> AbstractContextManager[None]: ...

    def async_refresh_lock(self, timeout: float) -> AbstractAsyncContextManager[None]: ...


@runtime_checkable
class AsyncTokenStore(TokenStore, Protocol):
    """A store with awaitable load/save, which :class:`AsyncLockmeClient` uses when present."""

    async def aload(self) -> Token | None: ...

    async def asave(self, token: Token) -> None: ...


class MemoryTokenStore:
    """A token store in memory (tests, scripts); refresh is single-flight within the process."""

    def __init__(self, token: Token | None = None) -> None:
        self._token = token
        self._lock = threading.Lock()
        self.lock_path: Path | None = None

    def load(self) -> Token | None:
        with self._lock:
            return self._token

    def save(self, token: Token) -> None:
        with self._lock:
            self._token = token

    def __repr__(self) -> str:
        return f"MemoryTokenStore(has_token={self._token is not None})"


class FileTokenStore:
    """A JSON token file, mode 0600, replaced atomically; ``lock_path`` sits next to it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self.lock_path: Path | None = self.path.with_name(self.path.name + ".lock")

    def load(self) -> Token | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        if not text.strip():
            return None
        return parse_stored_token(text)

    def save(self, token: Token) -> None:
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(token.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        _fsync_dir(directory)

    def __repr__(self) -> str:
        return f"FileTokenStore({str(self.path)!r})"


def _fsync_dir(directory: Path) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dir_fd)


def dumps_redacted(payload: Any) -> str:
    """JSON text of ``payload`` with secret-looking keys replaced by ``***``."""
    return json.dumps(_redact(payload), ensure_ascii=False, default=str)


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("***" if k in _SECRET_KEYS else _redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value
