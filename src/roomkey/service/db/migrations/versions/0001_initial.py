"""Initial schema: config mirror, Lockme intake, plan, commands, events, alerts, audit, leases.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-22

Written by hand from the models (checked against autogenerate; ``tests/service/test_db_migrations``
proves models and migrations agree on SQLite and PostgreSQL). Types are frozen here on purpose:
status columns are VARCHAR(32) (the models read them as enums), datetimes are
``DateTime(timezone=True)`` (the models' ``UTCDateTime`` wraps exactly that), JSON is JSONB on
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _str(name: str, length: int, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.String(length), nullable=nullable)


def _claim() -> list[sa.Column[object]]:
    return [_str("claim_owner", 128, nullable=True), _ts("claim_until", nullable=True)]


def upgrade() -> None:
    # --- config mirror -----------------------------------------------------------------------
    op.create_table(
        "rooms",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        _str("name", 200),
        _str("timezone", 64),
        sa.Column("department_id", sa.Integer(), nullable=True),
        sa.Column("policy", JSON, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rooms")),
    )
    op.create_table(
        "locks",
        _str("id", 64),
        _str("name", 200),
        _str("loqed_id", 64, nullable=True),
        sa.Column("transports", JSON, nullable=False),
        sa.Column("credentials_enc", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        _str("bolt_state", 16, nullable=True),
        sa.Column("battery_percentage", sa.Integer(), nullable=True),
        _str("battery_type", 32, nullable=True),
        sa.Column("online", sa.Boolean(), nullable=True),
        sa.Column("ble_strength", sa.Integer(), nullable=True),
        sa.Column("wifi_strength", sa.Integer(), nullable=True),
        _ts("last_event_at", nullable=True),
        _ts("state_updated_at", nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_locks")),
    )
    op.create_index(op.f("ix_locks_loqed_id"), "locks", ["loqed_id"])
    op.create_table(
        "room_locks",
        sa.Column("room_id", sa.Integer(), nullable=False),
        _str("lock_id", 64),
        sa.ForeignKeyConstraint(
            ["room_id"], ["rooms.id"], name=op.f("fk_room_locks_room_id_rooms"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["lock_id"], ["locks.id"], name=op.f("fk_room_locks_lock_id_locks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("room_id", "lock_id", name=op.f("pk_room_locks")),
    )
    op.create_index(op.f("ix_room_locks_lock_id"), "room_locks", ["lock_id"])

    # --- Lockme intake and reservation mirror --------------------------------------------------
    op.create_table(
        "lockme_messages",
        _str("message_id", 128),
        _str("state", 32),
        _ts("received_at"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at", nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("raw", JSON, nullable=True),
        _str("action", 16, nullable=True),
        sa.Column("room_id", sa.Integer(), nullable=True),
        sa.Column("reservation_id", sa.BigInteger(), nullable=True),
        _ts("fetched_at", nullable=True),
        _ts("applied_at", nullable=True),
        _ts("acked_at", nullable=True),
        *_claim(),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_lockme_messages")),
    )
    op.create_index("ix_lockme_messages_due", "lockme_messages", ["next_attempt_at"])
    op.create_index(
        "ix_lockme_messages_state_received", "lockme_messages", ["state", "received_at"]
    )
    op.create_index(
        op.f("ix_lockme_messages_reservation_id"), "lockme_messages", ["reservation_id"]
    )
    op.create_table(
        "reservations",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("hour", sa.Time(), nullable=False),
        _ts("start_at"),
        _ts("end_at"),
        sa.Column("status", sa.Integer(), nullable=False),
        _str("source", 32, nullable=True),
        _str("extid", 128, nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        _str("last_message_id", 128, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reservations")),
    )
    op.create_index("ix_reservations_room_start", "reservations", ["room_id", "start_at"])
    op.create_index(op.f("ix_reservations_start_at"), "reservations", ["start_at"])
    op.create_index(op.f("ix_reservations_extid"), "reservations", ["extid"])

    # --- door plan ---------------------------------------------------------------------------
    op.create_table(
        "door_windows",
        sa.Column("reservation_id", sa.BigInteger(), nullable=False),
        sa.Column("room_id", sa.Integer(), nullable=False),
        _ts("start_at"),
        _ts("end_at"),
        _ts("updated_at"),
        sa.ForeignKeyConstraint(
            ["reservation_id"],
            ["reservations.id"],
            name=op.f("fk_door_windows_reservation_id_reservations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("reservation_id", name=op.f("pk_door_windows")),
    )
    op.create_index("ix_door_windows_room_start", "door_windows", ["room_id", "start_at"])
    op.create_table(
        "door_actions",
        _str("key", 200),
        sa.Column("room_id", sa.Integer(), nullable=False),
        _str("lock_id", 64),
        _str("kind", 32),
        _ts("planned_at"),
        _str("status", 32),
        sa.Column("reservation_ids", JSON, nullable=False),
        _str("command_id", 36, nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("finished_at", nullable=True),
        *_claim(),
        sa.ForeignKeyConstraint(
            ["lock_id"],
            ["locks.id"],
            name=op.f("fk_door_actions_lock_id_locks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_door_actions")),
    )
    op.create_index("ix_door_actions_status_planned", "door_actions", ["status", "planned_at"])
    op.create_index("ix_door_actions_room_planned", "door_actions", ["room_id", "planned_at"])
    op.create_index("ix_door_actions_lock_planned", "door_actions", ["lock_id", "planned_at"])

    # --- commands ----------------------------------------------------------------------------
    op.create_table(
        "commands",
        _str("id", 36),
        _str("lock_id", 64),
        _str("action", 32),
        _str("state", 32),
        _str("reason", 32, nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        _str("transport", 16, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _str("origin", 32),
        _str("actor", 128, nullable=True),
        _str("door_action_key", 200, nullable=True),
        _str("superseded_by", 36, nullable=True),
        _ts("due_at"),
        _ts("deadline"),
        _ts("created_at"),
        _ts("sending_at", nullable=True),
        _ts("sent_at", nullable=True),
        _ts("accepted_at", nullable=True),
        _ts("confirmed_at", nullable=True),
        _ts("finished_at", nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        *_claim(),
        sa.ForeignKeyConstraint(
            ["lock_id"], ["locks.id"], name=op.f("fk_commands_lock_id_locks"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["door_action_key"],
            ["door_actions.key"],
            name=op.f("fk_commands_door_action_key_door_actions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commands")),
    )
    op.create_index("ix_commands_state_due", "commands", ["state", "due_at"])
    op.create_index("ix_commands_lock_created", "commands", ["lock_id", "created_at"])
    op.create_index(op.f("ix_commands_door_action_key"), "commands", ["door_action_key"])
    # One pending command per lock: "latest wins" is enforced by the database across replicas.
    op.create_index(
        "uq_commands_one_pending_per_lock",
        "commands",
        ["lock_id"],
        unique=True,
        sqlite_where=sa.text("state = 'pending'"),
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "command_attempts",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        _str("command_id", 36),
        _str("transport", 16),
        _ts("started_at"),
        _ts("finished_at", nullable=True),
        _str("outcome", 32, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["command_id"],
            ["commands.id"],
            name=op.f("fk_command_attempts_command_id_commands"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_command_attempts")),
    )
    op.create_index(op.f("ix_command_attempts_command_id"), "command_attempts", ["command_id"])

    # --- lock events, alerts, audit ----------------------------------------------------------
    op.create_table(
        "lock_events",
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
        _str("command_id", 36, nullable=True),
        sa.Column("reservation_id", sa.BigInteger(), nullable=True),
        sa.Column("raw", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lock_events")),
    )
    op.create_index("ix_lock_events_lock_received", "lock_events", ["lock_id", "received_at"])
    op.create_index("ix_lock_events_received", "lock_events", ["received_at"])
    op.create_index(op.f("ix_lock_events_command_id"), "lock_events", ["command_id"])
    op.create_index(op.f("ix_lock_events_reservation_id"), "lock_events", ["reservation_id"])
    op.create_table(
        "alerts",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        _str("kind", 64),
        _str("lock_id", 64, nullable=True),
        sa.Column("room_id", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", JSON, nullable=True),
        _str("dedupe_key", 256),
        sa.Column("count", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("last_seen_at"),
        _ts("acknowledged_at", nullable=True),
        _str("acknowledged_by", 128, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index("ix_alerts_created", "alerts", ["created_at"])
    # The same alert is open at most once; acknowledging it allows a new one.
    op.create_index(
        "uq_alerts_open_dedupe",
        "alerts",
        ["dedupe_key"],
        unique=True,
        sqlite_where=sa.text("acknowledged_at IS NULL"),
        postgresql_where=sa.text("acknowledged_at IS NULL"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        _ts("at"),
        _str("actor", 128),
        _str("action", 64),
        _str("target", 200, nullable=True),
        sa.Column("details", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])
    op.create_index("ix_audit_log_target_at", "audit_log", ["target", "at"])

    # --- coordination and small state --------------------------------------------------------
    op.create_table(
        "leases",
        _str("name", 128),
        _str("owner", 128),
        _ts("until"),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    op.create_table(
        "kv",
        _str("key", 128),
        sa.Column("value", JSON, nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_kv")),
    )
    op.create_table(
        "secrets",
        _str("name", 128),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_secrets")),
    )


def downgrade() -> None:
    for table in (
        "secrets",
        "kv",
        "leases",
        "audit_log",
        "alerts",
        "lock_events",
        "command_attempts",
        "commands",
        "door_actions",
        "door_windows",
        "reservations",
        "lockme_messages",
        "room_locks",
        "locks",
        "rooms",
    ):
        op.drop_table(table)
