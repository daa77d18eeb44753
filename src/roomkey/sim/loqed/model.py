"""The simulated world: bridges, locks, key slots, cloud credentials and the logs."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

from roomkey.sim.clock import Timer

__all__ = [
    "NO_KEY",
    "BoltState",
    "DeliveryRecord",
    "GatewayMode",
    "ReceivedCommand",
    "SimApiToken",
    "SimAppApiKey",
    "SimBridge",
    "SimCloudWebhook",
    "SimKey",
    "SimLock",
    "SimWebhook",
    "Verdict",
]

NO_KEY = 255
"""``key_local_id`` the bridge reports when no key acted (knob, button, automatic re-latch)."""

GatewayMode = Literal["legacy", "new"]


class BoltState(enum.StrEnum):
    """Bolt position, in the lower-case vocabulary of the bridge's ``/status``."""

    UNKNOWN = "unknown"
    OPEN = "open"
    DAY_LOCK = "day_lock"
    NIGHT_LOCK = "night_lock"

    @property
    def numeric(self) -> int:
        return _NUMERIC[self]

    @property
    def wire(self) -> str:
        """The webhook vocabulary (``OPEN``, ``DAY_LOCK``, ...)."""
        return self.value.upper()


_NUMERIC = {
    BoltState.UNKNOWN: 0,
    BoltState.OPEN: 1,
    BoltState.DAY_LOCK: 2,
    BoltState.NIGHT_LOCK: 3,
}


class Verdict(enum.StrEnum):
    """What the lock made of a command it received."""

    ACCEPTED = "accepted"
    BAD_SIGNATURE = "bad_signature"
    STALE = "stale"
    FUTURE = "future"
    REPLAY = "replay"
    UNKNOWN_KEY = "unknown_key"
    OFFLINE = "offline"
    MALFORMED = "malformed"
    BRIDGE_UNREACHABLE = "bridge_unreachable"


@dataclass(slots=True)
class SimKey:
    """One key slot on a lock. ``secret`` is the base64 HMAC key."""

    lock_id: str
    local_id: int
    secret: str = field(repr=False)
    name: str = ""
    admin_name: str = "Admin"
    account_email: str = ""
    account_name: str = ""


@dataclass(slots=True)
class SimWebhook:
    """A webhook registered on a bridge (``POST /webhooks``)."""

    id: int
    url: str = field(repr=False)
    flags: int


@dataclass(slots=True)
class SimCloudWebhook:
    """A cloud webhook: the LOQED backend POSTs unsigned events to ``url``."""

    id: int
    lock_id: str
    url: str = field(repr=False)
    shape: Literal["documented", "observed"] = "observed"
    info: bool = True
    guest_access_mode: bool = False


@dataclass(slots=True)
class SimLock:
    """A lock and its state machine's data (the behaviour lives in :mod:`.lockmodel`)."""

    lock_id: str
    numeric_id: int
    bridge_id: str
    name: str
    bolt_state: BoltState = BoltState.NIGHT_LOCK
    battery_percentage: int = 78
    battery_type: str = "NICKEL_METAL_HYDRIDE"
    battery_voltage: float = 10.37
    online: bool = True
    ble_strength: int = 60
    wifi_strength: int = 73
    backend_key: str = field(default="", repr=False)
    model_name: str = "LOQED Touch Smart Lock"
    settings: dict[str, int] = field(default_factory=dict)
    lock_direction: str = "clockwise"
    mortise_lock_type: str = "cylinder_operated_no_handle_on_the_outside"
    keys: dict[int, SimKey] = field(default_factory=dict)
    pending_stalls: int = 0
    moving_to: BoltState | None = None
    timers: list[Timer] = field(default_factory=list, repr=False)
    seen_macs: dict[bytes, float] = field(default_factory=dict, repr=False)

    @property
    def supported_lock_states(self) -> list[str]:
        return ["open", "day_lock", "night_lock"]


@dataclass(slots=True)
class SimBridge:
    """A bridge: hosts one lock, keeps a webhook table, delivers signed webhooks."""

    bridge_id: str
    bridge_key: str = field(repr=False)
    mac_wifi: str
    mac_ble: str
    ip_address: str = "192.168.12.34"
    up_timestamp: int = 0
    gateway: GatewayMode = "legacy"
    lock_id: str | None = None
    webhooks: list[SimWebhook] = field(default_factory=list)
    next_webhook_id: int = 1
    clock_skew: float = 0.0
    internet_down_since: float | None = None
    # what /status shows: updated only after the webhooks of an event were delivered
    reported: dict[str, Any] = field(default_factory=dict)
    last_bridge_delivery_at: float = 0.0

    @property
    def hostname(self) -> str:
        return f"LOQED-{self.mac_wifi}.local"


@dataclass(slots=True)
class SimApiToken:
    """An Integrations API personal access token; it owns one key slot on each of its locks."""

    id: int
    token: str = field(repr=False)
    lock_ids: list[str]
    key_ids: dict[str, int] = field(default_factory=dict)
    revoked: bool = False
    expires_at: float | None = None


@dataclass(slots=True)
class SimAppApiKey:
    """An app.loqed.com API key: ``api_token`` plus one key slot on one lock."""

    id: int
    api_token: str = field(repr=False)
    lock_id: str
    local_id: int
    secret: str = field(repr=False)
    revoked: bool = False

    def urls(self, base_url: str = "https://app.loqed.com/API") -> dict[str, str]:
        """The four ready-made URLs (open, latch, night lock, status) the portal shows.

        The real portal's command URLs are not public; the simulator's form carries
        ``action=`` and is signed by the backend on arrival.
        """
        base = base_url.rstrip("/")
        q = f"api_token={self.api_token}&lock_id={self.lock_id}"
        return {
            "open": f"{base}/lock_command.php?{q}&action=OPEN",
            "latch": f"{base}/lock_command.php?{q}&action=DAY_LOCK",
            "night_lock": f"{base}/lock_command.php?{q}&action=NIGHT_LOCK",
            "status": f"{base}/lock_status.php?{q}",
        }


@dataclass(frozen=True, slots=True)
class ReceivedCommand:
    """One command that reached (or was aimed at) a lock, with the lock's verdict."""

    at: float
    lock_id: str
    via: Literal["bridge", "cloud", "app_api"]
    verdict: Verdict
    key_local_id: int | None = None
    action: str | None = None
    command_timestamp: int | None = None
    length: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "lock_id": self.lock_id,
            "via": self.via,
            "verdict": self.verdict.value,
            "key_local_id": self.key_local_id,
            "action": self.action,
            "command_timestamp": self.command_timestamp,
            "length": self.length,
        }


@dataclass(slots=True)
class DeliveryRecord:
    """One outgoing webhook POST (bridge or cloud) and how it ended."""

    at: float
    channel: Literal["bridge", "cloud"]
    source_id: str
    lock_id: str | None
    url: str
    event_type: str | None
    body: bytes = field(repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    status: int | None = None
    error: str | None = None
    duplicate: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "channel": self.channel,
            "source_id": self.source_id,
            "lock_id": self.lock_id,
            "url": self.url,
            "event_type": self.event_type,
            "body": self.body.decode("utf-8", "replace"),
            "headers": self.headers,
            "status": self.status,
            "error": self.error,
            "duplicate": self.duplicate,
        }
