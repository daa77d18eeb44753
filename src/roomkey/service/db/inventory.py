"""Rooms, locks and their credentials: the config mirrored into the database, and
encrypted secrets (e.g. the Lockme OAuth token).

Credentials are written only as :class:`~roomkey.service.crypto.SecretBox` ciphertext.
All functions run inside the caller's transaction and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..crypto import DecryptionError, SecretBox
from .models import Lock, Room, RoomLock, StoredSecret

if TYPE_CHECKING:
    from ..config import Config

__all__ = [
    "InventorySync",
    "delete_secret",
    "find_lock_by_loqed_id",
    "get_secret",
    "list_locks",
    "list_rooms",
    "lock_credentials",
    "locks_for_room",
    "put_secret",
    "rooms_for_lock",
    "rotate_secrets",
    "sync_inventory",
]


@dataclass(slots=True)
class InventorySync:
    """What :func:`sync_inventory` changed (ids)."""

    rooms_added: list[int] = field(default_factory=list)
    rooms_updated: list[int] = field(default_factory=list)
    rooms_deactivated: list[int] = field(default_factory=list)
    locks_added: list[str] = field(default_factory=list)
    locks_updated: list[str] = field(default_factory=list)
    locks_deactivated: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(
            (
                self.rooms_added,
                self.rooms_updated,
                self.rooms_deactivated,
                self.locks_added,
                self.locks_updated,
                self.locks_deactivated,
            )
        )


def _same_secret(box: SecretBox, stored: str | None, wanted: dict[str, Any]) -> bool:
    if stored is None:
        return False
    try:
        return bool(box.decrypt_json(stored) == wanted)
    except DecryptionError:
        return False


async def sync_inventory(
    session: AsyncSession, config: Config, box: SecretBox, *, now: datetime
) -> InventorySync:
    """Mirror the config's rooms, locks and room↔lock links into the database.

    Rooms/locks gone from the config are kept (history) but marked inactive. Live lock state
    is never touched. Credentials are re-encrypted only when they changed.
    """
    report = InventorySync()
    locks = {row.id: row for row in (await session.execute(select(Lock))).scalars()}
    for lock_cfg in config.locks:
        creds = lock_cfg.credentials()
        values: dict[str, Any] = {
            "name": lock_cfg.name,
            "loqed_id": lock_cfg.resolved_loqed_id,
            "transports": list(lock_cfg.transports),
            "active": True,
        }
        row = locks.get(lock_cfg.id)
        if row is None:
            session.add(
                Lock(
                    id=lock_cfg.id,
                    credentials_enc=box.encrypt_json(creds),
                    created_at=now,
                    updated_at=now,
                    **values,
                )
            )
            report.locks_added.append(lock_cfg.id)
            continue
        changed = any(getattr(row, k) != v for k, v in values.items())
        if not _same_secret(box, row.credentials_enc, creds):
            row.credentials_enc = box.encrypt_json(creds)
            changed = True
        if changed:
            for k, v in values.items():
                setattr(row, k, v)
            row.updated_at = now
            report.locks_updated.append(lock_cfg.id)
    wanted_locks = {lock.id for lock in config.locks}
    for lock_id, row in locks.items():
        if lock_id not in wanted_locks and row.active:
            row.active = False
            row.updated_at = now
            report.locks_deactivated.append(lock_id)

    rooms = {row.id: row for row in (await session.execute(select(Room))).scalars()}
    for room_cfg in config.rooms:
        room_values: dict[str, Any] = {
            "name": room_cfg.name,
            "timezone": room_cfg.timezone,
            "department_id": room_cfg.department,
            "policy": config.policy_for(room_cfg).model_dump(mode="json"),
            "active": True,
        }
        room_row = rooms.get(room_cfg.id)
        if room_row is None:
            session.add(Room(id=room_cfg.id, created_at=now, updated_at=now, **room_values))
            report.rooms_added.append(room_cfg.id)
        elif any(getattr(room_row, k) != v for k, v in room_values.items()):
            for k, v in room_values.items():
                setattr(room_row, k, v)
            room_row.updated_at = now
            report.rooms_updated.append(room_cfg.id)
    wanted_rooms = {room.id for room in config.rooms}
    for room_id, room_row in rooms.items():
        if room_id not in wanted_rooms and room_row.active:
            room_row.active = False
            room_row.updated_at = now
            report.rooms_deactivated.append(room_id)
    await session.flush()

    wanted_links = {(room.id, lock_id) for room in config.rooms for lock_id in room.locks}
    current_links = {
        (room_id, lock_id)
        for room_id, lock_id in await session.execute(select(RoomLock.room_id, RoomLock.lock_id))
    }
    for room_id, lock_id in current_links - wanted_links:
        await session.execute(
            delete(RoomLock).where(RoomLock.room_id == room_id, RoomLock.lock_id == lock_id)
        )
        if room_id not in report.rooms_updated and room_id in wanted_rooms:
            report.rooms_updated.append(room_id)
    for room_id, lock_id in sorted(wanted_links - current_links):
        session.add(RoomLock(room_id=room_id, lock_id=lock_id))
        if room_id not in report.rooms_updated and room_id not in report.rooms_added:
            report.rooms_updated.append(room_id)
    await session.flush()
    return report


async def lock_credentials(session: AsyncSession, box: SecretBox, lock_id: str) -> dict[str, Any]:
    """The decrypted transport credentials of a lock (``{"bridge": {...}|None, ...}``)."""
    stored = (
        await session.execute(select(Lock.credentials_enc).where(Lock.id == lock_id))
    ).scalar_one_or_none()
    if stored is None:
        raise KeyError(lock_id)
    creds: dict[str, Any] = box.decrypt_json(stored)
    return creds


async def list_rooms(session: AsyncSession, *, active_only: bool = True) -> list[Room]:
    stmt = select(Room).order_by(Room.id)
    if active_only:
        stmt = stmt.where(Room.active.is_(True))
    return list((await session.execute(stmt)).scalars())


async def list_locks(session: AsyncSession, *, active_only: bool = True) -> list[Lock]:
    stmt = select(Lock).order_by(Lock.id)
    if active_only:
        stmt = stmt.where(Lock.active.is_(True))
    return list((await session.execute(stmt)).scalars())


async def locks_for_room(session: AsyncSession, room_id: int) -> list[Lock]:
    stmt = (
        select(Lock)
        .join(RoomLock, RoomLock.lock_id == Lock.id)
        .where(RoomLock.room_id == room_id)
        .order_by(Lock.id)
    )
    return list((await session.execute(stmt)).scalars())


async def rooms_for_lock(session: AsyncSession, lock_id: str) -> list[Room]:
    stmt = (
        select(Room)
        .join(RoomLock, RoomLock.room_id == Room.id)
        .where(RoomLock.lock_id == lock_id)
        .order_by(Room.id)
    )
    return list((await session.execute(stmt)).scalars())


async def find_lock_by_loqed_id(session: AsyncSession, loqed_id: str) -> Lock | None:
    stmt = select(Lock).where(Lock.loqed_id == loqed_id, Lock.active.is_(True)).limit(1)
    return (await session.execute(stmt)).scalar_one_or_none()


async def put_secret(
    session: AsyncSession, box: SecretBox, name: str, value: str, *, now: datetime
) -> None:
    """Store ``value`` encrypted under ``name`` (replacing any previous value)."""
    row = await session.get(StoredSecret, name)
    if row is None:
        session.add(StoredSecret(name=name, ciphertext=box.encrypt(value), updated_at=now))
    else:
        row.ciphertext = box.encrypt(value)
        row.updated_at = now
    await session.flush()


async def get_secret(session: AsyncSession, box: SecretBox, name: str) -> str | None:
    stored = (
        await session.execute(select(StoredSecret.ciphertext).where(StoredSecret.name == name))
    ).scalar_one_or_none()
    return None if stored is None else box.decrypt(stored)


async def delete_secret(session: AsyncSession, name: str) -> bool:
    result = await session.execute(delete(StoredSecret).where(StoredSecret.name == name))
    return bool(getattr(result, "rowcount", 0))


async def rotate_secrets(session: AsyncSession, box: SecretBox) -> int:
    """Re-encrypt every stored secret and lock credential with the box's newest key."""
    count = 0
    for secret in (await session.execute(select(StoredSecret))).scalars():
        secret.ciphertext = box.rotate(secret.ciphertext)
        count += 1
    for lock in (await session.execute(select(Lock))).scalars():
        if lock.credentials_enc is not None:
            lock.credentials_enc = box.rotate(lock.credentials_enc)
            count += 1
    await session.flush()
    return count
