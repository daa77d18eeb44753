"""Dashboard users and API tokens: argon2 passwords, SHA-256-hashed bearer tokens.

All functions run inside the caller's transaction and never commit. Plain passwords and
tokens exist only in memory on their way in (and once, when a token is created).
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .models import ApiToken, Role, User

__all__ = [
    "TOKEN_PREFIX",
    "Principal",
    "UserError",
    "authenticate",
    "count_users",
    "create_token",
    "create_user",
    "generate_password",
    "get_user",
    "hash_password",
    "hash_token",
    "list_tokens",
    "list_users",
    "principal_for_token",
    "revoke_token",
    "set_password",
    "verify_password",
]

TOKEN_PREFIX = "rk_"  # noqa: S105 - a public prefix, not a secret
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 10

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against for unknown users (same cost as a real check); built on the
    first failed login rather than at import, where it cost ~140 ms of start-up."""
    return _hasher.hash("roomkey-timing-equaliser")


class UserError(ValueError):
    """A user or token could not be created as asked (the message says why)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user, through a browser session or an API token."""

    user_id: int
    username: str
    role: Role
    via: str
    """``session`` or ``token:<name>``."""

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        suffix = "" if self.via == "session" else f" ({self.via})"
        return f"user:{self.username}{suffix}"[:128]


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def hash_token(token: str) -> str:
    """SHA-256 hex of a token or session id (high-entropy values need no slow hash)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_username(username: str) -> str:
    name = username.strip()
    if not USERNAME_RE.fullmatch(name):
        raise UserError(
            "user names are 1-64 characters: letters, digits and _ . @ - (starting with a "
            "letter or digit)"
        )
    return name


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"passwords need at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise UserError("passwords are at most 1024 characters")


async def create_user(
    session: AsyncSession, username: str, password: str, role: Role, *, now: datetime
) -> User:
    """Add a user; :class:`UserError` if the name is taken or the password too short."""
    name = _check_username(username)
    _check_password(password)
    existing = await session.execute(select(User.id).where(User.username == name))
    if existing.first() is not None:
        raise UserError(f"user {name!r} already exists")
    user = User(
        username=name,
        password_hash=hash_password(password),
        role=Role(role).value,
        active=True,
        created_at=now,
    )
    session.add(user)
    await session.flush()
    return user


async def set_password(session: AsyncSession, username: str, password: str) -> bool:
    _check_password(password)
    result = await session.execute(
        update(User).where(User.username == username).values(password_hash=hash_password(password))
    )
    return bool(getattr(result, "rowcount", 0))


async def get_user(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def list_users(session: AsyncSession) -> list[User]:
    return list((await session.execute(select(User).order_by(User.username))).scalars())


async def count_users(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count(User.id)))).scalar_one())


async def authenticate(
    session: AsyncSession, username: str, password: str, *, now: datetime
) -> User | None:
    """The active user with this name and password (None otherwise, in equal time)."""
    user = (
        await session.execute(select(User).where(User.username == username.strip()[:64]))
    ).scalar_one_or_none()
    if user is None or not user.active:
        verify_password(_dummy_hash(), password)
        return None
    if not verify_password(user.password_hash, password):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = now
    return user


async def create_token(
    session: AsyncSession, username: str, name: str, *, now: datetime
) -> tuple[ApiToken, str]:
    """A new API token for ``username``; returns the row and the token (shown once)."""
    user = (
        await session.execute(select(User).where(User.username == username))
    ).scalar_one_or_none()
    if user is None:
        raise UserError(f"no user {username!r}")
    label = name.strip()
    if not 1 <= len(label) <= 64:
        raise UserError("token names are 1-64 characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user.id,
        name=label,
        token_hash=hash_token(token),
        prefix=token[:10],
        created_at=now,
    )
    session.add(row)
    await session.flush()
    return row, token


async def list_tokens(session: AsyncSession) -> list[tuple[ApiToken, str]]:
    """Every token with its user's name, newest first."""
    rows = await session.execute(
        select(ApiToken, User.username)
        .join(User, User.id == ApiToken.user_id)
        .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    )
    return [(token, username) for token, username in rows.all()]


async def revoke_token(session: AsyncSession, token_id: int, *, now: datetime) -> bool:
    result = await session.execute(
        update(ApiToken)
        .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return bool(getattr(result, "rowcount", 0))


async def principal_for_token(
    session: AsyncSession, token: str, *, now: datetime
) -> Principal | None:
    """The caller an API token stands for (None: unknown, revoked, or its user inactive)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = (
        await session.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == hash_token(token))
        )
    ).first()
    if row is None:
        return None
    api_token, user = row
    if api_token.revoked_at is not None or not user.active:
        return None
    api_token.last_used_at = now
    return Principal(user.id, user.username, Role(user.role), f"token:{api_token.name}")


def generate_password() -> str:
    """A random password for demo credentials (about 96 bits)."""
    return secrets.token_urlsafe(12)
