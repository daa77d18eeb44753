"""The lock's behaviour: verifying commands and moving the bolt with realistic events."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Literal

from roomkey.loqed.signing import (
    COMMAND_LENGTH,
    DEVICE_ID,
    PROTOCOL,
    TYPE_NORMAL,
    CommandFormatError,
    DecodedCommand,
    decode_command,
    decode_key,
)
from roomkey.sim.clock import SimClock
from roomkey.sim.loqed.config import SimConfig
from roomkey.sim.loqed.model import NO_KEY, BoltState, ReceivedCommand, SimLock, Verdict
from roomkey.sim.loqed.payloads import SimEvent, go_to_event, state_event

__all__ = ["ACTION_STATE", "MANUAL_KINDS", "LockModel", "judge_command"]

ACTION_STATE = {1: BoltState.OPEN, 2: BoltState.DAY_LOCK, 3: BoltState.NIGHT_LOCK}

# GO_TO event the lock sends for a remote command (bridge, cloud or app), by target
_REMOTE_GO_TO = {
    BoltState.OPEN: "GO_TO_STATE_INSTANTOPEN_OPEN",
    BoltState.DAY_LOCK: "GO_TO_STATE_MANUAL_LOCK_REMOTE_LATCH",
    BoltState.NIGHT_LOCK: "GO_TO_STATE_MANUAL_LOCK_REMOTE_NIGHT_LOCK",
}

# manual interactions: kind -> (fixed target or None, GO_TO event per target)
MANUAL_KINDS: dict[str, dict[BoltState, str]] = {
    "touch": {BoltState.OPEN: "GO_TO_STATE_INSTANTOPEN_OPEN"},
    "auto_unlock": {BoltState.DAY_LOCK: "GO_TO_STATE_INSTANTOPEN_LATCH"},
    "touch_to_lock": {BoltState.NIGHT_LOCK: "GO_TO_STATE_TOUCH_TO_LOCK"},
    "keypad": {BoltState.OPEN: "GO_TO_STATE_MANUAL_UNLOCK_VIA_OUTSIDE_MODULE_PIN"},
    "button": {BoltState.OPEN: "GO_TO_STATE_MANUAL_UNLOCK_VIA_OUTSIDE_MODULE_BUTTON"},
    "ble": {
        BoltState.OPEN: "GO_TO_STATE_MANUAL_UNLOCK_BLE_OPEN",
        BoltState.DAY_LOCK: "GO_TO_STATE_MANUAL_LOCK_BLE_LATCH",
        BoltState.NIGHT_LOCK: "GO_TO_STATE_MANUAL_LOCK_BLE_NIGHT_LOCK",
    },
    "twist_assist": {
        BoltState.OPEN: "GO_TO_STATE_TWIST_ASSIST_OPEN",
        BoltState.DAY_LOCK: "GO_TO_STATE_TWIST_ASSIST_LATCH",
        BoltState.NIGHT_LOCK: "GO_TO_STATE_TWIST_ASSIST_LOCK",
    },
    "knob": {},  # a plain knob turn: STATE_CHANGED only, key 255
}

Emit = Callable[[SimLock, SimEvent], Awaitable[None]]


def judge_command(
    lock: SimLock,
    command_b64: str | None,
    *,
    lock_now: float,
    config: SimConfig,
    allow_short: bool = False,
    only_key: int | None = None,
) -> tuple[Verdict, DecodedCommand | None]:
    """Decide what the lock makes of a signed command (pure, apart from the replay memory)."""
    if command_b64 is None:
        return Verdict.MALFORMED, None
    try:
        cmd = decode_command(command_b64, allow_short=allow_short)
    except CommandFormatError:
        return Verdict.MALFORMED, None
    if (
        cmd.protocol != PROTOCOL
        or cmd.command_type != TYPE_NORMAL
        or cmd.device_id != DEVICE_ID
        or cmd.action not in ACTION_STATE
        or (cmd.length == COMMAND_LENGTH and cmd.message_id != b"\x00" * 8)
    ):
        return Verdict.MALFORMED, cmd
    if not lock.online:
        return Verdict.OFFLINE, cmd
    key = lock.keys.get(cmd.local_key_id)
    if key is None or (only_key is not None and cmd.local_key_id != only_key):
        return Verdict.UNKNOWN_KEY, cmd
    if not cmd.verify(decode_key(key.secret)):
        return Verdict.BAD_SIGNATURE, cmd
    if lock_now - cmd.timestamp >= config.max_command_age:
        return Verdict.STALE, cmd
    if cmd.timestamp - lock_now > config.max_command_future:
        return Verdict.FUTURE, cmd
    if config.replay_check:
        horizon = lock_now - config.max_command_age - config.max_command_future
        for mac, ts in list(lock.seen_macs.items()):
            if ts < horizon:
                del lock.seen_macs[mac]
        if cmd.mac in lock.seen_macs:
            return Verdict.REPLAY, cmd
        lock.seen_macs[cmd.mac] = cmd.timestamp
    return Verdict.ACCEPTED, cmd


class LockModel:
    """Schedules GO_TO / STATE_CHANGED / re-latch / stall events on the simulated clock."""

    def __init__(self, clock: SimClock, config: SimConfig, rng: random.Random, emit: Emit) -> None:
        self._clock = clock
        self._config = config
        self._rng = rng
        self._emit = emit
        self.received: list[ReceivedCommand] = []

    def sample(self, span: tuple[float, float]) -> float:
        low, high = span
        return low if high <= low else self._rng.uniform(low, high)

    def record(
        self,
        lock: SimLock,
        via: Literal["bridge", "cloud", "app_api"],
        verdict: Verdict,
        cmd: DecodedCommand | None = None,
        *,
        key_local_id: int | None = None,
        action: BoltState | None = None,
    ) -> ReceivedCommand:
        if cmd is not None:
            key_local_id = cmd.local_key_id
            state = ACTION_STATE.get(cmd.action)
            action = state if state is not None else action
        entry = ReceivedCommand(
            at=self._clock.time(),
            lock_id=lock.lock_id,
            via=via,
            verdict=verdict,
            key_local_id=key_local_id,
            action=action.value if action is not None else None,
            command_timestamp=cmd.timestamp if cmd is not None else None,
            length=cmd.length if cmd is not None else None,
        )
        self.received.append(entry)
        return entry

    def cancel(self, lock: SimLock) -> None:
        for timer in lock.timers:
            timer.cancel()
        lock.timers.clear()
        lock.moving_to = None

    def _at(self, lock: SimLock, when: float, event: SimEvent, update: BoltState | None) -> None:
        async def fire() -> None:
            if update is not None:
                lock.bolt_state = update
            await self._emit(lock, event)

        lock.timers.append(self._clock.call_at(when, fire))

    def remote_command(self, lock: SimLock, target: BoltState, key_local_id: int) -> None:
        """An accepted remote command: GO_TO, then STATE_CHANGED (unless already there)."""
        self.move(lock, target, _REMOTE_GO_TO[target], key_local_id)

    def move(self, lock: SimLock, target: BoltState, go_to_type: str, key_local_id: int) -> None:
        now = self._clock.time()
        t = self._config.timings
        t_go = now + self.sample(t.go_to)
        if lock.bolt_state == target and lock.moving_to is None:
            # real locks send only the GO_TO event; a pending re-latch still happens
            self._at(lock, t_go, go_to_event(go_to_type, target, key_local_id), None)
            return
        self.cancel(lock)
        self._at(lock, t_go, go_to_event(go_to_type, target, key_local_id), None)
        if lock.bolt_state == target:
            return  # the movement elsewhere is abandoned; the bolt stays where it is
        lock.moving_to = target
        t_done = max(now + self.sample(t.state_changed), t_go + t.min_gap)
        self._finish_at(lock, t_done, target, key_local_id)

    def knob(self, lock: SimLock, target: BoltState) -> None:
        """A manual knob turn: the bolt moves, STATE_CHANGED with key 255, no GO_TO."""
        self.cancel(lock)
        when = self._clock.time() + self.sample(self._config.timings.manual_state)
        self._finish_at(lock, when, target, NO_KEY)

    def _finish_at(self, lock: SimLock, when: float, target: BoltState, key_id: int) -> None:
        async def finish() -> None:
            lock.moving_to = None
            if lock.pending_stalls > 0:
                lock.pending_stalls -= 1
                lock.bolt_state = BoltState.UNKNOWN
                await self._emit(lock, SimEvent("state", "MOTOR_STALL", BoltState.UNKNOWN, key_id))
                after = self._clock.time() + self._config.timings.stall_to_unknown
                self._at(lock, after, state_event(BoltState.UNKNOWN, key_id), BoltState.UNKNOWN)
                return
            lock.bolt_state = target
            remote = self._config.remote_state_suffix and key_id != NO_KEY
            await self._emit(lock, state_event(target, key_id, remote=remote))
            relatch = self._config.timings.relatch_after
            if target is BoltState.OPEN and relatch is not None:
                self._at(
                    lock,
                    self._clock.time() + relatch,
                    state_event(BoltState.DAY_LOCK, NO_KEY),
                    BoltState.DAY_LOCK,
                )

        lock.timers.append(self._clock.call_at(when, finish))
