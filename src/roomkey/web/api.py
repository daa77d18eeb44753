"""The JSON API under ``/api/v1``: the dashboard's data and actions for other programs.

Bearer-token auth (``roomkey token create``); read endpoints for any token, actions for an
admin's token. The OpenAPI schema is served (without auth) at ``/api/v1/openapi.json``.
Errors are the service's typed JSON shape ``{"error": {"type", "message"}}``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import delete, select

from roomkey.service.clock import utc_now
from roomkey.service.db.commands import get_command
from roomkey.service.manual import ManualAction

from . import queries
from .actions import ActionError, acknowledge, manual_door_action, run_reconciliation
from .auth import AdminToken, TokenUser, api_user, web_state
from .models import WebhookEndpoint
from .overrides import SettingsError, preview_room_settings, reset_room_settings, save_room_settings
from .schemas import (
    ActionAccepted,
    AlertOut,
    CommandOut,
    DeliveryOut,
    EventOut,
    EventType,
    LockCard,
    MappingPreview,
    RoomOut,
    RoomSettingsIn,
    RoomTimeline,
    WebhookEndpointIn,
    WebhookEndpointOut,
)
from .webhooks import WebhookError, create_endpoint, retry_delivery

__all__ = ["PREFIX", "openapi_schema", "router"]

PREFIX = "/api/v1"
API_VERSION = "1.0.0"

_errors: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, invalid or revoked token"},
    403: {"description": "The token's user is read-only"},
}
router = APIRouter(prefix=PREFIX, dependencies=[Depends(api_user)], responses=_errors)

RoomId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Lockme room id")]
BigIdPath = Annotated[int, Path(ge=1, le=2**63 - 1)]
SafeText = r"^[^\x00]*$"


class Me(BaseModel):
    username: str
    role: str
    via: str


class Message(BaseModel):
    ok: bool = True
    message: str


def _not_found(what: str) -> HTTPException:
    return HTTPException(404, f"no such {what}")


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


@router.get("/me", response_model=Me, summary="Who the token belongs to")
async def me(user: TokenUser) -> Me:
    return Me(username=user.username, role=user.role.value, via=user.via)


@router.get("/rooms", response_model=list[RoomOut], summary="Rooms with locks and policy")
async def rooms(request: Request, user: TokenUser) -> list[RoomOut]:
    async with web_state(request).service.session_factory() as session:
        return await queries.list_rooms(session)


@router.get("/rooms/{room_id}", response_model=RoomOut, responses={404: {}})
async def room(request: Request, room_id: RoomId, user: TokenUser) -> RoomOut:
    async with web_state(request).service.session_factory() as session:
        found = await queries.get_room(session, room_id)
    if found is None:
        raise _not_found("room")
    return found


@router.get(
    "/rooms/{room_id}/timeline",
    response_model=RoomTimeline,
    responses={404: {}},
    summary="Bookings, planned windows and actions, commands and lock events",
)
async def room_timeline(
    request: Request,
    room_id: RoomId,
    user: TokenUser,
    days: Annotated[int, Query(ge=1, le=14)] = 2,
    start: Annotated[dt.datetime | None, Query(description="Default: now")] = None,
) -> RoomTimeline:
    service = web_state(request).service
    begin = _utc(start) or utc_now(service.clock)
    try:
        end = begin + dt.timedelta(days=days)
    except OverflowError:
        raise HTTPException(400, "start is out of range") from None
    async with service.session_factory() as session:
        found = await queries.get_room(session, room_id)
        if found is None:
            raise _not_found("room")
        return await queries.room_timeline(session, found, start=begin, end=end)


@router.get("/locks", response_model=list[LockCard], summary="Lock cards: state and alerts")
async def locks(request: Request, user: TokenUser) -> list[LockCard]:
    async with web_state(request).service.session_factory() as session:
        return await queries.list_lock_cards(session)


@router.get("/locks/{lock_id}", response_model=LockCard, responses={404: {}})
async def lock(
    request: Request,
    lock_id: Annotated[str, Path(min_length=1, max_length=64, pattern=SafeText)],
    user: TokenUser,
) -> LockCard:
    async with web_state(request).service.session_factory() as session:
        cards = await queries.list_lock_cards(session, lock_id=lock_id)
    if not cards:
        raise _not_found("lock")
    return cards[0]


def _filter(
    room: int | None,
    lock: str | None,
    booking: int | None,
    type: list[EventType] | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    limit: int,
) -> queries.EventFilter:
    return queries.EventFilter(
        room_id=room,
        lock_id=lock,
        reservation_id=booking,
        types=frozenset(type or ("lockme", "loqed", "command")),
        start=_utc(since),
        end=_utc(until),
        limit=limit,
    )


RoomQ = Annotated[int | None, Query(ge=1, le=2**31 - 1)]
LockQ = Annotated[str | None, Query(max_length=64, pattern=SafeText)]
BookingQ = Annotated[int | None, Query(ge=1, le=2**63 - 1, description="Lockme reservation id")]
TypeQ = Annotated[list[EventType] | None, Query()]
TimeQ = Annotated[dt.datetime | None, Query()]


@router.get("/events", response_model=list[EventOut], summary="The event log, newest first")
async def events(
    request: Request,
    user: TokenUser,
    room: RoomQ = None,
    lock: LockQ = None,
    booking: BookingQ = None,
    type: TypeQ = None,
    since: TimeQ = None,
    until: TimeQ = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> list[EventOut]:
    service = web_state(request).service
    flt = _filter(room, lock, booking, type, since, until, limit)
    async with service.session_factory() as session:
        return await queries.list_event_log(
            session, flt, keep_pii=service.config.loqed.keep_event_pii
        )


@router.get(
    "/events.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
    summary="The event log as CSV",
)
async def events_csv(
    request: Request,
    user: TokenUser,
    room: RoomQ = None,
    lock: LockQ = None,
    booking: BookingQ = None,
    type: TypeQ = None,
    since: TimeQ = None,
    until: TimeQ = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 5000,
) -> Response:
    service = web_state(request).service
    flt = _filter(room, lock, booking, type, since, until, limit)
    async with service.session_factory() as session:
        rows = await queries.list_event_log(
            session, flt, keep_pii=service.config.loqed.keep_event_pii
        )
    return Response(queries.events_csv(rows), media_type="text/csv; charset=utf-8")


@router.get("/alerts", response_model=list[AlertOut], summary="Alerts (open ones by default)")
async def alerts(
    request: Request, user: TokenUser, all: Annotated[bool, Query()] = False
) -> list[AlertOut]:
    async with web_state(request).service.session_factory() as session:
        return await queries.list_alerts(session, open_only=not all, limit=500)


@router.post("/alerts/{alert_id}/acknowledge", response_model=Message, responses={404: {}})
async def alert_acknowledge(request: Request, alert_id: BigIdPath, user: AdminToken) -> Message:
    if not await acknowledge(web_state(request).service, alert_id, actor=user.actor):
        raise HTTPException(404, "no open alert with this id")
    return Message(message="acknowledged")


@router.post(
    "/rooms/{room_id}/{action}",
    response_model=ActionAccepted,
    status_code=202,
    responses={404: {}, 409: {}},
    summary="Manual open / unlock / lock of every lock of a room (audited)",
)
async def door_action(
    request: Request, room_id: RoomId, action: ManualAction, user: AdminToken
) -> ActionAccepted:
    try:
        return await manual_door_action(
            web_state(request).service, room_id, action, actor=user.actor
        )
    except ActionError as exc:
        raise HTTPException(exc.status, str(exc)) from None


@router.get("/commands/{command_id}", response_model=CommandOut, responses={404: {}})
async def command(
    request: Request,
    command_id: Annotated[str, Path(min_length=1, max_length=36, pattern=SafeText)],
    user: TokenUser,
) -> CommandOut:
    async with web_state(request).service.session_factory() as session:
        row = await get_command(session, command_id)
    if row is None:
        raise _not_found("command")
    return queries.command_out(row)


class ReconcileOut(BaseModel):
    finished: bool
    message: str
    report: dict[str, Any] | None = None


@router.post("/reconcile", response_model=ReconcileOut, summary="Re-run reconciliation now")
async def reconcile(request: Request, user: AdminToken) -> ReconcileOut:
    outcome = await run_reconciliation(web_state(request).service, actor=user.actor)
    return ReconcileOut(
        finished=outcome.finished,
        message=outcome.message,
        report=outcome.report.as_dict() if outcome.report else None,
    )


def _settings_error(exc: SettingsError) -> JSONResponse:
    return JSONResponse(
        {"error": {"type": "invalid_settings", "message": str(exc), "problems": exc.problems}},
        status_code=400 if not any(p.startswith("room:") for p in exc.problems) else 404,
    )


@router.post(
    "/rooms/{room_id}/settings/preview",
    response_model=MappingPreview,
    responses={400: {}, 404: {}},
    summary="How the next day's door windows change with these settings",
)
async def settings_preview(
    request: Request, room_id: RoomId, body: RoomSettingsIn, user: AdminToken
) -> Any:
    try:
        return await preview_room_settings(
            web_state(request).service, room_id, locks=body.locks, policy=body.policy
        )
    except SettingsError as exc:
        return _settings_error(exc)


@router.put(
    "/rooms/{room_id}/settings",
    response_model=RoomOut,
    responses={400: {}, 404: {}},
    summary="Change a room's locks and/or door policy (audited, re-planned at once)",
)
async def settings_save(
    request: Request, room_id: RoomId, body: RoomSettingsIn, user: AdminToken
) -> Any:
    service = web_state(request).service
    try:
        await save_room_settings(
            service, room_id, locks=body.locks, policy=body.policy, actor=user.actor
        )
    except SettingsError as exc:
        return _settings_error(exc)
    async with service.session_factory() as session:
        found = await queries.get_room(session, room_id)
    if found is None:
        raise _not_found("room")
    return found


@router.delete(
    "/rooms/{room_id}/settings",
    response_model=Message,
    responses={404: {}},
    summary="Drop the dashboard's settings of a room (back to the config file)",
)
async def settings_reset(request: Request, room_id: RoomId, user: AdminToken) -> Message:
    state = web_state(request)
    done = await reset_room_settings(
        state.service,
        room_id,
        base=state.base_config,
        actor=user.actor,
    )
    if not done:
        raise HTTPException(404, "this room has no dashboard settings")
    return Message(message="reset")


def _endpoint_out(row: WebhookEndpoint, secret: str | None = None) -> WebhookEndpointOut:
    return WebhookEndpointOut(
        id=row.id,
        url=row.url,
        description=row.description,
        event_types=list(row.event_types or []),
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        created_at=row.created_at,
        secret=secret,
    )


@router.get("/webhooks/endpoints", response_model=list[WebhookEndpointOut])
async def webhook_endpoints(request: Request, user: AdminToken) -> list[WebhookEndpointOut]:
    async with web_state(request).service.session_factory() as session:
        rows = await session.execute(select(WebhookEndpoint).order_by(WebhookEndpoint.id))
        return [_endpoint_out(row) for row in rows.scalars()]


@router.post(
    "/webhooks/endpoints",
    response_model=WebhookEndpointOut,
    status_code=201,
    responses={400: {}},
    summary="Add a receiver; the answer carries its signing secret (only this once)",
)
async def webhook_endpoint_create(
    request: Request, body: WebhookEndpointIn, user: AdminToken
) -> WebhookEndpointOut:
    state = web_state(request)
    try:
        row, secret = await create_endpoint(state.service, body, state.settings)
    except WebhookError as exc:
        raise HTTPException(400, str(exc)) from None
    return _endpoint_out(row, secret)


@router.delete("/webhooks/endpoints/{endpoint_id}", response_model=Message, responses={404: {}})
async def webhook_endpoint_delete(
    request: Request, endpoint_id: BigIdPath, user: AdminToken
) -> Message:
    async with web_state(request).service.session_factory() as session, session.begin():
        result = await session.execute(
            delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
        )
    if not getattr(result, "rowcount", 0):
        raise _not_found("endpoint")
    return Message(message="deleted")


@router.get("/webhooks/deliveries", response_model=list[DeliveryOut], summary="Delivery log")
async def webhook_deliveries(
    request: Request, user: TokenUser, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[DeliveryOut]:
    async with web_state(request).service.session_factory() as session:
        return await queries.list_deliveries(session, limit=limit)


@router.post(
    "/webhooks/deliveries/{delivery_id}/retry", response_model=Message, responses={404: {}}
)
async def webhook_delivery_retry(
    request: Request, delivery_id: BigIdPath, user: AdminToken
) -> Message:
    service = web_state(request).service
    async with service.session_factory() as session, session.begin():
        done = await retry_delivery(session, delivery_id, now=utc_now(service.clock))
    if not done:
        raise _not_found("delivery")
    return Message(message="queued")


def openapi_schema() -> dict[str, Any]:
    """The API's OpenAPI document (built from this router's routes only)."""
    return get_openapi(
        title="roomkey API",
        version=API_VERSION,
        description="Rooms, locks, plans, events, alerts and door actions of a roomkey "
        "installation. Authenticate with `Authorization: Bearer <token>`.",
        routes=router.routes,
    )


public_router = APIRouter(prefix=PREFIX, include_in_schema=False)
_cached: dict[str, Any] = {}


@public_router.get("/openapi.json", name="api:openapi")
async def openapi_json() -> JSONResponse:
    if "schema" not in _cached:
        _cached["schema"] = openapi_schema()
    return JSONResponse(_cached["schema"])
