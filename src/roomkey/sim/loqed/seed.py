"""A ready-made demo world: one bridge, one lock, a key, a token and an app.loqed.com key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from roomkey.sim.loqed.model import SimApiToken, SimAppApiKey, SimBridge, SimKey, SimLock
from roomkey.sim.loqed.simulator import LoqedSimulator

__all__ = ["DEMO_LOCK_ID", "DemoWorld", "seed_demo"]

DEMO_LOCK_ID = "Yq1gK4oeE9KWe0ByxjX2"


@dataclass(frozen=True, slots=True)
class DemoWorld:
    bridge: SimBridge
    lock: SimLock
    key: SimKey
    token: SimApiToken
    app_key: SimAppApiKey

    def to_json(self) -> dict[str, Any]:
        return {
            "bridge_id": self.bridge.bridge_id,
            "bridge_key": self.bridge.bridge_key,
            "lock_id": self.lock.lock_id,
            "numeric_id": self.lock.numeric_id,
            "key": {"local_id": self.key.local_id, "secret": self.key.secret},
            "api_token": self.token.token,
            "app_api_token": self.app_key.api_token,
            "app_key": {"local_id": self.app_key.local_id, "secret": self.app_key.secret},
        }


def seed_demo(sim: LoqedSimulator, *, webhook_url: str | None = None) -> DemoWorld:
    """Seed bridge ``b1`` with the lock "Room 1" (id ``Yq1gK4oeE9KWe0ByxjX2``)."""
    bridge = sim.add_bridge("b1")
    lock = sim.add_lock("b1", lock_id=DEMO_LOCK_ID, numeric_id=6148, name="Room 1")
    key = sim.add_key(lock.lock_id, local_id=1, name="roomkey", account_name="roomkey")
    token = sim.add_api_token([lock.lock_id])
    app_key = sim.add_app_api_key(lock.lock_id)
    if webhook_url:
        sim.add_bridge_webhook(bridge.bridge_id, webhook_url)
    return DemoWorld(bridge, lock, key, token, app_key)
