"""The dashboard's own tables, registered on the service's declarative ``Base``.

Users and their sessions, API tokens, login attempts (for the rate limit), operator overrides
of the room ↔ lock mapping and door policies, and outgoing webhook endpoints with their
deliveries and attempts. Every secret is stored hashed (passwords: argon2; session ids and API
tokens: SHA-256 of a high-entropy random value) or encrypted (webhook signing secrets:
``SecretBox``). Created by the migration ``0002_web_users_tokens_webhooks``.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from roomkey.service.db.models import Base, BigId
from roomkey.service.db.types import JSONType

__all__ = [
    "ApiToken",
    "DeliveryState",
    "LoginAttempt",
    "Role",
    "RoomOverride",
    "User",
    "WebSession",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
]


class Role(enum.StrEnum):
    """What a dashboard user or API token may do."""

    ADMIN = "admin"
    """Everything: door actions, alerts, mapping and policies, users, tokens, webhooks."""
    READ_ONLY = "read_only"
    """Sees every page and API read; changes nothing."""


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    """Waiting for its (next) attempt at ``next_attempt_at``."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """Retries exhausted, or the endpoint answered 410 Gone (it is then disabled)."""


class User(Base):
    """A dashboard user (password hashed with argon2id)."""

    __tablename__ = "web_users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, username={self.username!r}, role={self.role!r})"


class WebSession(Base):
    """A logged-in browser: the cookie holds a random token, the table its SHA-256."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """SHA-256 hex of the cookie value (the value itself is never stored)."""
    user_id: Mapped[int] = mapped_column(ForeignKey("web_users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]

    def __repr__(self) -> str:
        return f"WebSession(user_id={self.user_id!r}, expires_at={self.expires_at!r})"


class ApiToken(Base):
    """A bearer token for ``/api/v1``; acts as its user (with the user's role)."""

    __tablename__ = "web_api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("web_users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    """The first characters of the token, shown to tell tokens apart."""
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"ApiToken(id={self.id!r}, name={self.name!r}, prefix={self.prefix!r})"


class LoginAttempt(Base):
    """One login attempt (failed ones count towards the per IP + user rate limit)."""

    __tablename__ = "web_login_attempts"
    __table_args__ = (Index("ix_web_login_attempts_ip_at", "ip", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    ip: Mapped[str] = mapped_column(String(64))
    username: Mapped[str] = mapped_column(String(64))
    success: Mapped[bool] = mapped_column(Boolean)


class RoomOverride(Base):
    """An operator's change of a room's locks or policy, made in the dashboard.

    Applied over the TOML configuration at startup and whenever it changes, so it survives
    restarts; ``locks``/``policy`` NULL keep the file's value.
    """

    __tablename__ = "web_room_overrides"

    room_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    locks: Mapped[list[str] | None] = mapped_column(JSONType)
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    """Overrides of the room's ``[rooms.policy]`` table (merged over the file's)."""
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(128))


class WebhookEndpoint(Base):
    """A receiver of outgoing Standard Webhooks."""

    __tablename__ = "web_webhook_endpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(200), default="")
    secret_enc: Mapped[str] = mapped_column(Text)
    """``SecretBox`` ciphertext of the ``whsec_…`` signing secret."""
    event_types: Mapped[list[str]] = mapped_column(JSONType)
    """Subscribed event types (empty: all)."""
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    def __repr__(self) -> str:
        return f"WebhookEndpoint(id={self.id!r}, enabled={self.enabled!r})"


class WebhookDelivery(Base):
    """One event for one endpoint; ``message_id`` is the stable ``webhook-id``."""

    __tablename__ = "web_webhook_deliveries"
    __table_args__ = (
        Index("ix_web_webhook_deliveries_state_next", "state", "next_attempt_at"),
        Index("ix_web_webhook_deliveries_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("web_webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    claim_owner: Mapped[str | None] = mapped_column(String(128))
    claim_until: Mapped[datetime | None]


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery (the delivery log)."""

    __tablename__ = "web_webhook_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("web_webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime]
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[int] = mapped_column(Integer)
