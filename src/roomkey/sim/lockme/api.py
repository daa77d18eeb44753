"""The REST API (``/v2.0`` … ``/v2.4``): every route the official PHP SDK calls.

Return kinds follow the SDK's declared PHP return types: ``"OK"`` for test, a bare integer
for add, ``true`` for delete and mark-read, objects or lists otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from roomkey.sim.lockme import calendar
from roomkey.sim.lockme.http import json_body, json_response, sim_errors
from roomkey.sim.lockme.models import Reservation, Room
from roomkey.sim.lockme.oauth import TokenRecord

if TYPE_CHECKING:
    from roomkey.sim.lockme.simulator import LockmeSimulator

__all__ = ["API_VERSIONS", "REQUIRED_SCOPE", "api_routes"]

API_VERSIONS = ("v2.0", "v2.1", "v2.2", "v2.3", "v2.4")
REQUIRED_SCOPE = "rooms_manage"


def api_routes(sim: LockmeSimulator) -> list[BaseRoute]:
    """The routes of one API version, bound to ``sim``."""

    def auth(request: Request, scope: str | None = REQUIRED_SCOPE) -> TokenRecord:
        return sim.oauth.authenticate(request.headers.get("authorization"), scope=scope)

    def room_of(request: Request, token: TokenRecord) -> Room:
        return sim.room(int(request.path_params["roomid"]), user_id=token.user_id)

    def reservation_of(request: Request, room: Room) -> Reservation:
        params = request.path_params
        rid = f"ext/{params['extid']}" if "extid" in params else str(params["rid"])
        return sim.reservation(rid, room_id=room.id)

    @sim_errors
    async def test(request: Request) -> Response:
        auth(request)
        return json_response("OK")

    @sim_errors
    async def me(request: Request) -> Response:
        token = auth(request, scope=None)
        return json_response(sim.users[token.user_id].to_wire())

    @sim_errors
    async def rooms(request: Request) -> Response:
        token = auth(request)
        return json_response([sim.room_wire(r) for r in sim.rooms_of(token.user_id)])

    @sim_errors
    async def room(request: Request) -> Response:
        token = auth(request)
        found = room_of(request, token)
        if request.method == "POST":
            sim.edit_room(found, await json_body(request, default={}))
        return json_response(sim.room_wire(found, details=True))

    @sim_errors
    async def add_reservation(request: Request) -> Response:
        token = auth(request)
        found = room_of(request, token)
        return json_response(sim.api_add(found.id, await json_body(request, default={})))

    @sim_errors
    async def reservation(request: Request) -> Response:
        token = auth(request)
        res = reservation_of(request, room_of(request, token))
        if request.method == "DELETE":
            return json_response(sim.api_delete(res))
        if request.method == "POST":
            res = sim.api_edit(res, await json_body(request, default={}))
        return json_response(res.to_wire())

    @sim_errors
    async def move(request: Request) -> Response:
        token = auth(request)
        res = reservation_of(request, room_of(request, token))
        body = await json_body(request, default={})
        return json_response(sim.api_move(res, body, user_id=token.user_id).to_wire())

    @sim_errors
    async def reservations(request: Request) -> Response:
        token = auth(request)
        found = room_of(request, token)
        day = calendar.parse_date(request.path_params["date"])
        return json_response([r.to_wire() for r in sim.reservations_on(found.id, day)])

    @sim_errors
    async def message(request: Request) -> Response:
        token = auth(request)
        mid = request.path_params["mid"]
        if request.method == "POST":
            return json_response(sim.mark_read(mid, user_id=token.user_id))
        return json_response(sim.message(mid, user_id=token.user_id).to_wire())

    @sim_errors
    async def date_settings(request: Request) -> Response:
        token = auth(request)
        found = room_of(request, token)
        day = calendar.parse_date(request.path_params["date"])
        if request.method == "POST":
            return json_response(sim.set_date_settings(found.id, day,
                                                       await json_body(request, default=[])))
        if request.method == "DELETE":
            return json_response(sim.remove_date_settings(found.id, day))
        return json_response(sim.effective_slots(found.id, day))

    @sim_errors
    async def day_settings(request: Request) -> Response:
        token = auth(request)
        found = room_of(request, token)
        day = calendar.parse_day(request.path_params["day"])
        if request.method == "POST":
            return json_response(sim.set_day_settings(found.id, day,
                                                      await json_body(request, default=[])))
        return json_response(sim.day_settings(found.id, day))

    base = "/room/{roomid:int}"
    return [
        Route("/test", test, methods=["GET"]),
        Route("/me", me, methods=["GET"]),
        Route("/rooms", rooms, methods=["GET"]),
        Route(base, room, methods=["GET", "POST"]),
        Route(f"{base}/reservation", add_reservation, methods=["PUT"]),
        Route(f"{base}/reservation/ext/{{extid:path}}/move", move, methods=["POST"]),
        Route(f"{base}/reservation/ext/{{extid:path}}", reservation,
              methods=["GET", "POST", "DELETE"]),
        Route(f"{base}/reservation/{{rid}}/move", move, methods=["POST"]),
        Route(f"{base}/reservation/{{rid}}", reservation, methods=["GET", "POST", "DELETE"]),
        Route(f"{base}/reservations/{{date}}", reservations, methods=["GET"]),
        Route(f"{base}/date/{{date}}", date_settings, methods=["GET", "POST", "DELETE"]),
        Route(f"{base}/day/{{day}}", day_settings, methods=["GET", "POST"]),
        Route("/message/{mid}", message, methods=["GET", "POST"]),
    ]
