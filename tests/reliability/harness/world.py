"""Both simulators on loopback in real time, and the roomkey configuration that uses them.

``roomkey serve`` runs on the system clock, so the simulators here run on a
:class:`~roomkey.sim.clock.SimClock` in warp mode at ×1 anchored at the real time: one
timeline for everything, and commands signed by roomkey are fresh for the simulated locks.
Bookings are therefore placed seconds to minutes ahead with one-minute slots and no lead or
lag, so whole booking lifecycles (book, edit, move, cancel, unlock, lock) fit in a short run.
"""

from __future__ import annotations

import datetime as dt
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from roomkey.lockme import Token
from roomkey.service.crypto import SecretBox, generate_key
from roomkey.service.demo import LoopbackServer, SimLockSpec, add_sim_lock, config_toml
from roomkey.service.lockme_gateway import EncryptedFileTokenStore
from roomkey.sim.clock import SimClock
from roomkey.sim.lockme import LockmeSimulator
from roomkey.sim.loqed import LoqedSimulator, SimConfig

WARSAW = ZoneInfo("Europe/Warsaw")
CLIENT_ID = "roomkey-reliability"
POLICY: dict[str, Any] = {
    "unlock_lead_minutes": 0,
    "lock_lag_minutes": 0,
    "default_slot_minutes": 1,
    "merge_gap_minutes": 0,
    "max_lateness_minutes": 2,
}
"""Door policy of the suites: one-minute slots, the door unlocked exactly for the slot."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class RoomSpec:
    room_id: int
    name: str
    lock: SimLockSpec
    unlock_mode: str = "day_lock"


@dataclass
class Secrets:
    """Every secret the configuration holds: searched for in logs, pages and the database."""

    client_secret: str = field(default_factory=lambda: "cs-" + secrets.token_urlsafe(18))
    hook_secret: str = field(default_factory=lambda: "hk-" + secrets.token_urlsafe(18))
    secret_key: str = field(default_factory=generate_key)

    def all(self, world: World | None = None) -> list[str]:
        found = [self.client_secret, self.hook_secret, self.secret_key]
        if world is not None:
            found += [world.token.access_token]
            if world.token.refresh_token:
                found.append(world.token.refresh_token)
            for room in world.rooms:
                found += [room.lock.key_secret, room.lock.bridge_key]
        return found


@dataclass
class World:
    """The simulated venue: Lockme (rooms, bookings, webhooks) and LOQED (bridges, locks)."""

    clock: SimClock
    lockme: LockmeSimulator
    loqed: LoqedSimulator
    lockme_server: LoopbackServer
    loqed_server: LoopbackServer
    department: int
    rooms: list[RoomSpec]
    token: Token
    secrets: Secrets

    # -- roomkey's side ------------------------------------------------------------------
    def config_text(
        self,
        *,
        db_url: str,
        data_dir: Path,
        port: int,
        replica_id: str,
        service: Mapping[str, Any] | None = None,
    ) -> str:
        text = config_toml(
            lockme_url=self.lockme_server.url,
            client_id=CLIENT_ID,
            client_secret=self.secrets.client_secret,
            rooms=[(r.room_id, r.name, [r.lock.roomkey_id]) for r in self.rooms],
            locks=[r.lock for r in self.rooms],
            data_dir=str(data_dir),
            database_url=db_url,
            webhook_secret=self.secrets.hook_secret,
            service={
                "replica_id": replica_id,
                "port": port,
                "host": "127.0.0.1",
                "reconcile_days_ahead": 1,
                "reconcile_interval_minutes": 1,
                **(service or {}),
            },
            policy=POLICY,
            room_policies={
                r.room_id: {"unlock_mode": r.unlock_mode}
                for r in self.rooms
                if r.unlock_mode != "day_lock"
            },
        )
        # the token file is shared by the replicas of one venue
        return text.replace(
            "[lockme]\n", f'[lockme]\ntoken_file = "{data_dir.parent / "lockme-token.json"}"\n', 1
        )

    def write_config(
        self, tmp: Path, *, db_url: str, port: int, replica_id: str, **service: Any
    ) -> Path:
        """Write the config (and the encrypted Lockme token file) for one replica."""
        data_dir = tmp / replica_id
        data_dir.mkdir(parents=True, exist_ok=True)
        token_path = tmp / "lockme-token.json"
        if not token_path.exists():
            EncryptedFileTokenStore(token_path, SecretBox([self.secrets.secret_key])).save(
                self.token
            )
        path = tmp / f"{replica_id}.toml"
        path.write_text(
            self.config_text(
                db_url=db_url, data_dir=data_dir, port=port, replica_id=replica_id,
                service=service,
            ),
            encoding="utf-8",
        )
        return path

    def point_webhooks_at(self, base_url: str) -> None:
        """Lockme's department webhook and every bridge's webhook go to ``base_url``."""
        self.lockme.configure_department(
            self.department, webhook_url=f"{base_url}/hooks/lockme/{self.secrets.hook_secret}"
        )
        for room in self.rooms:
            url = f"{base_url}/hooks/loqed/bridge/{room.lock.roomkey_id}"
            bridge = self.loqed.bridge(room.lock.bridge_id)
            bridge.webhooks.clear()
            self.loqed.add_bridge_webhook(room.lock.bridge_id, url)

    # -- time ----------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock.time()

    @staticmethod
    def local(moment: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(moment, WARSAW)

    def room(self, room_id: int) -> RoomSpec:
        return next(r for r in self.rooms if r.room_id == room_id)

    async def close(self) -> None:
        await self.lockme_server.stop()
        await self.loqed_server.stop()
        await self.loqed.aclose()
        await self.lockme.aclose()


async def make_world(
    *,
    rooms: int = 4,
    open_rooms: int = 1,
    redelivery: Sequence[float] = (0, 2, 5, 10, 20, 40, 80, 160, 320, 640),
    cart_hold_seconds: float = 25.0,
    seed: int = 1,
) -> World:
    """Start both simulators on free loopback ports with ``rooms`` rooms, one lock each; the
    last ``open_rooms`` rooms use the single-OPEN unlock mode. ``redelivery`` is Lockme's
    redelivery schedule compressed (≈10 minutes instead of 24 hours, growing gaps)."""
    clock = SimClock(warp=1.0)  # real time, with the simulators' timers running
    lockme = LockmeSimulator(
        clock, redelivery_schedule=tuple(redelivery), cart_hold_seconds=cart_hold_seconds,
        seed=seed,
    )
    keys = Secrets()
    lockme.add_oauth_client(CLIENT_ID, keys.client_secret, "http://127.0.0.1:8080/lockme/callback")
    dept = lockme.add_department("Escape Warsaw", None)
    loqed = LoqedSimulator(clock, config=SimConfig(seed=seed))
    loqed.socket_mode = True
    lockme_server = LoopbackServer(lockme.app)
    loqed_server = LoopbackServer(loqed.app)
    await lockme_server.start()
    await loqed_server.start()
    await clock.start()
    specs: list[RoomSpec] = []
    for index in range(rooms):
        room = lockme.add_room(dept.id, f"Room {index + 1}", [f"{h:02d}:00:00" for h in range(24)])
        lock = add_sim_lock(
            loqed,
            roomkey_id=f"door-{index + 1}",
            name=f"Door {index + 1}",
            bridge_id=f"b{index + 1}",
            loqed_url=loqed_server.url,
        )
        mode = "open" if index >= rooms - open_rooms else "day_lock"
        specs.append(RoomSpec(room.id, room.name, lock, mode))
    token = Token.model_validate(lockme.issue_token(CLIENT_ID))
    return World(clock, lockme, loqed, lockme_server, loqed_server, dept.id, specs, token, keys)
