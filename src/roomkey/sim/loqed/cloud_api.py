"""The Integrations API (``/api/locks/...``) and the portal's ``/login`` page."""

from __future__ import annotations

import html
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from roomkey.sim.loqed.httputil import BadRequest, read_json_object
from roomkey.sim.loqed.model import BoltState, SimApiToken, SimLock, Verdict

if TYPE_CHECKING:
    from roomkey.sim.loqed.simulator import LoqedSimulator

__all__ = ["API_KEY_GONE", "SETTINGS", "cloud_routes", "login_page"]

API_KEY_GONE = "No query results for model [App\\Models\\ApiKey]."
SETTINGS = ("open_house_mode", "twist_assist", "touch_to_connect", "touch_to_lock", "hold_to_lock")
_INERTIA_VERSION = "5f2b4c3e0a7d9e61b8c4d2a1f0e9d8c7"

Handler = Callable[[Request, SimApiToken], Awaitable[Response]]


def login_page(request: Request) -> HTMLResponse:
    """The Laravel + Inertia login page a bad token ends up on."""
    page = {
        "component": "Auth/Login",
        "props": {"errors": {}, "auth": {"user": None}, "canResetPassword": True, "status": None},
        "url": "/login",
        "version": _INERTIA_VERSION,
    }
    data_page = html.escape(json.dumps(page, separators=(",", ":")), quote=True)
    body = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<meta name=\"csrf-token\" content=\"{secrets.token_urlsafe(30)}\">\n"
        "<title inertia>LOQED Integrations</title>\n</head>\n"
        "<body class=\"font-sans antialiased\">\n"
        f"<div id=\"app\" data-page=\"{data_page}\"></div>\n</body>\n</html>\n"
    )
    return HTMLResponse(body)


def _redirect_to_login(request: Request) -> Response:
    target = str(request.base_url).rstrip("/") + "/login"
    body = (
        "<!DOCTYPE html>\n<html>\n    <head>\n        <meta charset=\"UTF-8\" />\n"
        f"        <meta http-equiv=\"refresh\" content=\"0;url='{target}'\" />\n\n"
        f"        <title>Redirecting to {target}</title>\n    </head>\n    <body>\n"
        f"        Redirecting to <a href=\"{target}\">{target}</a>.\n    </body>\n</html>"
    )
    return HTMLResponse(body, status_code=302, headers={"location": target})


def _not_found(model: str) -> JSONResponse:
    return JSONResponse({"message": f"No query results for model [App\\Models\\{model}]."}, 404)


def cloud_routes(sim: LoqedSimulator) -> list[BaseRoute]:
    def find_token(request: Request) -> SimApiToken | None:
        auth = request.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        given = value.strip().encode()
        found = None
        for tok in sim.tokens:
            if secrets.compare_digest(tok.token.encode(), given):
                found = tok
        if found is None or found.revoked:
            return None
        if found.expires_at is not None and sim.clock.time() >= found.expires_at:
            return None
        return found

    def authed(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            token = find_token(request)
            if token is None:
                if sim.config.cloud.unauthenticated == "json401":
                    return JSONResponse({"message": "Unauthenticated."}, 401)
                return _redirect_to_login(request)
            throttle = sim.limiter.per_minute(f"token:{token.id}")
            headers = {
                "x-ratelimit-limit": str(throttle.limit),
                "x-ratelimit-remaining": str(throttle.remaining),
            }
            if not throttle.allowed:
                headers["retry-after"] = str(throttle.retry_after)
                headers["x-ratelimit-reset"] = str(int(sim.clock.time()) + throttle.retry_after)
                return JSONResponse({"message": "Too Many Attempts."}, 429, headers=headers)
            try:
                response = await handler(request, token)
            except BadRequest as exc:
                response = JSONResponse({"message": str(exc)}, 422)
            response.headers.update(headers)
            return response

        return endpoint

    def lock_of(token: SimApiToken, request: Request) -> SimLock | None:
        lock_id = str(request.path_params["lock_id"])
        if lock_id not in token.lock_ids:
            return None
        return sim.locks.get(lock_id)

    def lock_json(lock: SimLock, token: SimApiToken) -> dict[str, Any]:
        bridge = sim.bridge_of(lock)
        key = lock.keys.get(token.key_ids.get(lock.lock_id, -1))
        return {
            "id": lock.lock_id,
            "name": lock.name,
            "model_name": lock.model_name,
            "battery_percentage": lock.battery_percentage,
            "battery_type": lock.battery_type.lower(),
            "bolt_state": lock.bolt_state.value,
            "party_mode": False,
            "guest_access_mode": bool(lock.settings.get("open_house_mode", 0)),
            "twist_assist": bool(lock.settings.get("twist_assist", 0)),
            "touch_to_connect": bool(lock.settings.get("touch_to_connect", 0)),
            "lock_direction": lock.lock_direction,
            "mortise_lock_type": lock.mortise_lock_type,
            "supported_lock_states": lock.supported_lock_states,
            "online": lock.online and bridge.internet_down_since is None,
            "bridge_ip": bridge.ip_address,
            "bridge_hostname": bridge.hostname,
            "local_id": key.local_id if key else None,
            "key_secret": key.secret if key else None,
            "bridge_key": bridge.bridge_key,
            "backend_key": lock.backend_key,
            "bridge_webhook_count": len(bridge.webhooks),
            "bridge_mac_wifi": "",
        }

    async def list_locks(request: Request, token: SimApiToken) -> Response:
        wait = sim.limiter.status_read("api_locks", f"token:{token.id}")
        if wait is not None:
            return _blocked(sim, "api_locks", wait)
        data = [lock_json(sim.locks[i], token) for i in token.lock_ids if i in sim.locks]
        return JSONResponse({"data": data})

    async def get_lock(request: Request, token: SimApiToken) -> Response:
        lock = lock_of(token, request)
        if lock is None:
            return _not_found("Lock")
        return JSONResponse({"data": lock_json(lock, token)})

    async def bolt_state(request: Request, token: SimApiToken) -> Response:
        lock = lock_of(token, request)
        if lock is None:
            return _not_found("Lock")
        raw = str(request.path_params["state"]).lower()
        if raw not in ("open", "day_lock", "night_lock"):
            return JSONResponse({"message": "The selected state is invalid."}, 422)
        key_id = token.key_ids.get(lock.lock_id)
        if key_id is None or key_id not in lock.keys:
            sim.model.record(lock, "cloud", Verdict.UNKNOWN_KEY, key_local_id=key_id,
                             action=BoltState(raw))
            return JSONResponse({"message": API_KEY_GONE}, 404)
        sim.cloud_command(lock, BoltState(raw), key_id, "cloud")
        return Response(status_code=204)

    async def setting(request: Request, token: SimApiToken) -> Response:
        lock = lock_of(token, request)
        if lock is None:
            return _not_found("Lock")
        body = await read_json_object(request)
        name, value = body.get("setting_name"), body.get("setting_value")
        if name not in SETTINGS:
            return JSONResponse(
                {"message": "The selected setting name is invalid.",
                 "errors": {"setting_name": ["The selected setting name is invalid."]}}, 422)
        if isinstance(value, bool) or not isinstance(value, int) or not (
            -(2**31) <= value < 2**31
        ):
            return JSONResponse(
                {"message": "The setting value must be an integer.",
                 "errors": {"setting_value": ["The setting value must be an integer."]}}, 422)
        lock.settings[str(name)] = value
        return Response(status_code=204)

    async def keys(request: Request, token: SimApiToken) -> Response:
        lock = lock_of(token, request)
        if lock is None:
            return _not_found("Lock")
        data = [{"name": k.name, "administrator_name": k.admin_name} for k in lock.keys.values()]
        return JSONResponse({"data": data})

    def hook_json(hook: Any) -> dict[str, Any]:
        return {"id": hook.id, "url": hook.url, "info": hook.info,
                "guest_access_mode": hook.guest_access_mode}

    async def list_hooks(request: Request, token: SimApiToken) -> Response:
        lock = lock_of(token, request)
        if lock is None:
            return _not_found("Lock")
        hooks = [hook_json(h) for h in sim.cloud_webhooks if h.lock_id == lock.lock_id]
        return JSONResponse({"data": hooks})

    async def create_hook(request: Request, token: SimApiToken, many: bool) -> Response:
        lock = lock_of(token, request)
        if lock is None:
            return _not_found("Lock")
        body = await read_json_object(request)
        url = body.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return JSONResponse({"message": "The url field must be a valid URL.",
                                 "errors": {"url": ["The url field must be a valid URL."]}}, 422)
        hook = sim.add_cloud_webhook(
            lock.lock_id, url, info=bool(body.get("info", True)),
            guest_access_mode=bool(body.get("guest_access_mode", False)) if many else False,
        )
        return JSONResponse({"data": {"id": hook.id}}, 201)

    async def create_one(request: Request, token: SimApiToken) -> Response:
        return await create_hook(request, token, False)

    async def create_many(request: Request, token: SimApiToken) -> Response:
        return await create_hook(request, token, True)

    async def delete_hook(request: Request, token: SimApiToken) -> Response:
        lock = lock_of(token, request)
        if lock is None:
            return _not_found("Lock")
        wid = str(request.path_params["webhook_id"])
        for hook in sim.cloud_webhooks:
            if str(hook.id) == wid and hook.lock_id == lock.lock_id:
                sim.cloud_webhooks.remove(hook)
                return Response(status_code=204)
        return _not_found("Webhook")

    return [
        Route("/api/locks", authed(list_locks), methods=["GET"]),
        Route("/api/locks/", authed(list_locks), methods=["GET"]),
        Route("/api/locks/{lock_id}", authed(get_lock), methods=["GET"]),
        Route("/api/locks/{lock_id}/bolt_state/{state}", authed(bolt_state),
              methods=["GET", "POST"]),
        Route("/api/locks/{lock_id}/setting", authed(setting), methods=["POST"]),
        Route("/api/locks/{lock_id}/keys", authed(keys), methods=["GET"]),
        Route("/api/locks/{lock_id}/webhooks", authed(list_hooks), methods=["GET"]),
        Route("/api/locks/{lock_id}/webhooks", authed(create_one), methods=["POST"]),
        Route("/api/locks/{lock_id}/webhooks/many", authed(create_many), methods=["POST"]),
        Route("/api/locks/{lock_id}/webhooks/{webhook_id}", authed(delete_hook),
              methods=["DELETE"]),
        Route("/login", login_page, methods=["GET"]),
    ]


def _blocked(sim: LoqedSimulator, endpoint: str, wait: float) -> Response:
    rule = sim.config.cloud.status_limits.get(endpoint)
    status = rule.status_code if rule is not None else 429
    return JSONResponse(
        {"message": "Too Many Attempts."}, status,
        headers={"retry-after": str(int(wait + 0.999))},
    )
