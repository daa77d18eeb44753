"""The seed / fault / inspection API under ``/_sim/`` (JSON in, JSON out)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from roomkey.sim.loqed.config import StatusLimit
from roomkey.sim.loqed.httputil import BadRequest, json_error, read_json_object
from roomkey.sim.loqed.model import SimBridge, SimKey, SimLock

if TYPE_CHECKING:
    from roomkey.sim.loqed.faults import FaultMiddleware
    from roomkey.sim.loqed.simulator import LoqedSimulator

__all__ = ["bridge_json", "control_routes", "key_json", "lock_json"]

Endpoint = Callable[[Request], Awaitable[Response]]


def bridge_json(bridge: SimBridge) -> dict[str, Any]:
    return {
        "bridge_id": bridge.bridge_id,
        "bridge_key": bridge.bridge_key,
        "mac_wifi": bridge.mac_wifi,
        "mac_ble": bridge.mac_ble,
        "gateway": bridge.gateway,
        "lock_id": bridge.lock_id,
        "clock_skew": bridge.clock_skew,
        "internet_down_since": bridge.internet_down_since,
        "webhooks": [{"id": h.id, "url": h.url, "flags": h.flags} for h in bridge.webhooks],
    }


def key_json(key: SimKey) -> dict[str, Any]:
    return {"local_id": key.local_id, "secret": key.secret, "name": key.name,
            "lock_id": key.lock_id}


def lock_json(lock: SimLock) -> dict[str, Any]:
    return {
        "lock_id": lock.lock_id,
        "numeric_id": lock.numeric_id,
        "bridge_id": lock.bridge_id,
        "name": lock.name,
        "bolt_state": lock.bolt_state.value,
        "moving_to": lock.moving_to.value if lock.moving_to else None,
        "online": lock.online,
        "battery_percentage": lock.battery_percentage,
        "battery_type": lock.battery_type,
        "ble_strength": lock.ble_strength if lock.online else -1,
        "wifi_strength": lock.wifi_strength,
        "pending_stalls": lock.pending_stalls,
        "settings": dict(lock.settings),
        "keys": [key_json(k) for k in lock.keys.values()],
    }


def _int(body: dict[str, Any], name: str, default: int | None = None) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer")
    return value


def _str(body: dict[str, Any], name: str, default: str | None = None) -> str | None:
    value = body.get(name, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value


def _num(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{name} must be a number")
    return float(value)


def _status_limit(rule: dict[str, Any]) -> StatusLimit:
    unknown = set(rule) - {"limit", "window", "block", "status_code"}
    if unknown:
        raise BadRequest(f"unknown status limit fields: {sorted(unknown)}")
    limit = _int(rule, "limit", 12)
    status = _int(rule, "status_code", 429)
    window, block = _num(rule, "window"), _num(rule, "block")
    if limit is None or limit < 0 or status is None or not 100 <= status <= 599:
        raise BadRequest("limit must be >= 0 and status_code 100..599")
    if (window is not None and window <= 0) or (block is not None and block < 0):
        raise BadRequest("window must be > 0 and block >= 0")
    default = StatusLimit()
    return StatusLimit(limit=limit, window=window or default.window,
                       block=default.block if block is None else block, status_code=status)


def control_routes(sim: LoqedSimulator, faults: FaultMiddleware) -> list[BaseRoute]:
    from roomkey.sim.loqed.simulator import SimError

    def guarded(fn: Callable[[Request, dict[str, Any]], Awaitable[Any]]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                body = await read_json_object(request) if request.method != "GET" else {}
                result = await fn(request, body)
            except BadRequest as exc:
                return json_error(400, str(exc))
            except SimError as exc:
                status = 404 if str(exc).startswith("no ") else 400
                return json_error(status, str(exc))
            except (ValueError, TypeError) as exc:
                return json_error(400, str(exc))
            if isinstance(result, Response):
                return result
            return JSONResponse(result)

        return endpoint

    async def state(request: Request, body: dict[str, Any]) -> Any:
        return {
            "time": sim.clock.time(),
            "bridges": [bridge_json(b) for b in sim.bridges.values()],
            "locks": [lock_json(lock) for lock in sim.locks.values()],
            "tokens": [{"id": t.id, "token": t.token, "lock_ids": t.lock_ids,
                        "key_ids": t.key_ids, "revoked": t.revoked} for t in sim.tokens],
            "app_keys": [{"id": k.id, "api_token": k.api_token, "lock_id": k.lock_id,
                          "local_id": k.local_id, "secret": k.secret} for k in sim.app_keys],
            "cloud_webhooks": [{"id": h.id, "lock_id": h.lock_id, "url": h.url, "shape": h.shape}
                               for h in sim.cloud_webhooks],
            "faults": [r.to_json() for r in faults.faults.rules],
        }

    async def add_bridge(request: Request, body: dict[str, Any]) -> Any:
        gateway = body.get("gateway")
        if gateway not in (None, "legacy", "new"):
            raise BadRequest("gateway must be legacy or new")
        bridge = sim.add_bridge(
            _str(body, "bridge_id") or f"b{len(sim.bridges) + 1}",
            bridge_key=_str(body, "bridge_key"), mac_wifi=_str(body, "mac_wifi"),
            mac_ble=_str(body, "mac_ble"), gateway=gateway,
        )
        return bridge_json(bridge)

    async def update_bridge(request: Request, body: dict[str, Any]) -> Any:
        bridge = sim.bridge(str(request.path_params["bridge_id"]))
        if "gateway" in body:
            if body["gateway"] not in ("legacy", "new"):
                raise BadRequest("gateway must be legacy or new")
            bridge.gateway = body["gateway"]
        skew = _num(body, "clock_skew")
        if skew is not None:
            bridge.clock_skew = skew
        if "internet" in body:
            sim.set_internet(bridge.bridge_id, bool(body["internet"]))
        return bridge_json(bridge)

    async def add_lock(request: Request, body: dict[str, Any]) -> Any:
        lock = sim.add_lock(
            _str(body, "bridge_id", "") or "", lock_id=_str(body, "lock_id"),
            numeric_id=_int(body, "numeric_id"), name=str(body.get("name", "Lock")),
            bolt_state=str(body.get("bolt_state", "night_lock")),
            battery_percentage=_int(body, "battery_percentage", 78) or 0,
        )
        return lock_json(lock)

    async def get_lock(request: Request, body: dict[str, Any]) -> Any:
        return lock_json(sim.lock(str(request.path_params["lock_id"])))

    async def add_key(request: Request, body: dict[str, Any]) -> Any:
        key = sim.add_key(
            str(request.path_params["lock_id"]), local_id=_int(body, "local_id"),
            name=str(body.get("name", "")), secret=_str(body, "secret"),
            account_email=str(body.get("account_email", "")),
            account_name=str(body.get("account_name", "")),
        )
        return key_json(key)

    async def delete_key(request: Request, body: dict[str, Any]) -> Any:
        try:
            local_id = int(str(request.path_params["local_id"]))
        except ValueError:
            raise BadRequest("local_id must be an integer") from None
        sim.delete_key(str(request.path_params["lock_id"]), local_id)
        return {"deleted": local_id}

    async def add_token(request: Request, body: dict[str, Any]) -> Any:
        lock_ids = body.get("lock_ids")
        if not isinstance(lock_ids, list) or not all(isinstance(i, str) for i in lock_ids):
            raise BadRequest("lock_ids must be a list of lock ids")
        token = sim.add_api_token(lock_ids, expires_in=_num(body, "expires_in"))
        return {"id": token.id, "token": token.token, "key_ids": token.key_ids}

    async def revoke_token(request: Request, body: dict[str, Any]) -> Any:
        tid = str(request.path_params["token_id"])
        for token in sim.tokens:
            if str(token.id) == tid:
                token.revoked = True
                return {"revoked": token.id}
        raise SimError(f"no token {tid}")

    async def add_app_key(request: Request, body: dict[str, Any]) -> Any:
        key = sim.add_app_api_key(_str(body, "lock_id", "") or "")
        base = _str(body, "base_url") or str(request.base_url).rstrip("/") + "/API"
        return {"id": key.id, "api_token": key.api_token, "lock_id": key.lock_id,
                "local_id": key.local_id, "secret": key.secret, "urls": key.urls(base)}

    async def add_cloud_webhook(request: Request, body: dict[str, Any]) -> Any:
        shape = body.get("shape")
        if shape not in (None, "documented", "observed"):
            raise BadRequest("shape must be documented or observed")
        url = body.get("url")
        if not isinstance(url, str) or not url:
            raise BadRequest("url missing")
        hook = sim.add_cloud_webhook(str(request.path_params["lock_id"]), url, shape=shape)
        return {"id": hook.id, "shape": hook.shape}

    async def manual(request: Request, body: dict[str, Any]) -> Any:
        key_id = _int(body, "key_local_id", 255)
        if key_id is None or not 0 <= key_id <= 255:
            raise BadRequest("key_local_id must be 0..255")
        sim.manual(str(request.path_params["lock_id"]), str(body.get("kind", "")),
                   _str(body, "target"), key_local_id=key_id)
        return {"ok": True}

    async def stall(request: Request, body: dict[str, Any]) -> Any:
        sim.inject_stall(str(request.path_params["lock_id"]), _int(body, "count", 1) or 1)
        return {"ok": True}

    async def battery(request: Request, body: dict[str, Any]) -> Any:
        await sim.battery_report(str(request.path_params["lock_id"]),
                                 percentage=_int(body, "percentage"),
                                 battery_type=_str(body, "battery_type"))
        return {"ok": True}

    async def online(request: Request, body: dict[str, Any]) -> Any:
        online = body.get("online", True)
        if not isinstance(online, bool):
            raise BadRequest("online must be true or false")
        await sim.set_online(str(request.path_params["lock_id"]), online,
                             ble_strength=_int(body, "ble_strength"),
                             wifi_strength=_int(body, "wifi_strength"))
        return {"ok": True}

    async def raw_event(request: Request, body: dict[str, Any]) -> Any:
        payload = body.get("payload")
        if not isinstance(payload, dict):
            raise BadRequest("payload must be a JSON object")
        await sim.emit_raw(str(request.path_params["lock_id"]), payload, _int(body, "bit"))
        return {"ok": True}

    async def add_fault(request: Request, body: dict[str, Any]) -> Any:
        count = _int(body, "count")
        if count is not None and count < 1:
            raise BadRequest("count must be at least 1")
        rule = faults.faults.add(
            _str(body, "path", "/") or "/", body.get("kind", ""), count=count,
            seconds=_num(body, "seconds") or 0.0, status=_int(body, "status", 503) or 503,
            method=_str(body, "method"),
        )
        return rule.to_json()

    async def clear_faults(request: Request, body: dict[str, Any]) -> Any:
        faults.faults.clear()
        return {"ok": True}

    async def clock(request: Request, body: dict[str, Any]) -> Any:
        warp = _num(body, "warp")
        if warp is not None:
            sim.clock.set_warp(warp)
        advance = _num(body, "advance")
        if advance is not None:
            if not 0 <= advance <= 366 * 86400:
                raise BadRequest("advance must be 0..31622400 seconds")
            await sim.clock.advance(advance)
        return {"time": sim.clock.time(), "warp": sim.clock.warp, "manual": sim.clock.manual}

    async def config(request: Request, body: dict[str, Any]) -> Any:
        cfg = sim.config
        for name in ("max_command_age", "max_command_future"):
            value = _num(body, name)
            if value is not None:
                setattr(cfg, name, value)
        if "webhook_mgmt_max_skew" in body:
            cfg.webhook_mgmt_max_skew = _num(body, "webhook_mgmt_max_skew")
        for name in ("replay_check", "remote_state_suffix", "status_waits_for_delivery"):
            if name in body:
                setattr(cfg, name, bool(body[name]))
        for name in ("go_to", "state_changed", "bridge_lag", "manual_state"):
            if name in body:
                span = body[name]
                if not (isinstance(span, list) and len(span) == 2
                        and all(isinstance(v, int | float) and not isinstance(v, bool)
                                and 0 <= v <= 3600 for v in span)):
                    raise BadRequest(f"{name} must be [low, high] seconds")
                setattr(cfg.timings, name, (float(span[0]), float(span[1])))
        if "relatch_after" in body:
            cfg.timings.relatch_after = _num(body, "relatch_after")
        if "webhook_shape" in body:
            if body["webhook_shape"] not in ("documented", "observed"):
                raise BadRequest("webhook_shape must be documented or observed")
            cfg.cloud.webhook_shape = body["webhook_shape"]
        if "duplicate_probability" in body:
            cfg.cloud.duplicate_probability = _num(body, "duplicate_probability") or 0.0
        limits = body.get("status_limits")
        if isinstance(limits, dict):
            for endpoint, rule in limits.items():
                if rule is not None and not isinstance(rule, dict):
                    raise BadRequest("a status limit is null or an object")
                cfg.cloud.status_limits[str(endpoint)] = (
                    None if rule is None else _status_limit(rule)
                )
            sim.limiter.reset()
        return {"config": dataclasses.asdict(cfg)}

    async def received(request: Request, body: dict[str, Any]) -> Any:
        lock_id = request.query_params.get("lock_id")
        return {"received": [r.to_json() for r in sim.received(lock_id)]}

    async def deliveries(request: Request, body: dict[str, Any]) -> Any:
        channel = request.query_params.get("channel")
        return {"deliveries": [d.to_json() for d in sim.deliveries(channel)]}

    async def seed_demo(request: Request, body: dict[str, Any]) -> Any:
        from roomkey.sim.loqed.seed import seed_demo as do_seed

        return do_seed(sim, webhook_url=_str(body, "webhook_url")).to_json()

    g = guarded
    return [
        Route("/_sim/state", g(state), methods=["GET"]),
        Route("/_sim/bridges", g(add_bridge), methods=["POST"]),
        Route("/_sim/bridges/{bridge_id}", g(update_bridge), methods=["POST", "PATCH"]),
        Route("/_sim/locks", g(add_lock), methods=["POST"]),
        Route("/_sim/locks/{lock_id}", g(get_lock), methods=["GET"]),
        Route("/_sim/locks/{lock_id}/keys", g(add_key), methods=["POST"]),
        Route("/_sim/locks/{lock_id}/keys/{local_id}", g(delete_key), methods=["DELETE"]),
        Route("/_sim/locks/{lock_id}/manual", g(manual), methods=["POST"]),
        Route("/_sim/locks/{lock_id}/stall", g(stall), methods=["POST"]),
        Route("/_sim/locks/{lock_id}/battery", g(battery), methods=["POST"]),
        Route("/_sim/locks/{lock_id}/online", g(online), methods=["POST"]),
        Route("/_sim/locks/{lock_id}/event", g(raw_event), methods=["POST"]),
        Route("/_sim/locks/{lock_id}/cloud-webhooks", g(add_cloud_webhook), methods=["POST"]),
        Route("/_sim/tokens", g(add_token), methods=["POST"]),
        Route("/_sim/tokens/{token_id}/revoke", g(revoke_token), methods=["POST"]),
        Route("/_sim/app-keys", g(add_app_key), methods=["POST"]),
        Route("/_sim/faults", g(add_fault), methods=["POST"]),
        Route("/_sim/faults", g(clear_faults), methods=["DELETE"]),
        Route("/_sim/clock", g(clock), methods=["GET", "POST"]),
        Route("/_sim/config", g(config), methods=["GET", "POST"]),
        Route("/_sim/received", g(received), methods=["GET"]),
        Route("/_sim/deliveries", g(deliveries), methods=["GET"]),
        Route("/_sim/seed-demo", g(seed_demo), methods=["POST"]),
    ]
