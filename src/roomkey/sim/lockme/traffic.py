"""A booking traffic generator: seeded, rate-controlled, bounded activity on the simulator.

Events arrive as a Poisson process on the simulator clock (``rate`` events per simulated
hour). Each event is one of: a customer's web booking (an unpaid cart that is paid a few
minutes later with probability ``pay_probability`` or lapses after 20 minutes), a widget
booking, a staff booking in the panel, an edit (people or comment), a move to another room
and/or date, or a cancellation. Bookings go to free offered slots 1..``horizon_days`` ahead.
The same seed on the same starting state gives the same events.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from roomkey.sim.clock import Timer
from roomkey.sim.lockme import calendar
from roomkey.sim.lockme.errors import SimError
from roomkey.sim.lockme.models import Reservation, Source

if TYPE_CHECKING:
    from roomkey.sim.lockme.simulator import LockmeSimulator

__all__ = ["DEFAULT_WEIGHTS", "TrafficEvent", "TrafficGenerator"]

DEFAULT_WEIGHTS: Mapping[str, float] = {
    "web": 0.35, "widget": 0.15, "panel": 0.15, "edit": 0.15, "move": 0.08, "cancel": 0.12,
}
_FIRST = ("Anna", "Piotr", "Kasia", "Tomasz", "Ola", "Marek", "Zofia", "Jan", "Ewa", "Adam")
_LAST = ("Nowak", "Kowalski", "Wiśniewska", "Wójcik", "Kamińska", "Lewandowski", "Zielińska")
_COMMENTS = ("Birthday party", "First time here", "Please prepare English version",
             "Team building", "We may be 5 minutes late", "")


@dataclass(frozen=True)
class TrafficEvent:
    """What the generator did (``kind``; ``skipped`` when nothing fitted) and when."""

    at: float
    kind: str
    reservation_id: int | None = None
    detail: str = ""

    def to_control(self) -> dict[str, Any]:
        return asdict(self)


class TrafficGenerator:
    """Drives realistic booking activity through the simulator's customer/staff operations."""

    def __init__(
        self,
        sim: LockmeSimulator,
        *,
        seed: int = 0,
        rate: float = 30.0,
        max_events: int | None = None,
        until: float | None = None,
        horizon_days: int = 14,
        pay_probability: float = 0.7,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive (events per simulated hour)")
        if horizon_days < 1:
            raise ValueError("horizon_days must be at least 1")
        self.sim = sim
        self.seed = seed
        self.rate = rate
        self.max_events = max_events
        self.until = until
        self.horizon_days = horizon_days
        self.pay_probability = pay_probability
        self.weights = dict(weights or DEFAULT_WEIGHTS)
        unknown = set(self.weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown traffic kinds: {sorted(unknown)}")
        self._rng = random.Random(seed)  # noqa: S311 - reproducible traffic, not crypto
        self._timer: Timer | None = None
        self.events: list[TrafficEvent] = []
        self.primary = 0

    # -- control -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._timer is not None and not self._timer.cancelled

    def start(self) -> None:
        """Schedule the first event (idempotent)."""
        if not self.running:
            self._schedule_next()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def set_rate(self, rate: float) -> None:
        """Change the rate; takes effect from the next scheduled event."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for event in self.events:
            counts[event.kind] = counts.get(event.kind, 0) + 1
        return {"running": self.running, "seed": self.seed, "rate": self.rate,
                "events": self.primary, "max_events": self.max_events, "until": self.until,
                "by_kind": counts, "recent": [e.to_control() for e in self.events[-20:]]}

    def _schedule_next(self) -> None:
        self._timer = None
        if self.max_events is not None and self.primary >= self.max_events:
            return
        when = self.sim.clock.time() + self._rng.expovariate(self.rate / 3600.0)
        if self.until is not None and when > self.until:
            return
        self._timer = self.sim.clock.call_at(when, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.primary += 1
        kinds = sorted(self.weights)
        kind = self._rng.choices(kinds, weights=[self.weights[k] for k in kinds])[0]
        try:
            event = self._do(kind)
        except SimError as exc:
            event = TrafficEvent(self.sim.clock.time(), "skipped", None, f"{kind}: {exc.message}")
        self.events.append(event)
        self._schedule_next()

    # -- events --------------------------------------------------------------------------
    def _now(self) -> float:
        return self.sim.clock.time()

    def _today(self) -> str:
        return calendar.local_now(self._now()).date().isoformat()

    def _room_ids(self) -> list[int]:
        return sorted(self.sim.rooms)

    def _free_slot(self, room_id: int | None = None) -> tuple[int, str, str] | None:
        rooms = self._room_ids()
        if not rooms:
            return None
        for _ in range(4):
            rid = room_id if room_id is not None else self._rng.choice(rooms)
            day = calendar.add_days(self._today(), self._rng.randint(1, self.horizon_days))
            free = self.sim.free_slots(rid, day)
            if free:
                return rid, day, self._rng.choice(free)
        return None

    def _customer(self) -> dict[str, Any]:
        first, last = self._rng.choice(_FIRST), self._rng.choice(_LAST)
        return {
            "name": first, "surname": last,
            "email": f"{first.lower()}.{self._rng.randint(1, 999)}@example.com",
            "phone": f"+48 5{self._rng.randint(10, 99)} {self._rng.randint(100, 999)} "
                     f"{self._rng.randint(100, 999)}",
            "people": self._rng.randint(2, 6),
            "language": self._rng.choice(("pl", "pl", "en")),
            "comment": self._rng.choice(_COMMENTS),
        }

    def _existing(self, *, carts: bool) -> Reservation | None:
        today = self._today()
        candidates = [r for r in sorted(self.sim.reservations.values(), key=lambda r: r.id)
                      if r.date >= today and (carts or not (r.source == "web" and r.status == 0))]
        return self._rng.choice(candidates) if candidates else None

    def _book(self, source: Source) -> TrafficEvent:
        slot = self._free_slot()
        if slot is None:
            return TrafficEvent(self._now(), "skipped", None, f"{source}: no free slot")
        room_id, day, hour = slot
        fields = self._customer()
        room_pricers = [p for p in self.sim.pricers.values() if p.room_id == room_id]
        if room_pricers:
            pricer = self._rng.choice(room_pricers)
            fields.update(pricer=pricer.name, price=pricer.price)
        status = 0 if source == "web" else 1
        rid = self.sim.book(room_id, day, hour, source=source, status=status, **fields)
        if source == "web":
            if self._rng.random() < self.pay_probability:
                delay = self._rng.uniform(60, min(15 * 60, self.sim.cart_hold_seconds * 0.9))
                self.sim.clock.call_later(delay, lambda: self._pay(rid))
                return TrafficEvent(self._now(), "web_cart", rid, "will pay")
            return TrafficEvent(self._now(), "web_cart", rid, "will lapse")
        return TrafficEvent(self._now(), source, rid, f"{day} {hour}")

    def _pay(self, reservation_id: int) -> None:
        res = self.sim.reservations.get(reservation_id)
        if res is not None and res.status == 0:
            self.sim.pay(reservation_id)
            self.events.append(TrafficEvent(self._now(), "pay", reservation_id))

    def _do(self, kind: str) -> TrafficEvent:
        if kind in ("web", "widget", "panel"):
            source: Source = "web" if kind == "web" else "widget" if kind == "widget" else "panel"
            return self._book(source)
        res = self._existing(carts=False)
        if res is None:
            return TrafficEvent(self._now(), "skipped", None, f"{kind}: no reservation")
        if kind == "edit":
            if self._rng.random() < 0.5:
                change: dict[str, Any] = {"people": self._rng.randint(2, 6)}
            else:
                change = {"comment": self._rng.choice(_COMMENTS)}
            self.sim.edit(res.id, change)
            return TrafficEvent(self._now(), "edit", res.id, ",".join(change))
        if kind == "move":
            same_dept = [r for r in self._room_ids() if self.sim.rooms[r].department_id
                         == self.sim.rooms[res.roomid].department_id]
            slot = self._free_slot(self._rng.choice(same_dept))
            if slot is None:
                return TrafficEvent(self._now(), "skipped", res.id, "move: no free slot")
            room_id, day, hour = slot
            self.sim.move(res.id, roomid=room_id, date=day, hour=hour)
            return TrafficEvent(self._now(), "move", res.id, f"{room_id} {day} {hour}")
        self.sim.cancel(res.id)
        return TrafficEvent(self._now(), "cancel", res.id)
