"""Booking traffic as customers and staff make it on lock.me, placed so an oracle can judge it.

Two kinds of bookings:

* **near** bookings start a few seconds to a minute ahead (one-minute slots): their door
  actions really run during the suite, so the locks' logs can be compared with the plan.
  They are created and then left alone (a change that races its own door action has no
  single right answer to check against).
* **far** bookings start one to three hours ahead: they take every kind of change (edits,
  moves between rooms and times, cancellations, web carts that lapse or get paid), which
  produces most of the messages; their plan is checked in roomkey's database.

A change to a booking is only made while the booking starts more than ``margin`` seconds
later (default 150 s: longer than roomkey's 120-s message claim, so a message held by a
killed process is retried before the booking's door moves).
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from dataclasses import dataclass, field

from harness.world import World

SEPARATION = 100.0
"""Seconds between two slot starts in one room (60-s slot + 40 s, longer than a command's
30-s deadline), so every booking has its own unlock and lock."""


@dataclass
class Traffic:
    world: World
    rng: random.Random
    margin: float = 150.0
    ops: Counter[str] = field(default_factory=Counter)
    near_actions: list[float] = field(default_factory=list)
    """Planned times of the near bookings' door actions (for kills aimed at busy moments)."""
    errors: Counter[str] = field(default_factory=Counter)

    # -- placing -------------------------------------------------------------------------
    def _starts(self, room_id: int) -> list[float]:
        sim = self.world.lockme
        out = []
        for res in sim.reservations.values():
            if res.roomid == room_id:
                local = dt.datetime.fromisoformat(f"{res.date}T{res.hour}").replace(
                    tzinfo=self.world.local(0).tzinfo
                )
                out.append(local.timestamp())
        return out

    def _free(self, room_id: int, start: float) -> bool:
        return all(abs(start - other) >= SEPARATION for other in self._starts(room_id))

    def _where(self, start: float) -> tuple[str, str]:
        local = self.world.local(start)
        return local.strftime("%Y-%m-%d"), local.strftime("%H:%M:%S")

    def _pick(self, earliest: float, latest: float, *, whole_hour: bool = False,
              room_id: int | None = None) -> tuple[int, float] | None:
        for _ in range(30):
            room = room_id or self.rng.choice(self.world.rooms).room_id
            start = float(int(self.rng.uniform(earliest, latest)))
            if whole_hour:
                start = start - start % 3600 + 3600
            if self._free(room, start):
                return room, start
        return None

    # -- operations ----------------------------------------------------------------------
    def book_near(self, earliest: float, latest: float) -> int | None:
        now = self.world.now()
        found = self._pick(now + earliest, now + latest)
        if found is None:
            return None
        room, start = found
        date, hour = self._where(start)
        rid = self.world.lockme.book(room, date, hour, source="panel", status=1, duration=1)
        self.ops["book_near"] += 1
        self.near_actions += [start, start + 60.0]
        return rid

    def step(self) -> str:
        """One random change on lock.me (far bookings only)."""
        now = self.world.now()
        sim = self.world.lockme
        roll = self.rng.random()
        mutable = [
            r for r in sim.reservations.values()
            if self._start_of(r) > now + self.margin
        ]
        try:
            if roll < 0.40 or not mutable:
                found = self._pick(now + 3600, now + 3 * 3600)
                if found is None:
                    return "none"
                room, start = found
                date, hour = self._where(start)
                sim.book(room, date, hour, source="panel", status=self.rng.choice([1, 1, 1, 0]),
                         duration=self.rng.choice([1, 30, 60]), people=self.rng.randint(1, 6))
                kind = "book"
            elif roll < 0.52:
                found = self._pick(now + 3600, now + 3 * 3600, whole_hour=True)
                if found is None:
                    return "none"
                room, start = found
                date, hour = self._where(start)
                sim.book(room, date, hour, source="web", status=0, duration=60)
                kind = "cart"
            elif roll < 0.64:
                res = self.rng.choice(mutable)
                sim.edit(res.id, {"people": self.rng.randint(1, 8),
                                  "comment": f"edit {self.rng.randint(0, 10**6)}"})
                kind = "edit"
            elif roll < 0.78:
                res = self.rng.choice(mutable)
                found = self._pick(now + 3600, now + 3 * 3600)
                if found is None:
                    return "none"
                room, start = found
                date, hour = self._where(start)
                sim.move(res.id, roomid=room, date=date, hour=hour)
                kind = "move"
            elif roll < 0.88:
                carts = [r for r in mutable if r.status == 0 and r.source == "web"]
                if not carts:
                    return "none"
                sim.pay(self.rng.choice(carts).id)
                kind = "pay"
            else:
                res = self.rng.choice(mutable)
                sim.cancel(res.id)
                kind = "cancel"
        except Exception as exc:  # a slot race in the simulator is not roomkey's business
            self.errors[type(exc).__name__] += 1
            return "none"
        self.ops[kind] += 1
        return kind

    def _start_of(self, res: object) -> float:
        date = getattr(res, "date")  # noqa: B009
        hour = getattr(res, "hour")  # noqa: B009
        local = dt.datetime.fromisoformat(f"{date}T{hour}").replace(
            tzinfo=self.world.local(0).tzinfo
        )
        return local.timestamp()
