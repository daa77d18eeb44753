"""app.loqed.com's older "incoming webhook" API: ``lock_status.php`` and ``lock_command.php``."""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from roomkey.sim.loqed.httputil import raw_query
from roomkey.sim.loqed.lockmodel import ACTION_STATE, judge_command
from roomkey.sim.loqed.model import BoltState, SimAppApiKey, Verdict

if TYPE_CHECKING:
    from roomkey.sim.loqed.simulator import LoqedSimulator

__all__ = ["app_api_routes"]

_ACTION_NAMES = {"OPEN": BoltState.OPEN, "DAY_LOCK": BoltState.DAY_LOCK,
                 "LATCH": BoltState.DAY_LOCK, "NIGHT_LOCK": BoltState.NIGHT_LOCK}


def _php_json(data: Any, status: int = 200) -> Response:
    """PHP's default content type is text/html, whatever the body."""
    return Response(json.dumps(data), status_code=status, media_type="text/html")


def app_api_routes(sim: LoqedSimulator) -> list[BaseRoute]:
    def find_key(params: dict[str, str]) -> SimAppApiKey | None:
        given = params.get("api_token", "").encode()
        if not given:
            return None
        found = None
        for key in sim.app_keys:
            if secrets.compare_digest(key.api_token.encode(), given):
                found = key
        if found is None or found.revoked or params.get("lock_id") != found.lock_id:
            return None
        return found

    async def lock_status(request: Request) -> Response:
        params = raw_query(request)
        app_key = find_key(params)
        if app_key is None:
            return _php_json({"status": "error", "message": "Invalid api_token or lock_id"}, 401)
        wait = sim.limiter.status_read("app_status", f"app:{app_key.id}")
        if wait is not None:
            rule = sim.config.cloud.status_limits.get("app_status")
            return _php_json(
                {"status": "error", "message": "Too many requests, try again later"},
                rule.status_code if rule else 429,
            )
        lock = sim.lock(app_key.lock_id)
        bridge = sim.bridge_of(lock)
        battery = lock.battery_type.upper()
        data = {
            "id": lock.lock_id,
            "bolt_state": lock.bolt_state.value,
            "bolt_state_numeric": lock.bolt_state.numeric,
            "bridge_online": 0 if bridge.internet_down_since is not None else 1,
            "lock_online": 1 if lock.online else 0,
            "battery_percentage": lock.battery_percentage,
            "battery_type": battery,
            "battery_type_numeric": {"ALKALINE": 0, "NICKEL_METAL_HYDRIDE": 1,
                                     "LITHIUM": 2}.get(battery, 3),
            "guest_access_mode": lock.settings.get("open_house_mode", 0),
            "twist_assist": lock.settings.get("twist_assist", 0),
            "touch_to_connect": lock.settings.get("touch_to_connect", 0),
            "lock_direction": lock.lock_direction,
        }
        return _php_json(data)

    async def lock_command(request: Request) -> Response:
        params = raw_query(request)
        app_key = find_key(params)
        if app_key is None:
            return _php_json({"status": "error", "message": "Invalid api_token or lock_id"}, 401)
        lock = sim.lock(app_key.lock_id)
        bridge = sim.bridge_of(lock)
        action = params.get("action", "").upper()
        if "command_signed_base64" not in params and action in _ACTION_NAMES:
            # a ready-made portal URL: the backend signs with the API key's own slot
            sim.cloud_command(lock, _ACTION_NAMES[action], app_key.local_id, "app_api")
            return _php_json({"status": "success"})
        verdict, cmd = judge_command(
            lock, params.get("command_signed_base64"), lock_now=sim.clock.time(),
            config=sim.config, allow_short=True,
        )
        if verdict is Verdict.ACCEPTED and bridge.internet_down_since is not None:
            verdict = Verdict.BRIDGE_UNREACHABLE
        sim.model.record(lock, "app_api", verdict, cmd)
        if verdict is Verdict.ACCEPTED and cmd is not None:
            sim.model.remote_command(lock, ACTION_STATE[cmd.action], cmd.local_key_id)
        return _php_json({"status": "success"})

    return [
        Route("/API/lock_status.php", lock_status, methods=["GET"]),
        Route("/API/lock_command.php", lock_command, methods=["GET", "POST"]),
    ]
