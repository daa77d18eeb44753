"""Dashboard tables: users, sessions, API tokens, login attempts, room overrides, webhooks.

Revision ID: 0002_web_users_tokens_webhooks
Revises: 0001_initial
Create Date: 2026-11-22

Owned by the dashboard (``roomkey.web.models``); written by hand from those models, types
frozen here like in ``0001_initial``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# The tables below are described by roomkey.web.models; importing it registers them on the
# shared Base.metadata wherever migrations are loaded (autogenerate, model/migration checks).
import roomkey.web.models  # noqa: F401

revision: str = "0002_web_users_tokens_webhooks"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _str(name: str, length: int, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.String(length), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "web_users",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        _str("username", 64),
        _str("password_hash", 256),
        _str("role", 16),
        sa.Column("active", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _ts("last_login_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_users")),
        sa.UniqueConstraint("username", name=op.f("uq_web_users_username")),
    )
    op.create_table(
        "web_sessions",
        _str("id", 64),
        sa.Column("user_id", BIG_ID, nullable=False),
        _str("csrf_token", 64),
        _ts("created_at"),
        _ts("expires_at"),
        _ts("last_seen_at"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["web_users.id"],
            name=op.f("fk_web_sessions_user_id_web_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
    )
    op.create_index(op.f("ix_web_sessions_user_id"), "web_sessions", ["user_id"])
    op.create_table(
        "web_api_tokens",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", BIG_ID, nullable=False),
        _str("name", 64),
        _str("token_hash", 64),
        _str("prefix", 16),
        _ts("created_at"),
        _ts("last_used_at", nullable=True),
        _ts("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["web_users.id"],
            name=op.f("fk_web_api_tokens_user_id_web_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_web_api_tokens_token_hash")),
    )
    op.create_index(op.f("ix_web_api_tokens_user_id"), "web_api_tokens", ["user_id"])
    op.create_table(
        "web_login_attempts",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        _ts("at"),
        _str("ip", 64),
        _str("username", 64),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_login_attempts")),
    )
    op.create_index("ix_web_login_attempts_ip_at", "web_login_attempts", ["ip", "at"])
    op.create_table(
        "web_room_overrides",
        sa.Column("room_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("locks", JSON, nullable=True),
        sa.Column("policy", JSON, nullable=True),
        _ts("updated_at"),
        _str("updated_by", 128),
        sa.PrimaryKeyConstraint("room_id", name=op.f("pk_web_room_overrides")),
    )
    op.create_table(
        "web_webhook_endpoints",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        _str("url", 2000),
        _str("description", 200),
        sa.Column("secret_enc", sa.Text(), nullable=False),
        sa.Column("event_types", JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _str("disabled_reason", 200, nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_webhook_endpoints")),
    )
    op.create_table(
        "web_webhook_deliveries",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("endpoint_id", BIG_ID, nullable=False),
        _str("message_id", 64),
        _str("event_type", 64),
        sa.Column("payload", JSON, nullable=False),
        _str("state", 16),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at", nullable=True),
        _ts("last_attempt_at", nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        _str("last_error", 500, nullable=True),
        _ts("created_at"),
        _ts("finished_at", nullable=True),
        _str("claim_owner", 128, nullable=True),
        _ts("claim_until", nullable=True),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["web_webhook_endpoints.id"],
            name=op.f("fk_web_webhook_deliveries_endpoint_id_web_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_webhook_deliveries")),
    )
    op.create_index(
        op.f("ix_web_webhook_deliveries_endpoint_id"), "web_webhook_deliveries", ["endpoint_id"]
    )
    op.create_index(
        "ix_web_webhook_deliveries_state_next",
        "web_webhook_deliveries",
        ["state", "next_attempt_at"],
    )
    op.create_index("ix_web_webhook_deliveries_created", "web_webhook_deliveries", ["created_at"])
    op.create_table(
        "web_webhook_attempts",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("delivery_id", BIG_ID, nullable=False),
        _ts("at"),
        sa.Column("status_code", sa.Integer(), nullable=True),
        _str("error", 500, nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["web_webhook_deliveries.id"],
            name=op.f("fk_web_webhook_attempts_delivery_id_web_webhook_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_webhook_attempts")),
    )
    op.create_index(
        op.f("ix_web_webhook_attempts_delivery_id"), "web_webhook_attempts", ["delivery_id"]
    )


def downgrade() -> None:
    op.drop_table("web_webhook_attempts")
    op.drop_table("web_webhook_deliveries")
    op.drop_table("web_webhook_endpoints")
    op.drop_table("web_room_overrides")
    op.drop_table("web_login_attempts")
    op.drop_table("web_api_tokens")
    op.drop_table("web_sessions")
    op.drop_table("web_users")
