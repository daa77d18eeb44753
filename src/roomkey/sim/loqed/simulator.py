"""``LoqedSimulator``: the world of bridges, locks, keys and cloud credentials, and its app."""

from __future__ import annotations

import base64
import json
import random
import secrets
import string
from typing import TYPE_CHECKING, Literal

import httpx

from roomkey.loqed.signing import CommandFormatError, decode_key
from roomkey.sim.clock import SimClock
from roomkey.sim.loqed.config import SimConfig
from roomkey.sim.loqed.delivery import Dispatcher
from roomkey.sim.loqed.lockmodel import MANUAL_KINDS, LockModel
from roomkey.sim.loqed.model import (
    NO_KEY,
    BoltState,
    DeliveryRecord,
    GatewayMode,
    ReceivedCommand,
    SimApiToken,
    SimAppApiKey,
    SimBridge,
    SimCloudWebhook,
    SimKey,
    SimLock,
    SimWebhook,
    Verdict,
)
from roomkey.sim.loqed.payloads import SimEvent, bridge_body, cloud_body, trigger_bit
from roomkey.sim.loqed.ratelimit import RateLimiter

if TYPE_CHECKING:
    from roomkey.sim.loqed.faults import FaultKind, FaultMiddleware, FaultRule, FaultSet

__all__ = ["LoqedSimulator", "SimError"]

_ALNUM = string.ascii_letters + string.digits


class SimError(ValueError):
    """Bad use of the simulator's seed/control API (unknown id, duplicate, bad value)."""


def _b64_secret(size: int = 32) -> str:
    return base64.b64encode(secrets.token_bytes(size)).decode("ascii")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class LoqedSimulator:
    """Simulates LOQED bridges, locks, the Integrations API and app.loqed.com in one ASGI app."""

    def __init__(
        self,
        clock: SimClock | None = None,
        *,
        delivery_client: httpx.AsyncClient | None = None,
        config: SimConfig | None = None,
    ) -> None:
        self.clock = clock if clock is not None else SimClock()
        self.config = config if config is not None else SimConfig()
        self.rng = random.Random(self.config.seed)  # noqa: S311 - timings, not secrets
        self.bridges: dict[str, SimBridge] = {}
        self.locks: dict[str, SimLock] = {}
        self.tokens: list[SimApiToken] = []
        self.app_keys: list[SimAppApiKey] = []
        self.cloud_webhooks: list[SimCloudWebhook] = []
        self._next_cloud_webhook = 1
        self.dispatcher = Dispatcher(self.clock, self.config, delivery_client)
        self.model = LockModel(self.clock, self.config, self.rng, self.emit)
        self.limiter = RateLimiter(self.clock, self.config.cloud)
        self.socket_mode = False  # set by the loopback server: faults then act on the socket
        self._app: FaultMiddleware | None = None

    # -- the ASGI app ---------------------------------------------------------------------
    @property
    def app(self) -> FaultMiddleware:
        """The one ASGI app (bridges, cloud, app.loqed.com, control API, /health)."""
        if self._app is None:
            from roomkey.sim.loqed.asgi import build_app

            self._app = build_app(self)
        return self._app

    @property
    def faults(self) -> FaultSet:
        """The active HTTP fault rules (also editable through ``/_sim/faults``)."""
        return self.app.faults

    def add_fault(
        self, path: str, kind: FaultKind, *, count: int | None = None, seconds: float = 0.0,
        status: int = 503, method: str | None = None,
    ) -> FaultRule:
        """Inject an HTTP fault: ``latency``, ``status``, ``drop_before``, ``drop_after``,
        ``refuse`` on requests whose path starts with ``path`` (e.g. ``/bridges/b1/to_lock``)."""
        return self.faults.add(path, kind, count=count, seconds=seconds, status=status,
                               method=method)

    async def aclose(self) -> None:
        """Stop delivery workers and close the delivery client if the simulator made it."""
        await self.dispatcher.aclose()

    async def settle(self) -> None:
        """Wait for queued webhook deliveries (warp mode; manual mode delivers inline)."""
        await self.dispatcher.settle()

    # -- seeding --------------------------------------------------------------------------
    def add_bridge(
        self,
        bridge_id: str,
        *,
        bridge_key: str | None = None,
        mac_wifi: str | None = None,
        mac_ble: str | None = None,
        gateway: GatewayMode | None = None,
        ip_address: str = "192.168.12.34",
    ) -> SimBridge:
        """Add a bridge; ``gateway`` "legacy" (ESP32) or "new" (defaults to the config's)."""
        if bridge_id in self.bridges:
            raise SimError(f"bridge {bridge_id!r} exists")
        if not isinstance(bridge_id, str) or not bridge_id or "/" in bridge_id:
            raise SimError("bridge id must be a non-empty path segment")
        _check_b64(bridge_key, "bridge_key")
        mac = _check_mac(mac_wifi, "mac_wifi") or secrets.token_hex(6)
        bridge = SimBridge(
            bridge_id=bridge_id,
            bridge_key=bridge_key or _b64_secret(),
            mac_wifi=mac,
            mac_ble=_check_mac(mac_ble, "mac_ble") or secrets.token_hex(6),
            ip_address=ip_address,
            up_timestamp=int(self.clock.time()) - 3600,
            gateway=gateway or self.config.default_gateway,
        )
        self.bridges[bridge_id] = bridge
        return bridge

    def add_lock(
        self,
        bridge_id: str,
        *,
        lock_id: str | None = None,
        numeric_id: int | None = None,
        name: str = "Lock",
        bolt_state: BoltState | str = BoltState.NIGHT_LOCK,
        battery_percentage: int = 78,
    ) -> SimLock:
        """Pair a lock with a bridge (one lock per bridge, as with real hardware)."""
        bridge = self.bridge(bridge_id)
        if bridge.lock_id is not None:
            raise SimError(f"bridge {bridge_id!r} already has a lock")
        lid = lock_id or "".join(secrets.choice(_ALNUM) for _ in range(20))
        if not isinstance(lid, str) or not lid or "/" in lid:
            raise SimError("lock id must be a non-empty string without '/'")
        if lid in self.locks:
            raise SimError(f"lock {lid!r} exists")
        try:
            state = BoltState(str(bolt_state).lower())
        except ValueError:
            raise SimError(f"bad bolt state {bolt_state!r}") from None
        lock = SimLock(
            lock_id=lid,
            numeric_id=numeric_id if numeric_id is not None else 6000 + len(self.locks) + 1,
            bridge_id=bridge_id,
            name=name,
            bolt_state=state,
            battery_percentage=battery_percentage,
            backend_key=_b64_secret(),
            settings={
                "open_house_mode": 0,
                "twist_assist": 0,
                "touch_to_connect": 1,
                "touch_to_lock": 0,
                "hold_to_lock": 0,
            },
        )
        self.locks[lid] = lock
        bridge.lock_id = lid
        self.refresh_status(bridge)
        return lock

    def add_key(
        self,
        lock_id: str,
        *,
        local_id: int | None = None,
        name: str = "",
        secret: str | None = None,
        admin_name: str = "Admin",
        account_email: str = "",
        account_name: str = "",
    ) -> SimKey:
        lock = self.lock(lock_id)
        _check_b64(secret, "secret")
        if local_id is None:
            local_id = next(i for i in range(1, 251) if i not in lock.keys)
        if not 0 <= local_id <= 250:
            raise SimError("local_id must be 0..250")
        if local_id in lock.keys:
            raise SimError(f"key slot {local_id} is taken")
        key = SimKey(
            lock_id=lock_id,
            local_id=local_id,
            secret=secret or _b64_secret(),
            name=name,
            admin_name=admin_name,
            account_email=account_email,
            account_name=account_name,
        )
        lock.keys[local_id] = key
        return key

    def delete_key(self, lock_id: str, local_id: int) -> None:
        """Delete a key slot (as in the LOQED app): its commands are ignored from now on."""
        if self.lock(lock_id).keys.pop(local_id, None) is None:
            raise SimError(f"no key slot {local_id}")

    def add_api_token(
        self, lock_ids: list[str], *, name: str = "roomkey", expires_in: float | None = None
    ) -> SimApiToken:
        """A personal access token; it gets its own key slot on each of its locks."""
        header = _b64url(json.dumps({"typ": "JWT", "alg": "RS256"}).encode())
        claims = _b64url(
            json.dumps(
                {
                    "aud": "1",
                    "jti": secrets.token_hex(40),
                    "iat": int(self.clock.time()),
                    "sub": str(len(self.tokens) + 1),
                    "scopes": [],
                }
            ).encode()
        )
        token = SimApiToken(
            id=len(self.tokens) + 1,
            token=f"{header}.{claims}.{_b64url(secrets.token_bytes(256))}",
            lock_ids=list(lock_ids),
            expires_at=None if expires_in is None else self.clock.time() + expires_in,
        )
        for lid in lock_ids:
            key = self.add_key(lid, name=f"API: {name}", account_name=name)
            token.key_ids[lid] = key.local_id
        self.tokens.append(token)
        return token

    def add_app_api_key(self, lock_id: str, *, name: str = "API key") -> SimAppApiKey:
        """An app.loqed.com API key (``api_token`` + its own key slot)."""
        key = self.add_key(lock_id, name=name)
        app_key = SimAppApiKey(
            id=len(self.app_keys) + 1,
            api_token=secrets.token_hex(20),
            lock_id=lock_id,
            local_id=key.local_id,
            secret=key.secret,
        )
        self.app_keys.append(app_key)
        return app_key

    def add_bridge_webhook(self, bridge_id: str, url: str, flags: int = 511) -> int:
        """Register a webhook on a bridge directly (as ``POST /webhooks`` would); returns its id."""
        bridge = self.bridge(bridge_id)
        if not 0 <= flags <= 511:
            raise SimError("flags must be 0..511")
        hook_id = bridge.next_webhook_id
        bridge.webhooks.append(SimWebhook(hook_id, url, flags))
        bridge.next_webhook_id += 1
        return hook_id

    def add_cloud_webhook(
        self,
        lock_id: str,
        url: str,
        *,
        shape: Literal["documented", "observed"] | None = None,
        info: bool = True,
        guest_access_mode: bool = False,
    ) -> SimCloudWebhook:
        self.lock(lock_id)
        hook = SimCloudWebhook(
            id=self._next_cloud_webhook,
            lock_id=lock_id,
            url=url,
            shape=shape or self.config.cloud.webhook_shape,
            info=info,
            guest_access_mode=guest_access_mode,
        )
        self._next_cloud_webhook += 1
        self.cloud_webhooks.append(hook)
        return hook

    # -- lookups --------------------------------------------------------------------------
    def bridge(self, bridge_id: str) -> SimBridge:
        try:
            return self.bridges[bridge_id]
        except KeyError:
            raise SimError(f"no bridge {bridge_id!r}") from None

    def lock(self, lock_id: str) -> SimLock:
        try:
            return self.locks[lock_id]
        except KeyError:
            raise SimError(f"no lock {lock_id!r}") from None

    def bridge_of(self, lock: SimLock) -> SimBridge:
        return self.bridges[lock.bridge_id]

    def first_bridge(self) -> SimBridge | None:
        return next(iter(self.bridges.values()), None)

    def received(self, lock_id: str | None = None) -> list[ReceivedCommand]:
        """What each lock received (every command, with its verdict), oldest first."""
        return [r for r in self.model.received if lock_id is None or r.lock_id == lock_id]

    def deliveries(self, channel: str | None = None) -> list[DeliveryRecord]:
        """Every outgoing webhook POST, oldest first."""
        return [d for d in self.dispatcher.records if channel is None or d.channel == channel]

    # -- time -------------------------------------------------------------------------------
    def bridge_time(self, bridge: SimBridge) -> float:
        """The bridge's own clock (simulated time plus its injected skew)."""
        return self.clock.time() + bridge.clock_skew

    def bridge_refuses(self, bridge: SimBridge) -> bool:
        """True once the "internet down" fault has lasted long enough to kill the HTTP server."""
        since = bridge.internet_down_since
        return since is not None and self.clock.time() - since >= (
            self.config.internet_down_refuse_after
        )

    # -- status -----------------------------------------------------------------------------
    def status_of(self, bridge: SimBridge) -> dict[str, object]:
        if self.config.status_waits_for_delivery and bridge.reported:
            base = dict(bridge.reported)
        else:
            base = self._snapshot(bridge)
        base["webhooks_number"] = len(bridge.webhooks)
        return base

    def refresh_status(self, bridge: SimBridge) -> None:
        bridge.reported = self._snapshot(bridge)

    def _snapshot(self, bridge: SimBridge) -> dict[str, object]:
        lock = self.locks.get(bridge.lock_id) if bridge.lock_id else None
        online = bool(lock and lock.online)
        bolt = lock.bolt_state if lock else BoltState.UNKNOWN
        return {
            "battery_percentage": (lock.battery_percentage if lock and online else -1),
            "battery_type": lock.battery_type if lock else "UNKNOWN",
            "battery_type_numeric": _battery_numeric(lock.battery_type if lock else "UNKNOWN"),
            "battery_voltage": lock.battery_voltage if lock else 0.0,
            "bolt_state": bolt.value,
            "bolt_state_numeric": bolt.numeric,
            "bridge_mac_wifi": bridge.mac_wifi,
            "bridge_mac_ble": bridge.mac_ble,
            "lock_online": 1 if online else 0,
            "webhooks_number": len(bridge.webhooks),
            "ip_address": bridge.ip_address,
            "up_timestamp": bridge.up_timestamp,
            "wifi_strength": lock.wifi_strength if lock else 0,
            "ble_strength": lock.ble_strength if lock and online else -1,
        }

    # -- events -----------------------------------------------------------------------------
    async def emit(self, lock: SimLock, event: SimEvent) -> None:
        """The lock reports ``event``: the cloud copy now, the bridge copy 0.1–0.8 s later.

        An offline lock reports nothing but its (lost) connection.
        """
        if not lock.online and event.kind not in ("online", "raw"):
            return
        bridge = self.bridge_of(lock)
        cloud = self.config.cloud
        hooks = [h for h in self.cloud_webhooks if h.lock_id == lock.lock_id]
        if hooks and bridge.internet_down_since is None:
            key = lock.keys.get(event.key_local_id) if event.key_local_id != NO_KEY else None
            bodies = [cloud_body(event, lock, key, shape=h.shape) for h in hooks]
            await self.dispatcher.cloud_event(
                hooks, bodies, lock_id=lock.lock_id, event_type=event.event_type
            )
            if cloud.duplicate_probability > 0 and self.rng.random() < cloud.duplicate_probability:

                async def again() -> None:
                    await self.dispatcher.cloud_event(
                        hooks, bodies, lock_id=lock.lock_id, event_type=event.event_type,
                        duplicate=True,
                    )

                self.clock.call_later(cloud.duplicate_delay, again)
        body = bridge_body(event, lock, mac_wifi=bridge.mac_wifi, mac_ble=bridge.mac_ble)
        snapshot = self._snapshot(bridge)
        lag = self.model.sample(self.config.timings.bridge_lag)
        when = max(self.clock.time() + lag, bridge.last_bridge_delivery_at + 0.01)
        bridge.last_bridge_delivery_at = when

        def publish() -> None:
            bridge.reported = snapshot

        async def deliver() -> None:
            await self.dispatcher.bridge_event(
                bridge, lock.lock_id, body, event_type=event.event_type,
                trigger_bit=trigger_bit(event), after=publish,
            )

        self.clock.call_at(when, deliver)

    # -- commands -----------------------------------------------------------------------------
    def cloud_command(
        self, lock: SimLock, target: BoltState, key_local_id: int, via: Literal["cloud", "app_api"]
    ) -> Verdict:
        """A command the backend forwards to the lock with a known key slot (no signature)."""
        bridge = self.bridge_of(lock)
        if bridge.internet_down_since is not None:
            verdict = Verdict.BRIDGE_UNREACHABLE
        elif not lock.online:
            verdict = Verdict.OFFLINE
        elif key_local_id not in lock.keys:
            verdict = Verdict.UNKNOWN_KEY
        else:
            verdict = Verdict.ACCEPTED
        self.model.record(lock, via, verdict, key_local_id=key_local_id, action=target)
        if verdict is Verdict.ACCEPTED:
            self.model.remote_command(lock, target, key_local_id)
        return verdict

    # -- control -------------------------------------------------------------------------------
    def inject_stall(self, lock_id: str, count: int = 1) -> None:
        """The next ``count`` movements end in MOTOR_STALL then STATE_CHANGED_UNKNOWN."""
        if not 0 <= count <= 1000:
            raise SimError("count must be 0..1000")
        self.lock(lock_id).pending_stalls += count

    def manual(
        self, lock_id: str, kind: str, target: BoltState | str | None = None,
        *, key_local_id: int = NO_KEY,
    ) -> None:
        """A person at the door: knob, touch, keypad, button, BLE app, twist assist..."""
        lock = self.lock(lock_id)
        if kind not in MANUAL_KINDS:
            raise SimError(f"unknown manual kind {kind!r}; one of {sorted(MANUAL_KINDS)}")
        if not lock.online and kind != "knob":
            raise SimError("lock is offline")
        choices = MANUAL_KINDS[kind]
        if target is None:
            if len(choices) != 1:
                raise SimError(f"{kind} needs a target state")
            state = next(iter(choices))
        else:
            try:
                state = BoltState(str(target).lower())
            except ValueError:
                raise SimError(f"bad target {target!r}") from None
        if kind == "knob":
            if state is BoltState.UNKNOWN:
                raise SimError("bad target")
            self.model.knob(lock, state)
            return
        if state not in choices:
            raise SimError(f"{kind} cannot go to {state.value}")
        self.model.move(lock, state, choices[state], key_local_id)

    async def battery_report(
        self, lock_id: str, *, percentage: int | None = None, battery_type: str | None = None
    ) -> None:
        lock = self.lock(lock_id)
        if percentage is not None:
            if not -1 <= percentage <= 100:
                raise SimError("percentage must be -1..100")
            lock.battery_percentage = percentage
        if battery_type is not None and not isinstance(battery_type, str):
            raise SimError("battery_type must be a string")
        if battery_type is not None:
            lock.battery_type = battery_type
        await self.emit(lock, SimEvent("battery"))

    async def set_online(
        self, lock_id: str, online: bool, *, ble_strength: int | None = None,
        wifi_strength: int | None = None,
    ) -> None:
        """Take the lock off the bridge (ble_strength −1) or bring it back; reports it."""
        lock = self.lock(lock_id)
        if not online:
            self.model.cancel(lock)
        lock.online = online
        if ble_strength is not None and ble_strength >= 0:
            lock.ble_strength = ble_strength
        if wifi_strength is not None:
            lock.wifi_strength = wifi_strength
        await self.emit(lock, SimEvent("online"))

    async def emit_raw(
        self, lock_id: str, payload: dict[str, object], bit: int | None = None
    ) -> None:
        """Send an arbitrary payload through the lock's bridge and cloud webhooks."""
        lock = self.lock(lock_id)
        event_type = payload.get("event_type")
        if bit is not None and not 0 <= bit <= 8:
            raise SimError("bit must be 0..8")
        event = SimEvent("raw", str(event_type) if event_type else None, raw=payload, bit=bit)
        await self.emit(lock, event)

    def set_internet(self, bridge_id: str, up: bool) -> None:
        bridge = self.bridge(bridge_id)
        bridge.internet_down_since = None if up else self.clock.time()


def _check_b64(value: object, name: str) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise SimError(f"{name} must be a base64 string")
    try:
        decode_key(value)
    except CommandFormatError:
        raise SimError(f"{name} must be valid base64") from None


def _check_mac(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 12:
        raise SimError(f"{name} must be 12 hex digits")
    try:
        int(value, 16)
    except ValueError:
        raise SimError(f"{name} must be 12 hex digits") from None
    return value.lower()


def _battery_numeric(kind: str) -> int:
    return {"ALKALINE": 0, "NICKEL_METAL_HYDRIDE": 1, "LITHIUM": 2}.get(kind.upper(), 3)
