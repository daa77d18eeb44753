"""The simulator's state objects: accounts, OAuth clients, departments, rooms, bookings, messages.

Plain dataclasses; secrets are kept out of ``repr``. Wire shapes (the JSON the real Lockme
server answers with) are produced by the ``to_wire`` methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ACTIONS",
    "SOURCES",
    "Action",
    "DeliveryAttempt",
    "Department",
    "Message",
    "OAuthClient",
    "Pricer",
    "Reservation",
    "Room",
    "Slot",
    "Source",
    "User",
]

Source = Literal["web", "widget", "panel", "api"]
SOURCES: tuple[Source, ...] = ("web", "widget", "panel", "api")
Action = Literal["add", "edit", "delete", "test"]
ACTIONS: tuple[Action, ...] = ("add", "edit", "delete", "test")

Slot = dict[str, Any]
"""One bookable start time: ``{"hour": "HH:MM:SS", "pricers": [pricer_id, ...]}``."""


@dataclass
class User:
    """A Lockme partner account (what ``/me`` describes); owns departments."""

    userid: int
    nick: str

    def to_wire(self) -> dict[str, Any]:
        return {"userid": self.userid, "nick": self.nick}


@dataclass
class OAuthClient:
    """An app registered in the Lockme Cockpit."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    name: str = "app"


@dataclass
class Department:
    """A venue with one webhook integration."""

    id: int
    name: str
    owner: int
    webhook_url: str | None = field(default=None, repr=False)
    webhook_method: str = "POST"
    webhook_active: bool = True
    api_version: str = "v2.4"
    notify_api_changes: bool = True

    def to_control(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "webhook_configured": self.webhook_url is not None,
            "webhook_method": self.webhook_method,
            "webhook_active": self.webhook_active,
            "api_version": self.api_version,
            "notify_api_changes": self.notify_api_changes,
        }


@dataclass
class Pricer:
    """A pricing option of a room (which slots reference by id)."""

    id: int
    room_id: int
    name: str
    price: float

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "roomid": self.room_id, "name": self.name, "price": self.price}


@dataclass
class Room:
    """A bookable room with weekly settings (day 0 = Monday) and per-date exceptions."""

    id: int
    department_id: int
    name: str
    calendar_margin: int = 0
    weekly: dict[int, list[Slot]] = field(default_factory=dict)
    exceptions: dict[str, list[Slot]] = field(default_factory=dict)


@dataclass
class Reservation:
    """A booking; ``to_wire`` gives the JSON object the API and messages carry."""

    id: int
    roomid: int
    date: str
    hour: str
    source: Source
    status: int
    created: str
    name: str = ""
    surname: str = ""
    email: str = ""
    phone: str = ""
    people: int = 0
    price: float | str | None = None
    pricer: int | str | None = None
    comment: str = ""
    language: str = "pl"
    extid: str | None = None
    invoice: str | None = None
    duration: int = 60

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "roomid": self.roomid,
            "date": self.date,
            "hour": self.hour,
            "name": self.name,
            "surname": self.surname,
            "email": self.email,
            "phone": self.phone,
            "people": self.people,
            "price": self.price,
            "pricer": self.pricer,
            "comment": self.comment,
            "language": self.language,
            "status": self.status,
            "source": self.source,
            "extid": self.extid,
            "invoice": self.invoice,
            "duration": self.duration,
            "time": self.created,
            "from_date": None,
            "from_hour": None,
        }


@dataclass
class DeliveryAttempt:
    """One webhook delivery attempt (``outcome`` is ``delivered``, ``failed`` or ``dropped``)."""

    at: float
    outcome: Literal["delivered", "failed", "dropped"]
    status_code: int | None = None
    error: str | None = None

    def to_control(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "outcome": self.outcome,
            "status_code": self.status_code,
            "error": self.error,
        }


@dataclass
class Message:
    """A webhook message; the receiver fetches it by id and marks it read."""

    id: int
    department_id: int
    action: Action
    roomid: int
    reservationid: int | None
    data: dict[str, Any]
    created: float
    read: bool = False
    read_at: float | None = None
    attempts: list[DeliveryAttempt] = field(default_factory=list)
    schedule: list[float] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "roomid": self.roomid,
            "reservationid": self.reservationid,
            "data": self.data,
        }

    def to_control(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "department_id": self.department_id,
            **self.to_wire(),
            "created": self.created,
            "read": self.read,
            "read_at": self.read_at,
            "schedule": list(self.schedule),
            "attempts": [a.to_control() for a in self.attempts],
        }
