"""The server-rendered dashboard: login, today's timeline, locks, event log, alerts, room
settings, webhooks, users and tokens.

Every page needs a session (:func:`~roomkey.web.auth.page_user`); every form that changes
something is an admin-only POST carrying the session's CSRF token, and door actions go
through a confirmation page first. A request with ``X-Partial: 1`` gets only the page's
``<main>`` (used by the live-update script).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Annotated, Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import delete, select

from roomkey.service.clock import utc_now
from roomkey.service.db.audit import write_audit
from roomkey.service.db.commands import get_command
from roomkey.service.manual import ManualAction

from . import queries
from .actions import ActionError, acknowledge, manual_door_action, run_reconciliation
from .auth import AdminPage, PageUser, require_csrf, web_state
from .models import Role, WebhookEndpoint
from .overrides import (
    SettingsError,
    preview_room_settings,
    reset_room_settings,
    save_room_settings,
)
from .ratelimit import check_login_allowed, record_login_attempt
from .schemas import WebhookEndpointIn
from .sessions import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    clear_session_cookie,
    csrf_matches,
    end_session,
    set_session_cookie,
    start_session,
)
from .timeline import layout
from .users import (
    Principal,
    UserError,
    authenticate,
    create_token,
    create_user,
    list_tokens,
    list_users,
    revoke_token,
)
from .webhooks import (
    EVENT_TYPES,
    WebhookError,
    create_endpoint,
    retry_delivery,
    send_test_event,
    set_endpoint_enabled,
)

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Csrf = Annotated[None, Depends(require_csrf)]
MANUAL_LABELS = {
    ManualAction.OPEN: "Open the door (pull the latch once)",
    ManualAction.UNLOCK: "Unlock (day lock: the handle opens the door)",
    ManualAction.LOCK: "Lock",
}


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""Every page: no framing (a door-open confirmation must not be clickjacked), own scripts only."""


def render(
    request: Request, template: str, context: dict[str, Any], *, status: int = 200
) -> HTMLResponse:
    state = web_state(request)
    user: Principal | None = getattr(request.state, "principal", None)
    ctx = {
        "request": request,
        "user": user,
        "csrf": getattr(request.state, "csrf", ""),
        "partial": request.headers.get("x-partial") == "1",
        "venue_tz": state.service.config.lockme.venue_timezone,
        **context,
    }
    response = state.templates.TemplateResponse(request, template, ctx, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def _redirect(url: str, message: str | None = None) -> RedirectResponse:
    if message:
        sep = "&" if "?" in url else "?"
        url = f"{url}{sep}{urlencode({'msg': message[:300]})}"
    return RedirectResponse(url, status_code=303)


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


# --------------------------------------------------------------------------- login


@router.get("/login", name="web:login")
async def login_page(request: Request, next: str | None = None) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", {"login_csrf": token, "next": _safe_next(next)})
    state = web_state(request)
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        path="/login",
        secure=state.settings.cookie_secure,
        httponly=True,
        samesite="lax",
    )
    return response


@router.post("/login", name="web:login_submit")
async def login_submit(request: Request) -> Response:
    state = web_state(request)
    service = state.service
    form = await _form(request)
    username = form.get("username", "")[:64]
    password = form.get("password", "")[:1024]
    next_url = _safe_next(form.get("next"))
    if not csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE), form.get("csrf_token")):
        return render(
            request,
            "login.html",
            {"error": "The form expired; please try again.", "login_csrf": "", "next": next_url},
            status=403,
        )
    ip = client_ip(request)
    now = state.settings.now()
    async with service.session_factory() as session, session.begin():
        verdict = await check_login_allowed(session, ip, username, now=now, settings=state.settings)
    if not verdict.allowed:
        response = render(
            request,
            "login.html",
            {
                "error": "Too many failed logins. Try again later.",
                "login_csrf": form.get("csrf_token", ""),
                "next": next_url,
            },
            status=429,
        )
        response.headers["Retry-After"] = str(verdict.retry_after)
        return response
    async with service.session_factory() as session, session.begin():
        user = await authenticate(session, username, password, now=now)
        await record_login_attempt(
            session, ip, username, success=user is not None, now=now, settings=state.settings
        )
        token = None
        if user is not None:
            token, _ = await start_session(session, user, now=now, settings=state.settings)
    if token is None:
        return render(
            request,
            "login.html",
            {
                "error": "Wrong user name or password.",
                "login_csrf": form.get("csrf_token", ""),
                "next": next_url,
            },
            status=401,
        )
    done = _redirect(next_url)
    set_session_cookie(done, token, state.settings)
    done.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return done


async def dashboard_alias() -> Response:
    """``/dashboard`` is where some guides (and the demo's banner) look: the dashboard is ``/``.
    Registered on the app itself by :func:`roomkey.web.install`."""
    return RedirectResponse("/", status_code=303)


@router.post("/logout", name="web:logout")
async def logout(request: Request, user: PageUser, _csrf: Csrf) -> Response:
    state = web_state(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    async with state.service.session_factory() as session, session.begin():
        await end_session(session, token)
    response = _redirect("/login")
    clear_session_cookie(response, state.settings)
    return response


# --------------------------------------------------------------------------- today


TODAY_SPANS = (6, 12, 24, 48, 168)


@router.get("/", name="web:today")
async def today(request: Request, user: PageUser, hours: int = 12) -> Response:
    """Per room: the timeline from two hours ago over the next ``hours``."""
    state = web_state(request)
    service = state.service
    hours = min(TODAY_SPANS, key=lambda h: abs(h - hours))
    now = utc_now(service.clock)
    start = (now - dt.timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    end = start + dt.timedelta(hours=hours)
    views = []
    async with service.session_factory() as session:
        rooms = await queries.list_rooms(session)
        for room in rooms:
            tl = await queries.room_timeline(session, room, start=start, end=end)
            views.append((layout(tl, now=now), tl))
        alerts = await queries.list_alerts(session, open_only=True, limit=20)
    return render(
        request,
        "today.html",
        {
            "views": views,
            "hours": hours,
            "spans": TODAY_SPANS,
            "now": now,
            "alerts": alerts,
            "live": True,
        },
    )


# --------------------------------------------------------------------------- locks


@router.get("/locks", name="web:locks")
async def locks(request: Request, user: PageUser) -> Response:
    service = web_state(request).service
    async with service.session_factory() as session:
        cards = await queries.list_lock_cards(session)
        rooms = {r.id: r for r in await queries.list_rooms(session)}
    return render(request, "locks.html", {"cards": cards, "rooms": rooms, "live": True})


# --------------------------------------------------------------------------- events


def _parse_time(value: str | None, tz: ZoneInfo) -> dt.datetime | None:
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(dt.UTC)


def _int(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if -(2**62) < number < 2**62 else None


def event_filter(request: Request, *, limit: int) -> tuple[queries.EventFilter, dict[str, str]]:
    state = web_state(request)
    tz = ZoneInfo(state.service.config.lockme.venue_timezone)
    q = request.query_params
    types = {t for t in q.getlist("type") if t in {"lockme", "loqed", "command"}}
    raw = {k: q.get(k, "") for k in ("room", "lock", "booking", "since", "until")}
    flt = queries.EventFilter(
        room_id=_int(raw["room"]),
        lock_id=raw["lock"].strip()[:64] or None,
        reservation_id=_int(raw["booking"]),
        types=frozenset(types or {"lockme", "loqed", "command"}),
        start=_parse_time(raw["since"], tz),
        end=_parse_time(raw["until"], tz),
        limit=limit,
    )
    return flt, raw


@router.get("/events", name="web:events")
async def events(request: Request, user: PageUser) -> Response:
    state = web_state(request)
    service = state.service
    flt, raw = event_filter(request, limit=300)
    async with service.session_factory() as session:
        rows = await queries.list_event_log(
            session, flt, keep_pii=service.config.loqed.keep_event_pii
        )
        rooms = await queries.list_rooms(session)
        cards = await queries.list_lock_cards(session)
    query = str(request.url.query)
    return render(
        request,
        "events.html",
        {
            "rows": rows,
            "rooms": rooms,
            "locks": [c.id for c in cards],
            "raw": raw,
            "types": sorted(flt.types),
            "csv_url": "/events.csv" + (f"?{query}" if query else ""),
            "live": True,
        },
    )


@router.get("/events.csv", name="web:events_csv")
async def events_csv(request: Request, user: PageUser) -> Response:
    service = web_state(request).service
    flt, _ = event_filter(request, limit=5000)
    async with service.session_factory() as session:
        rows = await queries.list_event_log(
            session, flt, keep_pii=service.config.loqed.keep_event_pii
        )
    return Response(
        queries.events_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="roomkey-events.csv"'},
    )


# --------------------------------------------------------------------------- alerts


@router.get("/alerts", name="web:alerts")
async def alerts(request: Request, user: PageUser, all: int = 0) -> Response:
    service = web_state(request).service
    async with service.session_factory() as session:
        rows = await queries.list_alerts(session, open_only=not all, limit=300)
    return render(request, "alerts.html", {"alerts": rows, "show_all": bool(all), "live": True})


@router.post("/alerts/{alert_id}/ack", name="web:alert_ack")
async def alert_ack(request: Request, alert_id: int, user: AdminPage, _csrf: Csrf) -> Response:
    done = await acknowledge(web_state(request).service, alert_id, actor=user.actor)
    return _redirect("/alerts", "Alert acknowledged." if done else "Alert was already closed.")


# --------------------------------------------------------------------------- door actions


def _action(value: str) -> ManualAction | None:
    try:
        return ManualAction(value)
    except ValueError:
        return None


@router.get("/rooms/{room_id}/door/{action}", name="web:door_confirm")
async def door_confirm(request: Request, room_id: int, action: str, user: AdminPage) -> Response:
    service = web_state(request).service
    act = _action(action)
    async with service.session_factory() as session:
        room = await queries.get_room(session, room_id)
    if room is None or act is None:
        return render(request, "error.html", {"message": "No such room or action."}, status=404)
    return render(
        request, "confirm_door.html", {"room": room, "action": act, "label": MANUAL_LABELS[act]}
    )


@router.post("/rooms/{room_id}/door/{action}", name="web:door_submit")
async def door_submit(
    request: Request, room_id: int, action: str, user: AdminPage, _csrf: Csrf
) -> Response:
    service = web_state(request).service
    act = _action(action)
    if act is None:
        return render(request, "error.html", {"message": "No such action."}, status=404)
    form = await _form(request)
    if form.get("confirm") != "yes":
        return _redirect(f"/rooms/{room_id}/door/{act.value}")
    try:
        result = await manual_door_action(service, room_id, act, actor=user.actor)
    except ActionError as exc:
        return render(request, "error.html", {"message": str(exc)}, status=exc.status)
    ids = ",".join(c.command_id for c in result.commands)
    return _redirect(f"/commands?ids={quote(ids)}", result.message)


@router.get("/commands", name="web:commands")
async def commands(request: Request, user: PageUser, ids: str = "") -> Response:
    """The state of some commands (where a manual action lands: watch it get confirmed)."""
    service = web_state(request).service
    wanted = [i.strip() for i in ids.split(",") if i.strip()][:20]
    rows = []
    async with service.session_factory() as session:
        for command_id in wanted:
            row = await get_command(session, command_id[:36])
            if row is not None:
                rows.append(queries.command_out(row))
    return render(request, "commands.html", {"commands": rows, "live": True})


@router.get("/reconcile", name="web:reconcile_confirm")
async def reconcile_confirm(request: Request, user: AdminPage) -> Response:
    return render(request, "confirm_reconcile.html", {})


@router.post("/reconcile", name="web:reconcile_submit")
async def reconcile_submit(request: Request, user: AdminPage, _csrf: Csrf) -> Response:
    outcome = await run_reconciliation(web_state(request).service, actor=user.actor)
    return _redirect("/", outcome.message)


# --------------------------------------------------------------------------- room settings


@router.get("/rooms", name="web:rooms")
async def rooms(request: Request, user: PageUser) -> Response:
    service = web_state(request).service
    async with service.session_factory() as session:
        rows = await queries.list_rooms(session)
    return render(request, "rooms.html", {"rooms": rows})


POLICY_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("unlock_lead_minutes", "Unlock lead (minutes)", "int"),
    ("lock_lag_minutes", "Lock lag (minutes)", "int"),
    ("default_slot_minutes", "Slot length when unknown (minutes)", "int"),
    ("merge_gap_minutes", "Keep unlocked between bookings closer than (minutes)", "int"),
    ("max_lateness_minutes", "Skip actions later than (minutes)", "int"),
    ("unlock_mode", "Unlock mode", "day_lock|open_house|open"),
    ("lock_action", "Lock action", "night_lock|day_lock"),
    ("bookings", "Bookings that open the door", "paid|all"),
)


def _settings_from_form(form: dict[str, str]) -> tuple[list[str], dict[str, Any]]:
    locks = [k.split(":", 1)[1] for k, v in form.items() if k.startswith("lock:") and v == "on"]
    policy: dict[str, Any] = {}
    for name, _label, kind in POLICY_FIELDS:
        value = form.get(name, "").strip()
        if kind == "int":
            parsed = _int(value)
            policy[name] = parsed if parsed is not None else value
        else:
            policy[name] = value
    return locks, policy


async def _settings_context(request: Request, room_id: int) -> dict[str, Any] | None:
    state = web_state(request)
    async with state.service.session_factory() as session:
        room = await queries.get_room(session, room_id)
    if room is None:
        return None
    return {
        "room": room,
        "all_locks": [lock.id for lock in state.service.config.locks],
        "fields": POLICY_FIELDS,
    }


@router.get("/rooms/{room_id}/settings", name="web:room_settings")
async def room_settings(request: Request, room_id: int, user: AdminPage) -> Response:
    ctx = await _settings_context(request, room_id)
    if ctx is None:
        return render(request, "error.html", {"message": "No such room."}, status=404)
    ctx.update(locks=ctx["room"].locks, policy=ctx["room"].policy)
    return render(request, "room_settings.html", ctx)


@router.post("/rooms/{room_id}/settings", name="web:room_settings_submit")
async def room_settings_submit(
    request: Request, room_id: int, user: AdminPage, _csrf: Csrf
) -> Response:
    """Step 1 (``step=preview``): validate and show how the next day's windows change.
    Step 2 (``step=save``): store and apply."""
    service = web_state(request).service
    ctx = await _settings_context(request, room_id)
    if ctx is None:
        return render(request, "error.html", {"message": "No such room."}, status=404)
    form = await _form(request)
    if form.get("step") == "reset":
        await reset_room_settings(service, room_id, base=_base_config(request), actor=user.actor)
        return _redirect("/rooms", "Room settings reset to the configuration file.")
    locks, policy = _settings_from_form(form)
    ctx.update(locks=locks, policy=policy)
    try:
        if form.get("step") == "save":
            await save_room_settings(service, room_id, locks=locks, policy=policy, actor=user.actor)
            return _redirect("/rooms", f"Settings of room {room_id} saved and re-planned.")
        preview = await preview_room_settings(service, room_id, locks=locks, policy=policy)
    except SettingsError as exc:
        ctx["problems"] = exc.problems
        return render(request, "room_settings.html", ctx, status=400)
    ctx["preview"] = preview
    ctx["policy_json"] = json.dumps(policy)
    return render(request, "room_settings.html", ctx)


def _base_config(request: Request) -> Any:
    return web_state(request).base_config


# --------------------------------------------------------------------------- webhooks


@router.get("/webhooks", name="web:webhooks")
async def webhooks(request: Request, user: PageUser) -> Response:
    service = web_state(request).service
    async with service.session_factory() as session:
        endpoints = list(
            (await session.execute(select(WebhookEndpoint).order_by(WebhookEndpoint.id))).scalars()
        )
        deliveries = await queries.list_deliveries(session, limit=100)
    return render(
        request,
        "webhooks.html",
        {
            "endpoints": endpoints,
            "deliveries": deliveries,
            "event_types": EVENT_TYPES,
            "live": True,
        },
    )


@router.post("/webhooks/endpoints", name="web:webhook_create")
async def webhook_create(request: Request, user: AdminPage, _csrf: Csrf) -> Response:
    state = web_state(request)
    form = await request.form()
    types = [t for t in form.getlist("event_types") if isinstance(t, str)]
    url = form.get("url")
    description = form.get("description")
    try:
        spec = WebhookEndpointIn(
            url=url if isinstance(url, str) else "",
            description=description if isinstance(description, str) else "",
            event_types=types,
        )
        endpoint, secret = await create_endpoint(state.service, spec, state.settings)
    except (WebhookError, ValueError) as exc:
        return _redirect("/webhooks", f"Endpoint not added: {str(exc)[:200]}")
    await _audit(request, user, "web.webhook_create", f"webhook:{endpoint.id}")
    return render(request, "webhook_secret.html", {"endpoint": endpoint, "secret": secret})


async def _audit(request: Request, user: Principal, action: str, target: str) -> None:
    service = web_state(request).service
    async with service.session_factory() as session, session.begin():
        await write_audit(
            session, at=utc_now(service.clock), actor=user.actor, action=action, target=target
        )


@router.post("/webhooks/endpoints/{endpoint_id}/{op}", name="web:webhook_op")
async def webhook_op(
    request: Request, endpoint_id: int, op: str, user: AdminPage, _csrf: Csrf
) -> Response:
    service = web_state(request).service
    now = utc_now(service.clock)
    async with service.session_factory() as session, session.begin():
        if op == "delete":
            await session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))
        elif op in {"enable", "disable"}:
            await set_endpoint_enabled(session, endpoint_id, op == "enable", now=now, by=user.actor)
        elif op == "test":
            await send_test_event(session, endpoint_id, now=now)
        else:
            return render(request, "error.html", {"message": "Unknown operation."}, status=404)
    await _audit(request, user, f"web.webhook_{op}", f"webhook:{endpoint_id}")
    return _redirect("/webhooks", f"Endpoint {endpoint_id}: {op} done.")


@router.post("/webhooks/deliveries/{delivery_id}/retry", name="web:delivery_retry")
async def delivery_retry(
    request: Request, delivery_id: int, user: AdminPage, _csrf: Csrf
) -> Response:
    service = web_state(request).service
    async with service.session_factory() as session, session.begin():
        done = await retry_delivery(session, delivery_id, now=utc_now(service.clock))
    await _audit(request, user, "web.delivery_retry", f"delivery:{delivery_id}")
    return _redirect("/webhooks", "Delivery queued again." if done else "No such delivery.")


# --------------------------------------------------------------------------- users & tokens


@router.get("/admin/users", name="web:users")
async def users(request: Request, user: AdminPage) -> Response:
    service = web_state(request).service
    async with service.session_factory() as session:
        rows = await list_users(session)
        tokens = await list_tokens(session)
    return render(request, "users.html", {"users": rows, "tokens": tokens, "roles": list(Role)})


@router.post("/admin/users", name="web:user_create")
async def user_create(request: Request, user: AdminPage, _csrf: Csrf) -> Response:
    service = web_state(request).service
    form = await _form(request)
    try:
        role = Role(form.get("role", Role.READ_ONLY.value))
        async with service.session_factory() as session, session.begin():
            created = await create_user(
                session,
                form.get("username", ""),
                form.get("password", ""),
                role,
                now=utc_now(service.clock),
            )
            name = created.username
    except (UserError, ValueError) as exc:
        return _redirect("/admin/users", f"User not created: {exc}")
    await _audit(request, user, "web.user_create", f"user:{name}")
    return _redirect("/admin/users", f"User {name} created.")


@router.post("/admin/tokens", name="web:token_create")
async def token_create(request: Request, user: AdminPage, _csrf: Csrf) -> Response:
    service = web_state(request).service
    form = await _form(request)
    try:
        async with service.session_factory() as session, session.begin():
            row, token = await create_token(
                session,
                form.get("username", "") or user.username,
                form.get("name", ""),
                now=utc_now(service.clock),
            )
            name = row.name
    except UserError as exc:
        return _redirect("/admin/users", f"Token not created: {exc}")
    await _audit(request, user, "web.token_create", f"token:{name}")
    return render(request, "token_created.html", {"name": name, "token": token})


@router.post("/admin/tokens/{token_id}/revoke", name="web:token_revoke")
async def token_revoke(request: Request, token_id: int, user: AdminPage, _csrf: Csrf) -> Response:
    service = web_state(request).service
    async with service.session_factory() as session, session.begin():
        done = await revoke_token(session, token_id, now=utc_now(service.clock))
    await _audit(request, user, "web.token_revoke", f"token:{token_id}")
    return _redirect("/admin/users", "Token revoked." if done else "Token already revoked.")
