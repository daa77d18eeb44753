"""The Lockme simulator: state, booking rules and the operations customers, staff and the API use.

Choices where the real server's behaviour is unknown (all documented in
docs/simulators-lockme.md):

* Changes made through the API emit webhook messages too (``Department.notify_api_changes``,
  default on); the WordPress plugin guards against such echoes, so the real server likely does.
* A reservation paid through Lockme (``source == "web"`` and ``status == 1``) cannot be deleted
  through the API: 409 ``{"message": ...}``. Slot conflicts and duplicate extids are 409 too.
* Customers (``web``/``widget``) can only book offered slots; staff (``panel``) and the API may
  book any time unless ``require_open_slot`` is set. Two bookings of one room conflict when
  their ``[hour, hour + duration)`` intervals overlap.
* An unpaid web cart (``web``, status 0) holds its slot for ``cart_hold_seconds`` (20 min) and
  then disappears with a ``delete`` message. It is announced with ``add`` and, when paid, ``edit``.
* Every ``edit`` message carries ``from_date``/``from_hour`` (the date and hour before that
  change; they differ from ``date``/``hour`` after a move).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import httpx
from starlette.types import ASGIApp

from roomkey.sim.clock import SimClock, Timer
from roomkey.sim.lockme import calendar
from roomkey.sim.lockme.errors import BadRequest, Conflict, NotFound, Refused
from roomkey.sim.lockme.faults import Faults, Sleeper
from roomkey.sim.lockme.models import (
    SOURCES,
    Action,
    Department,
    Message,
    OAuthClient,
    Pricer,
    Reservation,
    Room,
    Slot,
    Source,
    User,
)
from roomkey.sim.lockme.oauth import OAuthServer, OAuthSettings
from roomkey.sim.lockme.webhooks import DEFAULT_SCHEDULE, WebhookDispatcher

__all__ = ["CART_HOLD_SECONDS", "LockmeSimulator", "Origin"]

CART_HOLD_SECONDS = 20 * 60.0
Origin = Literal["site", "api"]
"""Who made a change: ``site`` = a customer or staff on lock.me, ``api`` = a partner app."""

_TEXT_FIELDS = ("name", "surname", "email", "phone", "comment", "language")
_EDITABLE = (*_TEXT_FIELDS, "people", "price", "pricer", "status", "extid", "invoice",
             "duration", "date", "hour")


def _as_int(value: object, name: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool):
        return int(value)
    try:
        number = int(str(value).strip()) if isinstance(value, str) else int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise BadRequest(f"Field {name} must be an integer") from None
    if isinstance(value, float) and not value.is_integer():
        raise BadRequest(f"Field {name} must be an integer")
    if number < minimum:
        raise BadRequest(f"Field {name} must be at least {minimum}")
    return number


def _as_status(value: object) -> int:
    if value in (True, 1, "1", "true"):
        return 1
    if value in (False, 0, "0", "false", None, ""):
        return 0
    raise BadRequest("Field status must be 0 or 1")


def _as_price(value: object) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BadRequest("Field price must be a number")
    try:
        price = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadRequest("Field price must be a number") from None
    if not math.isfinite(price) or price < 0:
        raise BadRequest("Field price must be a non-negative number")
    return round(price, 2)


def _as_text(value: object, name: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadRequest(f"Field {name} must be a string")
    return str(value)


def _as_extid(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRequest("Field extid must be a string or an integer")
    return str(value)


def _day(value: str | dt.date) -> str:
    return value.isoformat() if isinstance(value, dt.date) else value


def _hour(value: str | dt.time) -> str:
    return value.strftime("%H:%M:%S") if isinstance(value, dt.time) else value


def _slot_list(slots: Sequence[Mapping[str, Any] | str]) -> list[Any]:
    """Slots given as ``{"hour", "pricers"}`` objects or as bare ``"HH:MM:SS"`` strings."""
    return [{"hour": s, "pricers": []} if isinstance(s, str) else dict(s) for s in slots]


class LockmeSimulator:
    """A faithful, offline Lockme: OAuth2 server, REST API v2.0–v2.4, webhooks, faults."""

    def __init__(
        self,
        clock: SimClock | None = None,
        *,
        delivery_client: httpx.AsyncClient | None = None,
        oauth_settings: OAuthSettings | None = None,
        redelivery_schedule: Sequence[float] = DEFAULT_SCHEDULE,
        delivery_timeout: float = 10.0,
        cart_hold_seconds: float = CART_HOLD_SECONDS,
        require_open_slot: bool = False,
        seed: int = 0,
        sleep: Sleeper | None = None,
        max_hang: float = 60.0,
    ) -> None:
        self.clock = clock or SimClock()
        self.oauth = OAuthServer(self.clock.time, oauth_settings)
        self.faults = Faults(self.clock.time, seed=seed, sleep=sleep, max_hang=max_hang)
        self.webhooks = WebhookDispatcher(
            self.clock, self.faults, self.departments_get, client=delivery_client,
            schedule=redelivery_schedule, timeout=delivery_timeout,
        )
        self.cart_hold_seconds = cart_hold_seconds
        self.require_open_slot = require_open_slot
        self.users: dict[int, User] = {}
        self.departments: dict[int, Department] = {}
        self.rooms: dict[int, Room] = {}
        self.pricers: dict[int, Pricer] = {}
        self.reservations: dict[int, Reservation] = {}
        self._messages: dict[int, Message] = {}
        self._carts: dict[int, Timer] = {}
        self._by_day: dict[tuple[int, str], set[int]] = {}
        self._ids = {"user": 1, "department": 11, "room": 101, "pricer": 501,
                     "reservation": 10001, "message": 70001}
        self.default_user = self.add_user("demo")
        self.authorize_user_id = self.default_user.userid
        self.traffic: Any = None  # a TrafficGenerator when one is attached
        from roomkey.sim.lockme.app import build_app

        self.app: ASGIApp = build_app(self)

    def _next(self, kind: str) -> int:
        value = self._ids[kind]
        self._ids[kind] = value + 1
        return value

    # -- accounts and OAuth -----------------------------------------------------------------
    def add_user(self, nick: str) -> User:
        user = User(self._next("user"), nick)
        self.users[user.userid] = user
        return user

    def add_oauth_client(self, client_id: str, client_secret: str, redirect_uri: str, *,
                         name: str = "app") -> OAuthClient:
        """Register an app (as the Lockme Cockpit would)."""
        if not client_id or not client_secret or not redirect_uri:
            raise BadRequest("client_id, client_secret and redirect_uri are required")
        return self.oauth.add_client(OAuthClient(client_id, client_secret, redirect_uri, name))

    def issue_token(self, client_id: str, *, user_id: int | None = None,
                    scopes: Iterable[str] | None = None) -> dict[str, Any]:
        """Mint a token directly (bypassing ``/authorize``).

        Returns the token endpoint's JSON plus ``expires`` (absolute Unix time), i.e. what
        the SDKs persist.
        """
        if client_id not in self.oauth.clients:
            raise NotFound(f"Unknown OAuth client {client_id}")
        uid = self.default_user.userid if user_id is None else user_id
        if uid not in self.users:
            raise NotFound(f"Unknown user {uid}")
        token = self.oauth.issue_token(client_id, uid, scopes)
        token["expires"] = int(self.clock.time() + token["expires_in"])
        return token

    def expire_tokens(self, *, refresh: bool = False) -> int:
        """Fault: every access token (and optionally refresh token) expires right now."""
        return self.oauth.expire_all(refresh=refresh)

    # -- departments, rooms, pricers, calendar --------------------------------------------
    def departments_get(self, department_id: int) -> Department | None:
        return self.departments.get(department_id)

    def add_department(
        self,
        name: str,
        webhook_url: str | None = None,
        *,
        owner: int | None = None,
        webhook_method: str = "POST",
        webhook_active: bool = True,
        api_version: str = "v2.4",
        notify_api_changes: bool = True,
    ) -> Department:
        uid = self.default_user.userid if owner is None else owner
        if uid not in self.users:
            raise NotFound(f"Unknown user {uid}")
        dept = Department(self._next("department"), name, uid, webhook_url,
                          webhook_method.upper(), webhook_active, api_version,
                          notify_api_changes)
        self.departments[dept.id] = dept
        return dept

    def configure_department(self, department_id: int, **changes: Any) -> Department:
        """Change webhook settings (``webhook_url``, ``webhook_method``, ``webhook_active``,
        ``api_version``, ``notify_api_changes``, ``name``)."""
        dept = self.department(department_id)
        allowed = {"name", "webhook_url", "webhook_method", "webhook_active", "api_version",
                   "notify_api_changes"}
        for key, value in changes.items():
            if key not in allowed:
                raise BadRequest(f"Unknown department setting {key}")
            if key == "webhook_method":
                value = str(value).upper()
            setattr(dept, key, value)
        return dept

    def department(self, department_id: int) -> Department:
        dept = self.departments.get(department_id)
        if dept is None:
            raise NotFound("Department not found")
        return dept

    def add_room(
        self,
        department_id: int,
        name: str,
        slots: Sequence[Mapping[str, Any] | str] | None = None,
        *,
        weekly: Mapping[int, Sequence[Mapping[str, Any] | str]] | None = None,
        calendar_margin: int = 0,
    ) -> Room:
        """Add a room; ``slots`` become the weekly settings of every day (``weekly`` per day)."""
        self.department(department_id)
        room = Room(self._next("room"), department_id, name, calendar_margin)
        self.rooms[room.id] = room
        if slots is not None:
            parsed = calendar.validate_slots(_slot_list(slots))
            room.weekly = {day: [dict(s) for s in parsed] for day in range(7)}
        for day, day_slots in (weekly or {}).items():
            room.weekly[calendar.parse_day(day)] = calendar.validate_slots(_slot_list(day_slots))
        return room

    def room(self, room_id: int, *, user_id: int | None = None) -> Room:
        """Look a room up; with ``user_id`` only rooms of that account are visible."""
        room = self.rooms.get(room_id)
        if room is None or (user_id is not None
                            and self.departments[room.department_id].owner != user_id):
            raise NotFound("Room not found")
        return room

    def rooms_of(self, user_id: int) -> list[Room]:
        return [r for r in self.rooms.values()
                if self.departments[r.department_id].owner == user_id]

    def room_wire(self, room: Room, *, details: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {"roomid": room.id, "room": room.name,
                                "department": self.departments[room.department_id].name}
        if details:
            data["calendarMargin"] = room.calendar_margin
        return data

    def edit_room(self, room: Room, body: object) -> Room:
        if not isinstance(body, dict):
            raise BadRequest("Body must be a JSON object")
        for key, value in body.items():
            if key != "calendarMargin":
                raise BadRequest(f"Field {key} cannot be edited")
            room.calendar_margin = _as_int(value, "calendarMargin")
        return room

    def add_pricer(self, room_id: int, name: str, price: float) -> Pricer:
        self.room(room_id)
        pricer = Pricer(self._next("pricer"), room_id, name, float(price))
        self.pricers[pricer.id] = pricer
        return pricer

    def _room_pricers(self, room: Room) -> set[int]:
        return {p.id for p in self.pricers.values() if p.room_id == room.id}

    def set_day_settings(self, room_id: int, day: int | str, slots: object) -> list[Slot]:
        room = self.room(room_id)
        parsed = calendar.validate_slots(slots, self._room_pricers(room))
        room.weekly[calendar.parse_day(day)] = parsed
        return parsed

    def day_settings(self, room_id: int, day: int | str) -> list[Slot]:
        return list(self.room(room_id).weekly.get(calendar.parse_day(day), []))

    def set_date_settings(self, room_id: int, day: str, slots: object) -> list[Slot]:
        room = self.room(room_id)
        parsed = calendar.validate_slots(slots, self._room_pricers(room))
        room.exceptions[calendar.parse_date(day)] = parsed
        return parsed

    def remove_date_settings(self, room_id: int, day: str) -> list[Slot]:
        """Drop a date exception; returns the (weekly) settings now in force for that date."""
        room = self.room(room_id)
        room.exceptions.pop(calendar.parse_date(day), None)
        return self.effective_slots(room_id, day)

    def effective_slots(self, room_id: int, day: str) -> list[Slot]:
        """The exception for ``day`` if there is one, else the weekly settings of its weekday."""
        room = self.room(room_id)
        calendar.parse_date(day)
        if day in room.exceptions:
            return list(room.exceptions[day])
        return list(room.weekly.get(calendar.weekday(day), []))

    def free_slots(self, room_id: int, day: str) -> list[str]:
        """Offered start hours on ``day`` that no booking occupies."""
        return [str(s["hour"]) for s in self.effective_slots(room_id, day)
                if not self._conflicts(room_id, day, str(s["hour"]), 60, None)]

    # -- reservations -------------------------------------------------------------------
    def reservation(self, reservation_id: int | str, *, room_id: int | None = None) -> Reservation:
        """Find a booking by Lockme id or ``ext/{extid}`` (scoped to ``room_id`` if given)."""
        found: Reservation | None = None
        key = str(reservation_id)
        if key.startswith("ext/"):
            extid = key[4:]
            found = next((r for r in self.reservations.values()
                          if r.extid == extid and (room_id is None or r.roomid == room_id)), None)
        elif key.isdigit():
            found = self.reservations.get(int(key))
        if found is None or (room_id is not None and found.roomid != room_id):
            raise NotFound("Reservation not found")
        return found

    def reservations_on(self, room_id: int, day: str) -> list[Reservation]:
        calendar.parse_date(day)
        return sorted((r for r in self.reservations.values()
                       if r.roomid == room_id and r.date == day), key=lambda r: r.hour)

    def _conflicts(self, room_id: int, day: str, hour: str, duration: int,
                   ignore: int | None) -> Reservation | None:
        start = calendar.slot_timestamp(day, hour)
        end = start + duration * 60
        reach = max(1, (duration + 1439) // 1440)  # bookings longer than a day reach further
        for offset in range(-reach, reach + 1):
            for other_id in self._by_day.get((room_id, calendar.add_days(day, offset)), ()):
                other = self.reservations[other_id]
                if other.id == ignore:
                    continue
                o_start = calendar.slot_timestamp(other.date, other.hour)
                if o_start < end and start < o_start + other.duration * 60:
                    return other
        return None

    def _index(self, res: Reservation, *, add: bool) -> None:
        ids = self._by_day.setdefault((res.roomid, res.date), set())
        if add:
            ids.add(res.id)
        else:
            ids.discard(res.id)

    def _check_slot(self, room_id: int, day: str, hour: str, duration: int,
                    ignore: int | None, *, offered_only: bool) -> None:
        if offered_only and hour not in {s["hour"] for s in self.effective_slots(room_id, day)}:
            raise Conflict(f"No bookable slot at {day} {hour} in this room")
        if self._conflicts(room_id, day, hour, duration, ignore) is not None:
            raise Conflict(f"The slot {day} {hour} is already taken")

    def _check_extid(self, room_id: int, extid: str | None, ignore: int | None) -> None:
        if extid is None:
            return
        for other in self.reservations.values():
            if other.roomid == room_id and other.extid == extid and other.id != ignore:
                raise Conflict("A reservation with this extid already exists in this room")

    def _apply(self, res: Reservation, body: Mapping[str, Any]) -> None:
        for key in _TEXT_FIELDS:
            if key in body:
                setattr(res, key, _as_text(body[key], key))
        if "people" in body:
            res.people = _as_int(body["people"], "people")
        if "price" in body:
            res.price = _as_price(body["price"])
        if "pricer" in body:
            pricer = body["pricer"]
            if pricer is not None and (isinstance(pricer, bool)
                                       or not isinstance(pricer, int | str)):
                raise BadRequest("Field pricer must be a pricer id or name")
            res.pricer = pricer
        if "status" in body:
            res.status = _as_status(body["status"])
        if "extid" in body:
            res.extid = _as_extid(body["extid"])
        if "invoice" in body:
            invoice = body["invoice"]
            res.invoice = None if invoice in (None, "") else _as_text(invoice, "invoice")
        if "duration" in body:
            res.duration = _as_int(body["duration"], "duration", minimum=1)

    def _created_stamp(self) -> str:
        return calendar.local_now(self.clock.time()).strftime("%Y-%m-%d %H:%M:%S")

    def _create(self, room_id: int, body: Mapping[str, Any], *, source: Source,
                origin: Origin, offered_only: bool) -> Reservation:
        if source not in SOURCES:
            raise BadRequest(f"Unknown source {source}")
        room = self.room(room_id)
        day = calendar.parse_date(body.get("date"))
        hour = calendar.parse_hour(body.get("hour"))
        res = Reservation(0, room.id, day, hour, source, 1, self._created_stamp())
        self._apply(res, {k: v for k, v in body.items() if k in _EDITABLE})
        if "status" not in body:
            res.status = 1
        self._check_slot(room.id, day, hour, res.duration, None,
                         offered_only=offered_only or self.require_open_slot)
        self._check_extid(room.id, res.extid, None)
        res.id = self._next("reservation")
        self.reservations[res.id] = res
        self._index(res, add=True)
        if res.source == "web" and res.status == 0:
            self._carts[res.id] = self.clock.call_later(self.cart_hold_seconds,
                                                        self._lapse_callback(res.id))
        self._emit("add", res, origin)
        return res

    def _lapse_callback(self, reservation_id: int) -> Callable[[], None]:
        def lapse() -> None:
            self._carts.pop(reservation_id, None)
            res = self.reservations.get(reservation_id)
            if res is not None and res.source == "web" and res.status == 0:
                self._remove(res, "site")

        return lapse

    def _update(self, res: Reservation, body: Mapping[str, Any], origin: Origin,
                *, room_id: int | None = None) -> Reservation:
        # Fields other than _EDITABLE (e.g. "source", "id") are ignored, not refused.
        before_date, before_hour = res.date, res.hour
        target_room = res.roomid if room_id is None else self.room(room_id).id
        candidate = Reservation(**{**res.__dict__})
        self._apply(candidate, {k: v for k, v in body.items() if k in _EDITABLE and
                                k not in ("date", "hour")})
        candidate.date = calendar.parse_date(body["date"]) if "date" in body else res.date
        candidate.hour = calendar.parse_hour(body["hour"]) if "hour" in body else res.hour
        candidate.roomid = target_room
        if (candidate.roomid, candidate.date, candidate.hour, candidate.duration) != (
                res.roomid, res.date, res.hour, res.duration):
            self._check_slot(candidate.roomid, candidate.date, candidate.hour,
                             candidate.duration, res.id, offered_only=self.require_open_slot)
        if candidate.extid != res.extid or candidate.roomid != res.roomid:
            self._check_extid(candidate.roomid, candidate.extid, res.id)
        self._index(res, add=False)
        res.__dict__.update(candidate.__dict__)
        self._index(res, add=True)
        if res.status == 1 and res.id in self._carts:
            self._carts.pop(res.id).cancel()
        self._emit("edit", res, origin, previous=(before_date, before_hour))
        return res

    def _remove(self, res: Reservation, origin: Origin) -> None:
        self.reservations.pop(res.id, None)
        self._index(res, add=False)
        timer = self._carts.pop(res.id, None)
        if timer is not None:
            timer.cancel()
        self._emit("delete", res, origin)

    # customer / staff operations (what happens on lock.me; all emit messages) ------------
    def book(self, room_id: int, date: str | dt.date, hour: str | dt.time, *,
             source: Source = "panel", status: int = 1, **fields: Any) -> int:
        """Book as a customer (``web``/``widget``) or staff (``panel``); returns the new id.

        ``web`` with ``status=0`` is an unpaid cart that lapses after ``cart_hold_seconds``.
        """
        body = {**fields, "date": _day(date), "hour": _hour(hour), "status": status}
        return self._create(room_id, body, source=source, origin="site",
                            offered_only=source in ("web", "widget")).id

    def edit(self, reservation_id: int, changes: Mapping[str, Any]) -> Reservation:
        """Staff edit on lock.me (e.g. people, comment)."""
        return self._update(self.reservation(reservation_id), changes, "site")

    def move(self, reservation_id: int, *, roomid: int, date: str | dt.date,
             hour: str | dt.time) -> Reservation:
        """Staff move to another room/date/hour; the edit message carries from_date/from_hour."""
        return self._update(self.reservation(reservation_id),
                            {"date": _day(date), "hour": _hour(hour)}, "site", room_id=roomid)

    def pay(self, reservation_id: int) -> Reservation:
        """The customer pays their web cart: status becomes 1 (an edit message)."""
        res = self.reservation(reservation_id)
        if res.status == 1:
            raise Conflict("Reservation is already paid")
        return self._update(res, {"status": 1}, "site")

    def cancel(self, reservation_id: int) -> None:
        """Cancel on lock.me (staff or customer); allowed for paid web bookings too."""
        self._remove(self.reservation(reservation_id), "site")

    # API operations (what a partner app does with a token) ------------------------------
    def api_add(self, room_id: int, body: object) -> int:
        if not isinstance(body, dict):
            raise BadRequest("Body must be a JSON object")
        if "roomid" in body and str(body["roomid"]) != str(room_id):
            raise BadRequest("roomid in the body does not match the URL")
        for key, label in (("date", "date"), ("hour", "hour")):
            if not body.get(key):
                raise BadRequest(f"No {label}")
        return self._create(room_id, body, source="api", origin="api", offered_only=False).id

    def api_edit(self, res: Reservation, body: object) -> Reservation:
        if not isinstance(body, dict):
            raise BadRequest("Body must be a JSON object")
        if "roomid" in body and str(body["roomid"]) != str(res.roomid):
            raise BadRequest("Use the move endpoint to change the room")
        return self._update(res, body, "api")

    def api_move(self, res: Reservation, body: object, *, user_id: int) -> Reservation:
        if not isinstance(body, dict):
            raise BadRequest("Body must be a JSON object")
        missing = [k for k in ("roomid", "date", "hour") if not body.get(k)]
        if missing:
            raise BadRequest(f"Missing field {missing[0]}")
        target = self.room(_as_int(body["roomid"], "roomid"), user_id=user_id)
        return self._update(res, {"date": body["date"], "hour": body["hour"]}, "api",
                            room_id=target.id)

    def api_delete(self, res: Reservation) -> bool:
        if res.source == "web" and res.status == 1:
            raise Refused("Reservations paid via Lockme cannot be deleted from the API")
        self._remove(res, "api")
        return True

    # -- messages ------------------------------------------------------------------------
    def _emit(self, action: Action, res: Reservation, origin: Origin, *,
              previous: tuple[str, str] | None = None) -> Message | None:
        dept = self.departments[self.rooms[res.roomid].department_id]
        if origin == "api" and not dept.notify_api_changes:
            return None
        data = res.to_wire()
        if previous is not None:
            data["from_date"], data["from_hour"] = previous
        return self._new_message(dept, action, res.roomid, res.id, data)

    def _new_message(self, dept: Department, action: Action, roomid: int,
                     reservationid: int | None, data: dict[str, Any]) -> Message:
        message = Message(self._next("message"), dept.id, action, roomid, reservationid, data,
                          self.clock.time())
        self._messages[message.id] = message
        self.webhooks.start(message)
        return message

    def trigger_test(self, department_id: int) -> Message:
        """The panel's "test webhook" button: a ``test`` message with an empty ``data``."""
        dept = self.department(department_id)
        first_room = min((r.id for r in self.rooms.values() if r.department_id == dept.id),
                         default=0)
        return self._new_message(dept, "test", first_room, None, {})

    def messages(self) -> list[Message]:
        """Every message, oldest first, with its delivery attempts and read state."""
        return list(self._messages.values())

    def message(self, message_id: int | str, *, user_id: int | None = None) -> Message:
        key = str(message_id)
        message = self._messages.get(int(key)) if key.isdigit() else None
        if message is None or (user_id is not None
                               and self.departments[message.department_id].owner != user_id):
            raise NotFound("Message not found")
        return message

    def mark_read(self, message_id: int | str, *, user_id: int | None = None) -> bool:
        message = self.message(message_id, user_id=user_id)
        if not message.read:
            message.read = True
            message.read_at = self.clock.time()
            self.webhooks.stop(message)
        return True

    # -- lifecycle -----------------------------------------------------------------------
    async def flush(self) -> int:
        """Run every timer due now (deliveries, lapses); handy with a manual clock."""
        return await self.clock.run_due()

    async def start(self) -> None:
        """Start the warped clock (no-op in manual mode) and the attached traffic generator."""
        await self.clock.start()
        if self.traffic is not None:
            self.traffic.start()

    async def aclose(self) -> None:
        if self.traffic is not None:
            self.traffic.stop()
        await self.clock.stop()
        await self.webhooks.aclose()
