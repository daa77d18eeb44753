"""LOQED event receipts (group-committed intake, applied right after) and the lock's last
event key (duplicate detection without a per-event lookup).

Revision ID: 0003_lock_event_receipts
Revises: 0002_web_users_tokens_webhooks
Create Date: 2026-11-22

Written by hand from ``roomkey.service.db.models`` (``LockEventReceipt``,
``Lock.last_event_key``), types frozen here like in ``0001_initial``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_lock_event_receipts"
down_revision: str | None = "0002_web_users_tokens_webhooks"
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
        "lock_event_receipts",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        _str("lock_id", 64, nullable=True),
        _str("source", 32),
        _str("event_type", 64),
        _str("kind", 32),
        _str("bolt_state", 16, nullable=True),
        sa.Column("key_local_id", sa.Integer(), nullable=True),
        _ts("occurred_at", nullable=True),
        _ts("received_at"),
        _str("dedupe_key", 256),
        sa.Column("raw", JSON, nullable=False),
        sa.Column("facts", JSON, nullable=False),
        _ts("applied_at", nullable=True),
        _str("outcome", 16, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        _ts("retry_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lock_event_receipts")),
    )
    op.create_index(
        "ix_lock_event_receipts_pending",
        "lock_event_receipts",
        ["lock_id", "id"],
        sqlite_where=sa.text("applied_at IS NULL"),
        postgresql_where=sa.text("applied_at IS NULL"),
    )
    op.create_index("ix_lock_event_receipts_applied", "lock_event_receipts", ["applied_at"])
    with op.batch_alter_table("locks") as batch:
        batch.add_column(_str("last_event_key", 256, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("locks") as batch:
        batch.drop_column("last_event_key")
    op.drop_index("ix_lock_event_receipts_applied", table_name="lock_event_receipts")
    op.drop_index("ix_lock_event_receipts_pending", table_name="lock_event_receipts")
    op.drop_table("lock_event_receipts")
