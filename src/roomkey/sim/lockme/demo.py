"""Demo data: one account, an OAuth client, a department with three rooms, pricers, bookings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from roomkey.sim.lockme import calendar

if TYPE_CHECKING:
    from roomkey.sim.lockme.simulator import LockmeSimulator

__all__ = ["DEMO_CLIENT", "DEMO_HOURS", "seed_demo"]

DEMO_CLIENT = {"client_id": "roomkey", "client_secret": "roomkey-demo-secret",
               "redirect_uri": "http://127.0.0.1:8080/callback"}
DEMO_HOURS = ("10:00:00", "11:30:00", "13:00:00", "14:30:00", "16:00:00", "17:30:00",
              "19:00:00", "20:30:00")


def seed_demo(
    sim: LockmeSimulator,
    *,
    webhook_url: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    redirect_uri: str | None = None,
) -> dict[str, Any]:
    """Fill ``sim`` with a small venue; returns what was created (ids, never secrets)."""
    client = sim.add_oauth_client(client_id or DEMO_CLIENT["client_id"],
                                  client_secret or DEMO_CLIENT["client_secret"],
                                  redirect_uri or DEMO_CLIENT["redirect_uri"], name="roomkey")
    dept = sim.add_department("Escape Warsaw", webhook_url)
    rooms = []
    for name in ("The Vault", "Pharaoh's Tomb", "Space Station"):
        room = sim.add_room(dept.id, name, calendar_margin=15)
        small = sim.add_pricer(room.id, "2-3 people", 149.0)
        large = sim.add_pricer(room.id, "4-6 people", 199.0)
        slots = [{"hour": h, "pricers": [small.id, large.id]} for h in DEMO_HOURS]
        for day in range(7):
            sim.set_day_settings(room.id, day, slots)
        rooms.append(room)
    tomorrow = calendar.add_days(calendar.local_now(sim.clock.time()).date().isoformat(), 1)
    booked = [
        sim.book(rooms[0].id, tomorrow, "16:00:00", source="web", status=1, name="Anna",
                 surname="Nowak", email="anna@example.com", people=4, price=199.0,
                 pricer="4-6 people"),
        sim.book(rooms[1].id, tomorrow, "19:00:00", source="panel", status=1, name="Piotr",
                 surname="Kowalski", people=3, price=149.0, pricer="2-3 people"),
    ]
    return {"client_id": client.client_id, "redirect_uri": client.redirect_uri,
            "department_id": dept.id, "room_ids": [r.id for r in rooms],
            "reservation_ids": booked}
