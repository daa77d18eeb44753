"""SQLAlchemy 2 declarative models: roomkey's whole database.

All datetimes are aware UTC (:class:`UTCDateTime`). Columns named ``claim_owner``/``claim_until``
implement row claims across replicas (see :mod:`roomkey.service.db.claims`). Status-like columns
are stored as short strings (``VARCHAR``, no database enum) and read back as the enums below.
"""

from __future__ import annotations

import enum
from datetime import date, datetime, time
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    Time,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .types import JSONType, UTCDateTime

__all__ = [
    "Alert",
    "AuditEntry",
    "Base",
    "Command",
    "CommandAction",
    "CommandAttempt",
    "CommandOrigin",
    "CommandReason",
    "CommandState",
    "DoorAction",
    "DoorActionKind",
    "DoorActionStatus",
    "DoorWindow",
    "EventSource",
    "KVEntry",
    "Lease",
    "Lock",
    "LockEvent",
    "LockEventReceipt",
    "LockmeMessage",
    "MessageState",
    "Reservation",
    "Room",
    "RoomLock",
    "StoredSecret",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Identifiers: lengths used throughout.
LOCK_ID_LEN = 64
MESSAGE_ID_LEN = 128
OWNER_LEN = 128
COMMAND_ID_LEN = 36
ACTION_KEY_LEN = 200
DEDUPE_LEN = 256

# Autoincrementing 64-bit ids on PostgreSQL; SQLite needs INTEGER for its rowid alias.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class MessageState(enum.StrEnum):
    """Visible status of a Lockme message; ``fetched_at``/``applied_at`` tell which steps ran."""

    RECEIVED = "received"
    """Webhook arrived; only the id is stored."""
    PROCESSING = "processing"
    """Fetched from Lockme and stored raw; not yet applied."""
    APPLIED = "applied"
    """Applied to the reservation mirror and the door plan (committed); not yet marked read."""
    ACKED = "acked"
    """Marked read at Lockme. Done."""
    FAILED = "failed"
    """The last attempt failed (``last_error``); retried at ``next_attempt_at`` unless NULL."""


class DoorActionKind(enum.StrEnum):
    UNLOCK = "unlock"
    LOCK = "lock"
    OPEN = "open"
    OPEN_HOUSE_ON = "open_house_on"
    OPEN_HOUSE_OFF = "open_house_off"


class DoorActionStatus(enum.StrEnum):
    PLANNED = "planned"
    DONE = "done"
    SUPERSEDED = "superseded"
    SKIPPED = "skipped"
    FAILED = "failed"


class CommandAction(enum.StrEnum):
    """What a command asks a lock to do."""

    OPEN = "open"
    DAY_LOCK = "day_lock"
    NIGHT_LOCK = "night_lock"
    OPEN_HOUSE_ON = "open_house_on"
    OPEN_HOUSE_OFF = "open_house_off"


class CommandState(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    ACCEPTED = "accepted"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"


TERMINAL_COMMAND_STATES = frozenset(
    {
        CommandState.CONFIRMED,
        CommandState.FAILED,
        CommandState.EXPIRED,
        CommandState.SUPERSEDED,
    }
)


class CommandReason(enum.StrEnum):
    """The closed list of reasons a command ends failed/expired."""

    UNREACHABLE = "unreachable"
    NO_RESPONSE = "no_response"
    REJECTED = "rejected"
    UNAUTHORIZED = "unauthorized"
    KEY_REVOKED = "key_revoked"
    RATE_LIMITED = "rate_limited"
    STALLED = "stalled"
    NO_CONFIRMATION = "no_confirmation"
    OFFLINE = "offline"


class CommandOrigin(enum.StrEnum):
    PLAN = "plan"
    MANUAL = "manual"


class EventSource(enum.StrEnum):
    BRIDGE = "bridge"
    CLOUD = "cloud"


def _enum(cls: type[enum.StrEnum]) -> Enum:
    return Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=32,
        validate_strings=True,
        values_callable=lambda members: [m.value for m in members],
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
    }


class Room(Base):
    """A Lockme room, synced from the config (``active`` is False once removed from it)."""

    __tablename__ = "rooms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    department_id: Mapped[int | None] = mapped_column(Integer)
    policy: Mapped[dict[str, Any]] = mapped_column(JSONType)
    """The effective DoorPolicy (defaults + room overrides) as a JSON object."""
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Lock(Base):
    """A LOQED lock: config-synced identity and credentials plus live state from events."""

    __tablename__ = "locks"

    id: Mapped[str] = mapped_column(String(LOCK_ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    loqed_id: Mapped[str | None] = mapped_column(String(LOCK_ID_LEN), index=True)
    transports: Mapped[list[str]] = mapped_column(JSONType)
    """Configured transports, in the config's order (``bridge``/``cloud``/``app``)."""
    credentials_enc: Mapped[str | None] = mapped_column(Text)
    """Fernet token (``SecretBox.encrypt_json``) of the transports' credentials."""
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    bolt_state: Mapped[str | None] = mapped_column(String(16))
    battery_percentage: Mapped[int | None] = mapped_column(Integer)
    battery_type: Mapped[str | None] = mapped_column(String(32))
    online: Mapped[bool | None] = mapped_column(Boolean)
    ble_strength: Mapped[int | None] = mapped_column(Integer)
    wifi_strength: Mapped[int | None] = mapped_column(Integer)
    last_event_at: Mapped[datetime | None]
    last_event_key: Mapped[str | None] = mapped_column(String(DEDUPE_LEN))
    """``dedupe_key`` of the lock's latest stored event (duplicate detection)."""
    state_updated_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    def __repr__(self) -> str:
        return f"Lock(id={self.id!r}, name={self.name!r}, bolt_state={self.bolt_state!r})"


class RoomLock(Base):
    """Many-to-many: which locks serve which rooms."""

    __tablename__ = "room_locks"

    room_id: Mapped[int] = mapped_column(
        ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    lock_id: Mapped[str] = mapped_column(
        ForeignKey("locks.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class LockmeMessage(Base):
    """A Lockme webhook message: durable from the first millisecond, processed by workers."""

    __tablename__ = "lockme_messages"
    __table_args__ = (
        Index("ix_lockme_messages_due", "next_attempt_at"),
        Index("ix_lockme_messages_state_received", "state", "received_at"),
    )

    message_id: Mapped[str] = mapped_column(String(MESSAGE_ID_LEN), primary_key=True)
    state: Mapped[MessageState] = mapped_column(_enum(MessageState))
    received_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    """When a worker may (re)try it; NULL once acked or given up."""
    last_error: Mapped[str | None] = mapped_column(Text)
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    action: Mapped[str | None] = mapped_column(String(16))
    room_id: Mapped[int | None] = mapped_column(Integer)
    reservation_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    fetched_at: Mapped[datetime | None]
    applied_at: Mapped[datetime | None]
    acked_at: Mapped[datetime | None]
    claim_owner: Mapped[str | None] = mapped_column(String(OWNER_LEN))
    claim_until: Mapped[datetime | None]


class Reservation(Base):
    """The local mirror of a Lockme reservation (keyed by Lockme's reservation id)."""

    __tablename__ = "reservations"
    __table_args__ = (Index("ix_reservations_room_start", "room_id", "start_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    room_id: Mapped[int] = mapped_column(Integer)
    date: Mapped[date] = mapped_column(Date)
    hour: Mapped[time] = mapped_column(Time)
    start_at: Mapped[datetime] = mapped_column(index=True)
    end_at: Mapped[datetime]
    status: Mapped[int] = mapped_column(Integer)
    """Lockme ``status``: 1 = paid/confirmed, 0 = unpaid (cart)."""
    source: Mapped[str | None] = mapped_column(String(32))
    extid: Mapped[str | None] = mapped_column(String(128), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    """The full reservation snapshot as Lockme sent it (contains customer PII)."""
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    last_message_id: Mapped[str | None] = mapped_column(String(MESSAGE_ID_LEN))


class DoorWindow(Base):
    """The planned door window of one reservation (for the dashboard)."""

    __tablename__ = "door_windows"
    __table_args__ = (Index("ix_door_windows_room_start", "room_id", "start_at"),)

    reservation_id: Mapped[int] = mapped_column(
        ForeignKey("reservations.id", ondelete="CASCADE"), primary_key=True
    )
    room_id: Mapped[int] = mapped_column(Integer)
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class DoorAction(Base):
    """One planned physical action at one lock, keyed deterministically by the planner."""

    __tablename__ = "door_actions"
    __table_args__ = (
        Index("ix_door_actions_status_planned", "status", "planned_at"),
        Index("ix_door_actions_room_planned", "room_id", "planned_at"),
        Index("ix_door_actions_lock_planned", "lock_id", "planned_at"),
    )

    key: Mapped[str] = mapped_column(String(ACTION_KEY_LEN), primary_key=True)
    room_id: Mapped[int] = mapped_column(Integer)
    lock_id: Mapped[str] = mapped_column(ForeignKey("locks.id", ondelete="CASCADE"))
    kind: Mapped[DoorActionKind] = mapped_column(_enum(DoorActionKind))
    planned_at: Mapped[datetime]
    status: Mapped[DoorActionStatus] = mapped_column(_enum(DoorActionStatus))
    reservation_ids: Mapped[list[int]] = mapped_column(JSONType)
    command_id: Mapped[str | None] = mapped_column(String(COMMAND_ID_LEN))
    reason: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1)
    """Bumped whenever re-planning changes the action."""
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    claim_owner: Mapped[str | None] = mapped_column(String(OWNER_LEN))
    claim_until: Mapped[datetime | None]


class Command(Base):
    """A command to one lock and its lifecycle (pending → … → confirmed, or a terminal failure)."""

    __tablename__ = "commands"
    __table_args__ = (
        Index("ix_commands_state_due", "state", "due_at"),
        Index("ix_commands_lock_created", "lock_id", "created_at"),
        Index(
            "uq_commands_one_pending_per_lock",
            "lock_id",
            unique=True,
            sqlite_where=text("state = 'pending'"),
            postgresql_where=text("state = 'pending'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(COMMAND_ID_LEN), primary_key=True)
    lock_id: Mapped[str] = mapped_column(ForeignKey("locks.id", ondelete="CASCADE"))
    action: Mapped[CommandAction] = mapped_column(_enum(CommandAction))
    state: Mapped[CommandState] = mapped_column(_enum(CommandState))
    reason: Mapped[CommandReason | None] = mapped_column(_enum(CommandReason))
    detail: Mapped[str | None] = mapped_column(Text)
    """Human-readable detail of the last failure (never contains secrets or signed URLs)."""
    transport: Mapped[str | None] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    origin: Mapped[CommandOrigin] = mapped_column(_enum(CommandOrigin))
    actor: Mapped[str | None] = mapped_column(String(128))
    door_action_key: Mapped[str | None] = mapped_column(
        ForeignKey("door_actions.key", ondelete="SET NULL"), index=True
    )
    superseded_by: Mapped[str | None] = mapped_column(String(COMMAND_ID_LEN))
    due_at: Mapped[datetime]
    deadline: Mapped[datetime]
    created_at: Mapped[datetime]
    sending_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    accepted_at: Mapped[datetime | None]
    confirmed_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(Integer, default=1)
    claim_owner: Mapped[str | None] = mapped_column(String(OWNER_LEN))
    claim_until: Mapped[datetime | None]


class CommandAttempt(Base):
    """One try at sending a command over one transport (each attempt is signed afresh)."""

    __tablename__ = "command_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    command_id: Mapped[str] = mapped_column(
        ForeignKey("commands.id", ondelete="CASCADE"), index=True
    )
    transport: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(32))
    """e.g. ``ok``, ``not_sent``, ``maybe_delivered``, or a :class:`CommandReason` value."""
    error: Mapped[str | None] = mapped_column(Text)


class _EventFacts:
    """The columns a lock event and its receipt share (what was received, from where)."""

    lock_id: Mapped[str | None] = mapped_column(String(LOCK_ID_LEN))
    source: Mapped[EventSource] = mapped_column(_enum(EventSource))
    event_type: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    bolt_state: Mapped[str | None] = mapped_column(String(16))
    key_local_id: Mapped[int | None] = mapped_column(Integer)
    occurred_at: Mapped[datetime | None]
    received_at: Mapped[datetime]
    dedupe_key: Mapped[str] = mapped_column(String(DEDUPE_LEN))


class LockEvent(_EventFacts, Base):
    """An event from a lock (bridge or cloud webhook), linked to command and reservation."""

    __tablename__ = "lock_events"
    __table_args__ = (
        Index("ix_lock_events_lock_received", "lock_id", "received_at"),
        Index("ix_lock_events_received", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    command_id: Mapped[str | None] = mapped_column(String(COMMAND_ID_LEN), index=True)
    reservation_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    raw: Mapped[dict[str, Any]] = mapped_column(JSONType)
    """The payload, with PII fields dropped unless ``[loqed] keep_event_pii`` is set."""


class LockEventReceipt(_EventFacts, Base):
    """A lock event as received (durable before the webhook's 200), applied right after.

    ``applied_at`` None: not applied yet (``attempts``/``last_error``/``retry_at`` record
    failed tries). ``outcome`` says what applying did: ``stored`` (a ``lock_events`` row) or
    ``duplicate`` (dropped by the dedupe rules). Applied rows are pruned after a day.
    """

    __tablename__ = "lock_event_receipts"
    __table_args__ = (
        Index(
            "ix_lock_event_receipts_pending",
            "lock_id",
            "id",
            sqlite_where=text("applied_at IS NULL"),
            postgresql_where=text("applied_at IS NULL"),
        ),
        Index("ix_lock_event_receipts_applied", "applied_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    raw: Mapped[dict[str, Any]] = mapped_column(JSONType)
    """The payload as ``lock_events.raw`` will hold it (PII already dropped)."""
    facts: Mapped[dict[str, Any]] = mapped_column(JSONType)
    """The parsed fields applying needs beyond the columns (battery, signal, online)."""
    applied_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    retry_at: Mapped[datetime | None]


class Alert(Base):
    """Something an operator should look at. At most one open alert per ``dedupe_key``."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index(
            "uq_alerts_open_dedupe",
            "dedupe_key",
            unique=True,
            sqlite_where=text("acknowledged_at IS NULL"),
            postgresql_where=text("acknowledged_at IS NULL"),
        ),
        Index("ix_alerts_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    lock_id: Mapped[str | None] = mapped_column(String(LOCK_ID_LEN))
    room_id: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    dedupe_key: Mapped[str] = mapped_column(String(DEDUPE_LEN))
    count: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(128))


class AuditEntry(Base):
    """Append-only record of who did what (manual commands, config sync, operator actions)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_target_at", "target", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(200))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class Lease(Base):
    """A named, time-limited lease for singleton jobs across replicas."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner: Mapped[str] = mapped_column(String(OWNER_LEN))
    until: Mapped[datetime]


class KVEntry(Base):
    """Small key → JSON values (cursors, last reconciliation, …). Not for secrets."""

    __tablename__ = "kv"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONType)
    updated_at: Mapped[datetime]


class StoredSecret(Base):
    """An encrypted secret (e.g. the Lockme OAuth token). ``ciphertext`` is a Fernet token."""

    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    ciphertext: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime]
