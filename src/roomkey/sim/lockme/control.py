"""The control API under ``/_sim``: seed data, act as customers and staff, inject faults,
move the clock, inspect messages and deliveries. JSON in, JSON out; 400/404 ``{message}`` on
bad input."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from roomkey.sim.lockme.errors import BadRequest
from roomkey.sim.lockme.faults import FaultKind, FaultRule
from roomkey.sim.lockme.http import Handler, json_body, json_response, sim_errors
from roomkey.sim.lockme.models import Reservation, Source

if TYPE_CHECKING:
    from roomkey.sim.lockme.simulator import LockmeSimulator

__all__ = ["control_routes"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserIn(_Body):
    nick: str


class ClientIn(_Body):
    client_id: str
    client_secret: str
    redirect_uri: str
    name: str = "app"


class OAuthConfigIn(_Body):
    access_ttl: float | None = Field(default=None, gt=0)
    refresh_ttl: float | None = Field(default=None, gt=0)
    code_ttl: float | None = Field(default=None, gt=0)
    auto_approve: bool | None = None
    authorize_user_id: int | None = None


class TokenIn(_Body):
    client_id: str
    user_id: int | None = None
    scopes: list[str] | None = None


class ExpireIn(_Body):
    refresh: bool = False


class DepartmentIn(_Body):
    name: str
    webhook_url: str | None = None
    owner: int | None = None
    webhook_method: Literal["POST", "GET", "post", "get"] = "POST"
    webhook_active: bool = True
    api_version: str = "v2.4"
    notify_api_changes: bool = True


class DepartmentPatch(_Body):
    name: str | None = None
    webhook_url: str | None = None
    webhook_method: Literal["POST", "GET", "post", "get"] | None = None
    webhook_active: bool | None = None
    api_version: str | None = None
    notify_api_changes: bool | None = None


class RoomIn(_Body):
    department_id: int
    name: str
    slots: list[dict[str, Any]] | None = None
    weekly: dict[int, list[dict[str, Any]]] | None = None
    calendarMargin: int = Field(default=0, ge=0)


class PricerIn(_Body):
    room_id: int
    name: str
    price: float = Field(ge=0)


class BookIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    roomid: int
    date: str
    hour: str
    source: Source = "panel"
    status: int = Field(default=1, ge=0, le=1)


class MoveIn(_Body):
    roomid: int
    date: str
    hour: str


class FaultIn(_Body):
    kind: FaultKind
    probability: float = Field(default=1.0, ge=0, le=1)
    count: int | None = Field(default=None, ge=0)
    path_prefix: str = "/v2"
    status: int = Field(default=503, ge=400, le=599)
    seconds: float = Field(default=0.0, ge=0)
    retry_after: int = Field(default=1, ge=0)


class RateLimitIn(_Body):
    limit: int | None = Field(default=None, ge=1)
    window: float = Field(default=60.0, gt=0)


class AdvanceIn(_Body):
    seconds: float = Field(ge=0, le=400 * 86400)


class WarpIn(_Body):
    warp: float = Field(gt=0, le=100000)


class TrafficIn(_Body):
    seed: int = 0
    rate: float = Field(default=30.0, gt=0)
    max_events: int | None = Field(default=None, ge=0)
    until: float | None = None
    horizon_days: int = Field(default=14, ge=1, le=365)


def _control(handler: Handler) -> Handler:
    """Map validation errors to 400 ``{message}`` on top of :func:`sim_errors`."""

    @wraps(handler)
    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            return json_response({"message": f"{where}: {first.get('msg')}".strip(": ")}, 400)
        except ValueError as exc:
            return json_response({"message": str(exc)}, 400)

    return sim_errors(wrapper)


M = TypeVar("M", bound=BaseModel)


async def _parse(request: Request, model: type[M]) -> M:
    body = await json_body(request, default={})
    return model.model_validate(body)


def _res(res: Reservation) -> dict[str, Any]:
    return res.to_wire()


def control_routes(sim: LockmeSimulator) -> list[BaseRoute]:
    """The ``/_sim`` routes bound to ``sim`` (paths relative to the mount)."""

    def pid(request: Request, name: str = "id") -> int:
        return int(request.path_params[name])

    @_control
    async def state(request: Request) -> Response:
        return json_response({
            "time": sim.clock.time(),
            "warp": sim.clock.warp,
            "manual": sim.clock.manual,
            "users": [u.to_wire() for u in sim.users.values()],
            "oauth_clients": [{"client_id": c.client_id, "redirect_uri": c.redirect_uri,
                               "name": c.name} for c in sim.oauth.clients.values()],
            "departments": [d.to_control() for d in sim.departments.values()],
            "rooms": [{**sim.room_wire(r, details=True), "department_id": r.department_id,
                       "weekly": {str(k): v for k, v in r.weekly.items()},
                       "exceptions": r.exceptions} for r in sim.rooms.values()],
            "pricers": [p.to_wire() for p in sim.pricers.values()],
            "reservations": len(sim.reservations),
            "messages": len(sim.messages()),
        })

    @_control
    async def add_user(request: Request) -> Response:
        body = await _parse(request, UserIn)
        return json_response(sim.add_user(body.nick).to_wire(), 201)

    @_control
    async def add_client(request: Request) -> Response:
        body = await _parse(request, ClientIn)
        client = sim.add_oauth_client(body.client_id, body.client_secret, body.redirect_uri,
                                      name=body.name)
        return json_response({"client_id": client.client_id,
                              "redirect_uri": client.redirect_uri}, 201)

    @_control
    async def oauth_config(request: Request) -> Response:
        body = await _parse(request, OAuthConfigIn)
        settings = sim.oauth.settings
        for key in ("access_ttl", "refresh_ttl", "code_ttl", "auto_approve"):
            value = getattr(body, key)
            if value is not None:
                setattr(settings, key, value)
        if body.authorize_user_id is not None:
            if body.authorize_user_id not in sim.users:
                raise BadRequest("Unknown user")
            sim.authorize_user_id = body.authorize_user_id
        return json_response({"access_ttl": settings.access_ttl,
                              "refresh_ttl": settings.refresh_ttl,
                              "code_ttl": settings.code_ttl,
                              "auto_approve": settings.auto_approve,
                              "authorize_user_id": sim.authorize_user_id})

    @_control
    async def grants(request: Request) -> Response:
        return json_response([g.to_control() for g in sim.oauth.grants])

    @_control
    async def token(request: Request) -> Response:
        body = await _parse(request, TokenIn)
        return json_response(sim.issue_token(body.client_id, user_id=body.user_id,
                                             scopes=body.scopes), 201)

    @_control
    async def expire(request: Request) -> Response:
        body = await _parse(request, ExpireIn)
        return json_response({"expired": sim.expire_tokens(refresh=body.refresh)})

    @_control
    async def departments(request: Request) -> Response:
        if request.method == "GET":
            return json_response([d.to_control() for d in sim.departments.values()])
        body = await _parse(request, DepartmentIn)
        dept = sim.add_department(**body.model_dump())
        return json_response(dept.to_control(), 201)

    @_control
    async def department(request: Request) -> Response:
        body = await _parse(request, DepartmentPatch)
        changes = body.model_dump(exclude_unset=True)
        return json_response(sim.configure_department(pid(request), **changes).to_control())

    @_control
    async def test_message(request: Request) -> Response:
        return json_response(sim.trigger_test(pid(request)).to_control(), 201)

    @_control
    async def add_room(request: Request) -> Response:
        body = await _parse(request, RoomIn)
        room = sim.add_room(body.department_id, body.name, body.slots, weekly=body.weekly,
                            calendar_margin=body.calendarMargin)
        return json_response(sim.room_wire(room, details=True), 201)

    @_control
    async def add_pricer(request: Request) -> Response:
        body = await _parse(request, PricerIn)
        return json_response(sim.add_pricer(body.room_id, body.name, body.price).to_wire(), 201)

    @_control
    async def day(request: Request) -> Response:
        slots = await json_body(request, default=[])
        return json_response(sim.set_day_settings(pid(request), request.path_params["day"],
                                                  slots))

    @_control
    async def date(request: Request) -> Response:
        day_ = request.path_params["date"]
        if request.method == "DELETE":
            return json_response(sim.remove_date_settings(pid(request), day_))
        slots = await json_body(request, default=[])
        return json_response(sim.set_date_settings(pid(request), day_, slots))

    @_control
    async def reservations(request: Request) -> Response:
        if request.method == "GET":
            return json_response([_res(r) for r in sim.reservations.values()])
        body = await _parse(request, BookIn)
        fields = body.model_extra or {}
        rid = sim.book(body.roomid, body.date, body.hour, source=body.source,
                       status=body.status, **fields)
        return json_response(_res(sim.reservation(rid)), 201)

    @_control
    async def edit(request: Request) -> Response:
        changes = await json_body(request, default={})
        if not isinstance(changes, dict):
            raise BadRequest("Body must be a JSON object")
        return json_response(_res(sim.edit(pid(request), changes)))

    @_control
    async def move(request: Request) -> Response:
        body = await _parse(request, MoveIn)
        return json_response(_res(sim.move(pid(request), roomid=body.roomid, date=body.date,
                                           hour=body.hour)))

    @_control
    async def pay(request: Request) -> Response:
        return json_response(_res(sim.pay(pid(request))))

    @_control
    async def cancel(request: Request) -> Response:
        sim.cancel(pid(request))
        return json_response({"cancelled": pid(request)})

    @_control
    async def messages(request: Request) -> Response:
        return json_response([m.to_control() for m in sim.messages()])

    @_control
    async def message(request: Request) -> Response:
        return json_response(sim.message(pid(request)).to_control())

    @_control
    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            sim.faults.clear()
        elif request.method == "POST":
            body = await _parse(request, FaultIn)
            rule = sim.faults.add(FaultRule(**body.model_dump()))
            return json_response(rule.to_control(), 201)
        limiter = sim.faults.rate_limit
        return json_response({
            "rules": [r.to_control() for r in sim.faults.rules],
            "rate_limit": None if limiter is None else {"limit": limiter.limit,
                                                        "window": limiter.window},
        })

    @_control
    async def fault(request: Request) -> Response:
        return json_response({"removed": sim.faults.remove(pid(request))})

    @_control
    async def rate_limit(request: Request) -> Response:
        body = await _parse(request, RateLimitIn)
        sim.faults.set_rate_limit(body.limit, body.window)
        return json_response({"limit": body.limit, "window": body.window})

    def clock_state() -> dict[str, Any]:
        return {"time": sim.clock.time(), "iso": sim.clock.now().isoformat(),
                "warp": sim.clock.warp, "manual": sim.clock.manual,
                "pending_timers": sim.clock.pending()}

    @_control
    async def clock(request: Request) -> Response:
        return json_response(clock_state())

    @_control
    async def advance(request: Request) -> Response:
        body = await _parse(request, AdvanceIn)
        await sim.clock.advance(body.seconds)
        return json_response(clock_state())

    @_control
    async def warp(request: Request) -> Response:
        body = await _parse(request, WarpIn)
        sim.clock.set_warp(body.warp)
        return json_response(clock_state())

    @_control
    async def traffic(request: Request) -> Response:
        from roomkey.sim.lockme.traffic import TrafficGenerator

        if request.method == "POST":
            body = await _parse(request, TrafficIn)
            if sim.traffic is not None:
                sim.traffic.stop()
            gen = TrafficGenerator(sim, seed=body.seed, rate=body.rate,
                                   max_events=body.max_events, until=body.until,
                                   horizon_days=body.horizon_days)
            sim.traffic = gen
            gen.start()
        elif request.method == "DELETE" and sim.traffic is not None:
            sim.traffic.stop()
        gen_ = sim.traffic
        if gen_ is None:
            return json_response({"running": False, "events": 0})
        return json_response(gen_.summary())

    @_control
    async def seed_demo(request: Request) -> Response:
        from roomkey.sim.lockme.demo import seed_demo as _seed

        return json_response(_seed(sim), 201)

    routes: list[tuple[str, Callable[[Request], Any], list[str]]] = [
        ("/state", state, ["GET"]),
        ("/users", add_user, ["POST"]),
        ("/oauth/clients", add_client, ["POST"]),
        ("/oauth/config", oauth_config, ["POST"]),
        ("/oauth/grants", grants, ["GET"]),
        ("/tokens", token, ["POST"]),
        ("/tokens/expire", expire, ["POST"]),
        ("/departments", departments, ["GET", "POST"]),
        ("/departments/{id:int}", department, ["PATCH"]),
        ("/departments/{id:int}/test", test_message, ["POST"]),
        ("/rooms", add_room, ["POST"]),
        ("/pricers", add_pricer, ["POST"]),
        ("/rooms/{id:int}/day/{day}", day, ["POST"]),
        ("/rooms/{id:int}/date/{date}", date, ["POST", "DELETE"]),
        ("/reservations", reservations, ["GET", "POST"]),
        ("/reservations/{id:int}/edit", edit, ["POST"]),
        ("/reservations/{id:int}/move", move, ["POST"]),
        ("/reservations/{id:int}/pay", pay, ["POST"]),
        ("/reservations/{id:int}/cancel", cancel, ["POST"]),
        ("/messages", messages, ["GET"]),
        ("/messages/{id:int}", message, ["GET"]),
        ("/faults", faults, ["GET", "POST", "DELETE"]),
        ("/faults/rate-limit", rate_limit, ["POST"]),
        ("/faults/{id:int}", fault, ["DELETE"]),
        ("/clock", clock, ["GET"]),
        ("/clock/advance", advance, ["POST"]),
        ("/clock/warp", warp, ["POST"]),
        ("/traffic", traffic, ["GET", "POST", "DELETE"]),
        ("/seed-demo", seed_demo, ["POST"]),
    ]
    return [Route(path, endpoint, methods=methods) for path, endpoint, methods in routes]
