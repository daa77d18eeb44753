"""Benchmark 3 — reaction latency under intake load.

roomkey (``bench.servers roomkey --probe``: the real service, plus a probe that records when
each re-plan transaction commits) runs pinned to :data:`~bench.common.SERVER_CPU`; the Lockme
and LOQED simulators run on loopback in this process and wrk on the load CPU. While wrk
loads the LOQED bridge receiver the way benchmark 1 does (signed events on 8 other locks):

* **webhook → plan committed**: bookings are made on the Lockme simulator at a steady rate;
  for each, the time from roomkey's durable receipt of the webhook (``received_at``, stored
  by the receiver) to the commit of the transaction that applied it and stored the room's new
  door plan (probe). Includes the mandatory ``GET /message/{id}``. Target p99 ≤ 50 ms.
* **planned time → command on the wire**: each of the simulated locks has an unlock planned
  inside the load window (bookings made beforehand, unlock lead 0); lateness = when the LOQED
  simulator received the signed command minus the door action's ``planned_at``. Target p99
  ≤ 250 ms.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from bench.common import PYTHON, BenchResult, ServerProcess, free_port, percentile, scratch
from bench.loadgen import finish_load, start_load
from bench.simworld import InFlight, LockmeWorld
from bench.world import LOCKME_SECRET, bridge_load, offline_lock, write_venue

NAME = "reaction"
COMMIT_P99_TARGET_MS = 50.0
LATENESS_P99_TARGET_MS = 250.0
VENUE_TZ = ZoneInfo("Europe/Warsaw")


async def _db_rows(db_url: str, lock_ids: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """``received_at`` per message id and the unlock ``planned_at`` per lock (Unix times)."""
    from sqlalchemy import select

    from roomkey.service.db.engine import create_engine
    from roomkey.service.db.models import DoorAction, DoorActionKind, LockmeMessage

    def unix(moment: dt.datetime) -> float:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.timestamp()

    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            received = {
                str(mid): unix(at)
                for mid, at in await conn.execute(
                    select(LockmeMessage.message_id, LockmeMessage.received_at)
                )
            }
            planned = {
                str(lock): unix(at)
                for lock, at in await conn.execute(
                    select(DoorAction.lock_id, DoorAction.planned_at).where(
                        DoorAction.lock_id.in_(lock_ids),
                        DoorAction.kind == DoorActionKind.UNLOCK,
                    )
                )
            }
    finally:
        await engine.dispose()
    return received, planned


async def _door_plans_committed(
    url: str, rooms: set[int], *, until: float, since: float
) -> float | None:
    """Seconds from booking until every door room's plan was committed (None: not by
    ``until``, i.e. the door actions were planned late and their lateness includes that)."""
    async with httpx.AsyncClient(timeout=5) as client:
        while time.time() < until:
            commits = (await client.get(f"{url}/_bench/commits")).json()
            done = [c["at"] for c in commits if c["at"] >= since and set(c["rooms"]) & rooms]
            covered = {r for c in commits if c["at"] >= since for r in c["rooms"]} & rooms
            if covered == rooms:
                return float(max(done)) - since
            await asyncio.sleep(0.1)
    return None


async def _scenario(short: bool, *, loaded: bool) -> dict[str, Any]:
    from roomkey.service.demo import LoopbackServer, add_sim_lock
    from roomkey.sim.loqed import LoqedSimulator, SimConfig

    door_locks = 4 if short else 40
    booking_rooms = 4 if short else 40
    duration = 2.0 if short else 10.0
    lead_in = 6.0 if short else 12.0
    booking_every = 0.25
    world = LockmeWorld(door_locks + booking_rooms)
    loqed = LoqedSimulator(world.clock, config=SimConfig(seed=7))
    loqed.socket_mode = True
    loqed_counter = InFlight(loqed.app, prefix="/")
    loqed_server = LoopbackServer(loqed_counter)
    server: ServerProcess | None = None
    try:
        await world.start()
        await loqed_server.start()
        with scratch("roomkey-bench-reaction-") as tmp:
            door_specs = [
                add_sim_lock(
                    loqed,
                    roomkey_id=f"door-{i}",
                    name=f"Door {i}",
                    bridge_id=f"b{i}",
                    loqed_url=loqed_server.url,
                )
                for i in range(door_locks)
            ]
            quiet_locks = [offline_lock(i) for i in range(booking_rooms)]
            noise_locks = [offline_lock(1000 + i) for i in range(8)]
            door_rooms = world.room_ids[:door_locks]
            booking_room_ids = world.room_ids[door_locks:]
            rooms = [
                (rid, f"Door room {i}", [door_specs[i].roomkey_id])
                for i, rid in enumerate(door_rooms)
            ]
            rooms += [
                (rid, f"Booking room {i}", [quiet_locks[i].roomkey_id])
                for i, rid in enumerate(booking_room_ids)
            ]
            rooms += [
                (900_000 + i, f"Noise room {i}", [lock.roomkey_id])
                for i, lock in enumerate(noise_locks)
            ]
            venue = write_venue(
                tmp / "venue",
                locks=[*door_specs, *quiet_locks, *noise_locks],
                rooms=rooms,
                lockme_url=world.url,
                policy={"unlock_lead_minutes": 0},
                loqed={"transport_order": ["bridge"]},
            )
            world.save_token(venue)
            port = free_port()
            server = ServerProcess(
                [
                    PYTHON,
                    "-m",
                    "bench.servers",
                    "roomkey",
                    "--probe",
                    "--port",
                    str(port),
                    "--config",
                    str(venue.config_path),
                ],
                port=port,
                env=venue.env,
                log_path=tmp / "roomkey.log",
                ready_path="/ready",
            )
            await asyncio.to_thread(server.start)
            world.point_webhooks_at(f"{server.url}/hooks/lockme/{LOCKME_SECRET}")
            for spec in door_specs:
                loqed.add_bridge_webhook(
                    spec.bridge_id, f"{server.url}/hooks/loqed/bridge/{spec.roomkey_id}"
                )
            # Let start-up work finish (reconciliation reads Lockme, the executor reads
            # every bridge's status) so it does not count against the first bookings.
            await world.inflight.wait_quiet(1.0)
            await loqed_counter.wait_quiet(1.0)
            await world.inflight.wait_quiet(0.5)

            # Door bookings whose unlocks fall inside the load window (planned before it).
            load_start = time.time() + lead_in
            for i, room in enumerate(door_rooms):
                at = dt.datetime.fromtimestamp(
                    load_start + 1.0 + (duration - 2.0) * i / max(1, door_locks - 1), VENUE_TZ
                ).replace(microsecond=0)
                world.sim.book(
                    room,
                    at.date(),
                    at.strftime("%H:%M:%S"),
                    source="panel",
                    status=1,
                    name="Door guest",
                    duration=60,
                )
            booked_at = time.time()
            plans_ready_after = await _door_plans_committed(
                server.url, set(door_rooms), until=load_start - 0.5, since=booked_at
            )
            await asyncio.sleep(max(0.0, load_start - time.time()))

            # The load, and steady bookings during it.
            timestamp = int(time.time())
            handle = (
                start_load(
                    port,
                    bridge_load(noise_locks, timestamp=timestamp),
                    duration=duration,
                    connections=32,
                )
                if loaded
                else None
            )
            booked: list[int] = []
            first_day = dt.date.today() + dt.timedelta(days=30)
            n = 0
            stop_booking = time.time() + duration - 1.0
            while time.time() < stop_booking:
                room = booking_room_ids[n % booking_rooms]
                day = first_day + dt.timedelta(days=n // booking_rooms)
                booked.append(
                    world.sim.book(room, day, "12:00:00", source="panel", status=1, name="Guest")
                )
                n += 1
                await asyncio.sleep(booking_every)
            load = (
                await asyncio.to_thread(finish_load, handle, duration=duration)
                if handle is not None
                else None
            )
            await asyncio.sleep(1.0 if short else 3.0)  # the last messages and commands

            async with httpx.AsyncClient(timeout=10) as client:
                commits = (await client.get(f"{server.url}/_bench/commits")).json()
            await asyncio.to_thread(server.stop)
            server = None
            received, planned = await _db_rows(
                venue.db_url, [spec.roomkey_id for spec in door_specs]
            )
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
        await loqed_server.stop()
        await loqed.aclose()
        await world.aclose()

    # webhook received → plan committed
    booked_set = set(booked)
    messages = [m for m in world.sim.messages() if m.reservationid in booked_set]
    commit_ms: list[float] = []
    missing = 0
    for message in messages:
        got = received.get(str(message.id))
        after = [
            c["at"]
            for c in commits
            if message.roomid in c["rooms"] and got is not None and c["at"] >= got
        ]
        if got is None or not after:
            missing += 1
            continue
        commit_ms.append((min(after) - got) * 1000)
    # planned → on the wire
    by_loqed = {spec.loqed_id: spec.roomkey_id for spec in door_specs}
    first_seen: dict[str, float] = {}
    for command in loqed.received():
        lock = by_loqed.get(command.lock_id)
        if lock is not None and lock not in first_seen:
            first_seen[lock] = command.at
    lateness_ms = [
        (first_seen[lock] - planned[lock]) * 1000 for lock in planned if lock in first_seen
    ]
    not_sent = len(planned) - len(lateness_ms)

    return {
        "loaded": loaded,
        "duration_s": duration,
        "load": load.as_dict() if load is not None else None,
        "bookings": len(messages),
        "bookings_unmatched": missing,
        "commit_ms": sorted(round(v, 2) for v in commit_ms),
        "door_actions": len(planned),
        "door_plans_committed_after_s": plans_ready_after,
        "door_actions_not_sent": not_sent,
        "lateness_ms": sorted(round(v, 2) for v in lateness_ms),
    }


async def _run(short: bool) -> BenchResult:
    result = BenchResult(NAME)
    loaded = await _scenario(short, loaded=True)
    scenarios = [("under load", loaded)]
    if not short:  # the smoke run skips the idle baseline
        scenarios.insert(0, ("idle", await _scenario(short, loaded=False)))
    result.details = {label.replace(" ", "_"): data for label, data in scenarios}
    for label, data in scenarios:
        commit, late = data["commit_ms"], data["lateness_ms"]
        targets = label == "under load"
        p50, p99 = percentile(commit, 50), percentile(commit, 99)
        result.add(
            f"webhook → plan committed p50, {label}",
            p50,
            "ms",
            note=f"{len(commit)} bookings",
        )
        unmatched = data["bookings_unmatched"]
        too_many_missing = unmatched > 0.01 * max(1, data["bookings"])
        result.add(
            f"webhook → plan committed p99, {label}",
            None if too_many_missing else p99,
            "ms",
            target=f"≤ {COMMIT_P99_TARGET_MS:g}" if targets else None,
            met=None
            if not targets
            else (p99 is not None and not too_many_missing and p99 <= COMMIT_P99_TARGET_MS),
            note=f"{unmatched} of {data['bookings']} bookings not committed by the end of "
            "the run (p99 is beyond it)"
            if unmatched
            else "",
        )
        l50, l99 = percentile(late, 50), percentile(late, 99)
        not_sent = data["door_actions_not_sent"]
        ready = data["door_plans_committed_after_s"]
        result.add(
            f"planned → LOQED command on the wire p50, {label}",
            l50,
            "ms",
            note=f"{len(late)} door actions",
        )
        result.add(
            f"planned → LOQED command on the wire p99, {label}",
            l99,
            "ms",
            target=f"≤ {LATENESS_P99_TARGET_MS:g}" if targets else None,
            met=None
            if l99 is None or not targets
            else (l99 <= LATENESS_P99_TARGET_MS and not not_sent),
            note=(f"{not_sent} never sent; " if not_sent else "")
            + (
                "door plans were NOT committed before the window"
                if ready is None
                else f"door plans committed {ready:.1f} s after booking"
            ),
        )
    load = loaded["load"]
    if load is not None:
        result.add(
            "intake load during the run",
            load["rps"],
            "req/s",
            note=f"LOQED bridge receiver c32, p99 {load['p99_ms']} ms",
        )
    return result


def run(*, short: bool) -> BenchResult:
    return asyncio.run(_run(short))
