"""Operator changes of a room's locks and door policy, with a preview of their effect.

The TOML file stays the base; the dashboard stores its changes in ``web_room_overrides`` and
lays them over the file's configuration (:func:`apply_overrides`): at startup, before the
service mirrors the configuration into the database, and at once when an operator saves a
change (:func:`save_room_settings` swaps the running configuration, re-syncs the inventory —
which re-plans the changed rooms — and wakes the executor). "Reset" deletes the override.

A stored policy override is the room's whole effective policy at the time of saving, so later
edits of ``[defaults.policy]`` in the file no longer reach that room until it is reset.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from roomkey.service.clock import utc_now
from roomkey.service.config import Config, RoomConfig
from roomkey.service.db.audit import write_audit
from roomkey.service.db.models import Reservation
from roomkey.service.executor import context_for
from roomkey.service.planner import RoomPlan, plan_room
from roomkey.service.policy import DoorPolicy
from roomkey.service.replan import booking_input
from roomkey.service.runtime import Service
from roomkey.service.slots import resolve_timezone

from .models import RoomOverride
from .schemas import MappingPreview, PreviewWindow

__all__ = [
    "SettingsError",
    "apply_overrides",
    "apply_stored_overrides",
    "load_overrides",
    "preview_room_settings",
    "reset_room_settings",
    "save_room_settings",
    "validate_room_settings",
]

log = logging.getLogger(__name__)


class SettingsError(ValueError):
    """Proposed room settings are invalid; ``problems`` lists each issue (field: message)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _strict_policy(defaults: DoorPolicy, overrides: Mapping[str, Any]) -> DoorPolicy:
    merged = {**defaults.model_dump(mode="json"), **dict(overrides)}
    return DoorPolicy.model_validate_json(json.dumps(merged), strict=True)


def validate_room_settings(
    config: Config,
    room_id: int,
    locks: Sequence[str] | None,
    policy: Mapping[str, Any] | None,
) -> RoomConfig:
    """The room's configuration with the proposed locks/policy (None keeps the current one);
    :class:`SettingsError` with every problem otherwise."""
    try:
        room = config.room(room_id)
    except KeyError:
        raise SettingsError([f"room: no room {room_id} in the configuration"]) from None
    problems: list[str] = []
    new_locks = list(room.locks)
    if locks is not None:
        known = {lock.id for lock in config.locks}
        new_locks = [str(lock).strip() for lock in locks]
        if not new_locks:
            problems.append("locks: a room needs at least one lock")
        for lock in new_locks:
            if lock not in known:
                problems.append(f"locks: unknown lock {lock[:64]!r}")
        if len(set(new_locks)) != len(new_locks):
            problems.append("locks: a lock is listed twice")
    new_policy = dict(room.policy)
    if policy is not None:
        new_policy = dict(policy)
        try:
            _strict_policy(config.defaults.policy, new_policy)
        except ValidationError as exc:
            for err in exc.errors(include_input=False, include_url=False):
                where = ".".join(str(p) for p in err.get("loc", ())) or "policy"
                problems.append(f"policy.{where}: {err.get('msg', 'invalid')}")
        except (TypeError, ValueError) as exc:
            problems.append(f"policy: {exc}")
    if problems:
        raise SettingsError(problems)
    return room.model_copy(update={"locks": new_locks, "policy": new_policy})


def apply_overrides(config: Config, overrides: Sequence[RoomOverride]) -> Config:
    """``config`` with the stored overrides laid over its rooms (invalid ones are skipped
    with an error in the log: e.g. a lock removed from the file since)."""
    by_room = {o.room_id: o for o in overrides}
    rooms: list[RoomConfig] = []
    for room in config.rooms:
        override = by_room.get(room.id)
        if override is None:
            rooms.append(room)
            continue
        try:
            rooms.append(validate_room_settings(config, room.id, override.locks, override.policy))
        except SettingsError as exc:
            log.error("ignoring the dashboard's settings of room %s: %s", room.id, exc)
            rooms.append(room)
    return config.model_copy(update={"rooms": rooms})


async def load_overrides(session: AsyncSession) -> list[RoomOverride]:
    return list((await session.execute(select(RoomOverride))).scalars())


async def apply_stored_overrides(service: Service) -> None:
    """Lay the stored overrides over ``service.config`` (before the service starts)."""
    try:
        async with service.session_factory() as session:
            overrides = await load_overrides(session)
    except SQLAlchemyError as exc:
        log.warning(
            "dashboard room settings not loaded (%s; database not migrated yet?)",
            type(exc).__name__,
        )
        return
    if overrides:
        _swap_config(service, apply_overrides(service.config, overrides))


def _swap_config(service: Service, config: Config) -> None:
    service.config = config
    context_for(service).config = config


async def _resync(service: Service) -> None:
    await service.sync_inventory()
    service.wakes.executor.set()


async def save_room_settings(
    service: Service,
    room_id: int,
    *,
    locks: Sequence[str] | None,
    policy: Mapping[str, Any] | None,
    actor: str,
) -> RoomConfig:
    """Validate, store (audited), apply to the running service and re-plan the room."""
    room = validate_room_settings(service.config, room_id, locks, policy)
    before = service.config.room(room_id)
    now = utc_now(service.clock)
    async with service.session_factory() as session, session.begin():
        row = await session.get(RoomOverride, room_id)
        if row is None:
            row = RoomOverride(room_id=room_id, updated_at=now, updated_by=actor[:128])
            session.add(row)
        row.locks = list(room.locks)
        row.policy = dict(room.policy)
        row.updated_at = now
        row.updated_by = actor[:128]
        await write_audit(
            session,
            at=now,
            actor=actor[:128],
            action="web.room_settings",
            target=f"room:{room_id}",
            details={
                "locks": {"before": list(before.locks), "after": list(room.locks)},
                "policy": {"before": dict(before.policy), "after": dict(room.policy)},
            },
        )
    rooms = [room if r.id == room_id else r for r in service.config.rooms]
    _swap_config(service, service.config.model_copy(update={"rooms": rooms}))
    await _resync(service)
    return room


async def reset_room_settings(service: Service, room_id: int, *, base: Config, actor: str) -> bool:
    """Drop the dashboard's override of ``room_id`` (back to the file's ``base`` settings)."""
    now = utc_now(service.clock)
    async with service.session_factory() as session, session.begin():
        row = await session.get(RoomOverride, room_id)
        if row is None:
            return False
        await session.delete(row)
        await write_audit(
            session,
            at=now,
            actor=actor[:128],
            action="web.room_settings_reset",
            target=f"room:{room_id}",
            details=None,
        )
    try:
        original = base.room(room_id)
    except KeyError:
        return True
    rooms = [original if r.id == room_id else r for r in service.config.rooms]
    _swap_config(service, service.config.model_copy(update={"rooms": rooms}))
    await _resync(service)
    return True


def _windows(plan: RoomPlan) -> list[PreviewWindow]:
    out: list[PreviewWindow] = []
    for lock_id, lock_plan in sorted(plan.lock_plans.items()):
        for interval in lock_plan.intervals:
            out.append(
                PreviewWindow(
                    lock_id=lock_id,
                    start_at=interval.start.astimezone(dt.UTC),
                    end_at=interval.end.astimezone(dt.UTC),
                    reservation_ids=list(interval.reservation_ids),
                )
            )
    return out


def _key(w: PreviewWindow) -> tuple[str, dt.datetime, dt.datetime]:
    return (w.lock_id, w.start_at, w.end_at)


async def preview_room_settings(
    service: Service,
    room_id: int,
    *,
    locks: Sequence[str] | None,
    policy: Mapping[str, Any] | None,
) -> MappingPreview:
    """The room's door windows on its next local day, now and with the proposed settings."""
    config = service.config
    proposed = validate_room_settings(config, room_id, locks, policy)
    current = config.room(room_id)
    tz = resolve_timezone(current.timezone)
    now = utc_now(service.clock)
    day = (now.astimezone(tz) + dt.timedelta(days=1)).date()
    async with service.session_factory() as session:
        rows = (
            await session.execute(
                select(Reservation).where(Reservation.room_id == room_id, Reservation.date == day)
            )
        ).scalars()
        bookings = [booking_input(row, tz) for row in rows]
    policy_before = config.policy_for(current)
    policy_after = _strict_policy(config.defaults.policy, proposed.policy)
    before = _windows(plan_room(room_id, bookings, policy_before, current.locks, now=now, tz=tz))
    after = _windows(plan_room(room_id, bookings, policy_after, proposed.locks, now=now, tz=tz))
    before_keys = {_key(w) for w in before}
    after_keys = {_key(w) for w in after}
    return MappingPreview(
        room_id=room_id,
        day=day.isoformat(),
        before=before,
        after=after,
        added=[w for w in after if _key(w) not in before_keys],
        removed=[w for w in before if _key(w) not in after_keys],
        policy_before=policy_before.model_dump(mode="json"),
        policy_after=policy_after.model_dump(mode="json"),
        locks_before=list(current.locks),
        locks_after=list(proposed.locks),
    )
