"""Tunable behaviour of the simulator. Defaults follow the observed real-world values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["CloudConfig", "LockTimings", "SimConfig", "StatusLimit"]


@dataclass(slots=True)
class LockTimings:
    """Delays in seconds (ranges are sampled uniformly with the seeded RNG).

    Observed (reference §3.4): GO_TO 0.4–6 s after ``/to_lock``, STATE_CHANGED 4–16 s after it,
    automatic re-latch about 3 s after OPEN, cloud copy 0.1–0.8 s before the bridge copy.
    """

    go_to: tuple[float, float] = (0.4, 2.5)
    state_changed: tuple[float, float] = (4.0, 8.0)
    min_gap: float = 0.5
    relatch_after: float | None = 3.0
    stall_to_unknown: float = 1.0
    manual_state: tuple[float, float] = (0.5, 1.5)
    bridge_lag: tuple[float, float] = (0.1, 0.8)


@dataclass(slots=True)
class StatusLimit:
    """At most ``limit`` status reads per rolling ``window``; one more blocks for ``block``."""

    limit: int = 12
    window: float = 12 * 3600.0
    block: float = 12 * 3600.0
    status_code: int = 429


@dataclass(slots=True)
class CloudConfig:
    """Integrations API / app.loqed.com / cloud webhook behaviour."""

    webhook_shape: Literal["documented", "observed"] = "observed"
    duplicate_probability: float = 0.0
    duplicate_delay: float = 4.0
    per_minute_limit: int = 60
    # status-read limits per endpoint:
    # "api_locks" = GET /api/locks/, "app_status" = lock_status.php
    status_limits: dict[str, StatusLimit | None] = field(
        default_factory=lambda: {"api_locks": StatusLimit(), "app_status": StatusLimit()}
    )
    unauthenticated: Literal["redirect", "json401"] = "redirect"
    user_agent: str = "Java/1.8.0_292"


@dataclass(slots=True)
class SimConfig:
    """Everything configurable, in one place (also settable through ``/_sim/config``)."""

    seed: int = 0
    default_gateway: Literal["legacy", "new"] = "legacy"
    timings: LockTimings = field(default_factory=LockTimings)
    max_command_age: float = 60.0
    max_command_future: float = 60.0
    replay_check: bool = True
    remote_state_suffix: bool = False
    delivery_timeout: float = 5.0
    status_waits_for_delivery: bool = True
    webhook_mgmt_max_skew: float | None = None
    new_gateway_hash: Literal["omit", "send"] = "omit"
    internet_down_refuse_after: float = 90.0
    cloud: CloudConfig = field(default_factory=CloudConfig)
