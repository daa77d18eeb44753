"""What the dashboard shows and the JSON API returns: one set of pydantic models for both.

Times are aware UTC datetimes (the pages render them in each room's time zone). Nothing here
carries a secret; customer data from Lockme bookings is never included, and e-mail addresses
from LOQED events only when the operator keeps them (``[loqed] keep_event_pii``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ActionAccepted",
    "AlertOut",
    "BatteryPoint",
    "BookingOut",
    "CommandOut",
    "DeliveryAttemptOut",
    "DeliveryOut",
    "DoorActionOut",
    "EventOut",
    "EventType",
    "LockCard",
    "LockEventOut",
    "ManualCommandOut",
    "MappingPreview",
    "PreviewWindow",
    "RoomOut",
    "RoomSettingsIn",
    "RoomTimeline",
    "WebhookEndpointIn",
    "WebhookEndpointOut",
    "WindowOut",
]

EventType = Literal["lockme", "loqed", "command"]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class RoomOut(_Out):
    id: int
    name: str
    timezone: str
    locks: list[str]
    policy: dict[str, Any]
    overridden: bool = False
    """True when the dashboard changed this room's locks or policy (over the config file)."""


class BookingOut(_Out):
    id: int
    room_id: int
    start_at: datetime
    end_at: datetime
    paid: bool
    deleted: bool


class WindowOut(_Out):
    reservation_id: int
    start_at: datetime
    end_at: datetime


class DoorActionOut(_Out):
    key: str
    lock_id: str
    kind: str
    planned_at: datetime
    status: str
    reason: str | None
    command_id: str | None
    reservation_ids: list[int]


class CommandOut(_Out):
    id: str
    lock_id: str
    action: str
    state: str
    reason: str | None
    origin: str
    actor: str | None
    created_at: datetime
    sent_at: datetime | None
    accepted_at: datetime | None
    confirmed_at: datetime | None
    finished_at: datetime | None
    door_action_key: str | None


class LockEventOut(_Out):
    id: int
    lock_id: str | None
    kind: str
    event_type: str
    bolt_state: str | None
    received_at: datetime
    command_id: str | None
    reservation_id: int | None


class RoomTimeline(_Out):
    """One room's bookings, planned windows and actions, and what actually happened."""

    room: RoomOut
    start: datetime
    end: datetime
    bookings: list[BookingOut]
    windows: list[WindowOut]
    actions: list[DoorActionOut]
    commands: list[CommandOut]
    events: list[LockEventOut]


class AlertOut(_Out):
    id: int
    kind: str
    lock_id: str | None
    room_id: int | None
    message: str
    count: int
    created_at: datetime
    last_seen_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None


class BatteryPoint(_Out):
    at: datetime
    percentage: int


class LockCard(_Out):
    id: str
    name: str
    rooms: list[int]
    bolt_state: str | None
    online: bool | None
    battery_percentage: int | None
    battery_type: str | None
    ble_strength: int | None
    wifi_strength: int | None
    last_event_at: datetime | None
    last_event: LockEventOut | None
    battery_trend: list[BatteryPoint]
    open_alerts: list[AlertOut]


class EventOut(_Out):
    """One row of the event log: a Lockme message, a LOQED event or a command."""

    type: EventType
    at: datetime
    id: str
    room_id: int | None
    lock_id: str | None
    reservation_id: int | None
    summary: str
    state: str | None = None
    detail: str | None = None


class ManualCommandOut(_Out):
    room_id: int
    lock_id: str
    command_id: str
    command: str
    decision: str
    state: str
    reason: str | None


class ActionAccepted(_Out):
    ok: bool = True
    message: str
    commands: list[ManualCommandOut] = Field(default_factory=list)


class RoomSettingsIn(BaseModel):
    """A change of a room's locks and/or policy (fields left out keep their value)."""

    model_config = ConfigDict(extra="forbid")

    locks: list[str] | None = Field(default=None, min_length=1, max_length=32)
    policy: dict[str, Any] | None = None
    """Full policy overrides for the room (replace the dashboard's earlier overrides)."""


class PreviewWindow(_Out):
    lock_id: str
    start_at: datetime
    end_at: datetime
    reservation_ids: list[str]


class MappingPreview(_Out):
    """How the room's windows on the next day change with the proposed settings."""

    room_id: int
    day: str
    before: list[PreviewWindow]
    after: list[PreviewWindow]
    added: list[PreviewWindow]
    removed: list[PreviewWindow]
    policy_before: dict[str, Any]
    policy_after: dict[str, Any]
    locks_before: list[str]
    locks_after: list[str]


class WebhookEndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, max_length=2000)
    description: str = Field(default="", max_length=200)
    event_types: list[str] = Field(default_factory=list, max_length=16)


class WebhookEndpointOut(_Out):
    id: int
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    secret: str | None = None
    """The signing secret: only in the answer that created the endpoint."""


class DeliveryAttemptOut(_Out):
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryOut(_Out):
    id: int
    endpoint_id: int
    message_id: str
    event_type: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    attempt_log: list[DeliveryAttemptOut] = Field(default_factory=list)
