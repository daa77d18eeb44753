"""Door policy: how a room's bookings turn into door actions.

One policy per room (the config's ``[defaults.policy]`` overlaid with the room's own
``[rooms.policy]``). Durations are whole minutes in the config file.
"""

from __future__ import annotations

import enum
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BookingFilter", "DoorPolicy", "LockAction", "UnlockMode"]


class UnlockMode(enum.StrEnum):
    """What "unlock" means for a room."""

    DAY_LOCK = "day_lock"
    """Send DAY_LOCK (latch only) at start − lead; NIGHT_LOCK at the end."""
    OPEN_HOUSE = "open_house"
    """Turn the lock's open_house_mode on at start − lead and off (then lock) at the end."""
    OPEN = "open"
    """Send a single OPEN (pull the latch once) at the slot's start; lock at the end."""


class LockAction(enum.StrEnum):
    """The state the door is put in when a window ends."""

    NIGHT_LOCK = "night_lock"
    DAY_LOCK = "day_lock"


class BookingFilter(enum.StrEnum):
    """Which bookings open a door."""

    PAID = "paid"
    """Only paid/confirmed bookings (``status`` truthy): unpaid 20-minute carts never open."""
    ALL = "all"
    """Every booking that is not deleted, unpaid carts included."""


class DoorPolicy(BaseModel):
    """Per-room door behaviour, with defaults a venue can run with unchanged."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    unlock_lead_minutes: int = Field(default=10, ge=0, le=24 * 60)
    """Unlock this long before the slot starts."""
    lock_lag_minutes: int = Field(default=15, ge=0, le=24 * 60)
    """Lock this long after the slot ends."""
    default_slot_minutes: int = Field(default=60, gt=0, le=7 * 24 * 60)
    """Slot length when the booking carries no duration."""
    unlock_mode: UnlockMode = UnlockMode.DAY_LOCK
    lock_action: LockAction = LockAction.NIGHT_LOCK
    bookings: BookingFilter = BookingFilter.PAID
    merge_gap_minutes: int = Field(default=30, ge=0, le=24 * 60)
    """Back-to-back bookings whose door windows are less than this apart keep the door unlocked."""
    max_lateness_minutes: int = Field(default=15, ge=0, le=24 * 60)
    """A due action missed by more than this (e.g. after downtime) is skipped and reported."""

    @property
    def unlock_lead(self) -> timedelta:
        return timedelta(minutes=self.unlock_lead_minutes)

    @property
    def lock_lag(self) -> timedelta:
        return timedelta(minutes=self.lock_lag_minutes)

    @property
    def default_slot(self) -> timedelta:
        return timedelta(minutes=self.default_slot_minutes)

    @property
    def merge_gap(self) -> timedelta:
        return timedelta(minutes=self.merge_gap_minutes)

    @property
    def max_lateness(self) -> timedelta:
        return timedelta(minutes=self.max_lateness_minutes)

    def merged(self, overrides: dict[str, object]) -> DoorPolicy:
        """This policy with ``overrides`` applied (validated)."""
        return DoorPolicy.model_validate({**self.model_dump(), **overrides})
