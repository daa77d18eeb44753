"""The bridge's local HTTP API: ``/status``, ``/to_lock``, ``/webhooks``."""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from roomkey.loqed.signing import (
    CommandFormatError,
    decode_key,
    webhook_create_hash,
    webhook_delete_hash,
    webhook_list_hash,
)
from roomkey.sim.loqed.httputil import BadRequest, raw_query, read_json_object
from roomkey.sim.loqed.lockmodel import ACTION_STATE, judge_command
from roomkey.sim.loqed.model import SimBridge, SimWebhook, Verdict
from roomkey.sim.loqed.payloads import TRIGGER_FIELDS, flags_from_fields

if TYPE_CHECKING:
    from roomkey.sim.loqed.simulator import LoqedSimulator

__all__ = ["bridge_routes"]

RESENT = "Message resent to the lock"


def _json(bridge: SimBridge, data: Any, status: int = 200) -> Response:
    """JSON as the bridge sends it: ``text/html`` on legacy bridges, JSON on the new gateway."""
    media = "text/html" if bridge.gateway == "legacy" else "application/json"
    return Response(json.dumps(data, separators=(",", ":")), status_code=status, media_type=media)


def _text(body: str, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="text/html")


def bridge_routes(sim: LoqedSimulator, *, prefixed: bool) -> list[BaseRoute]:
    """Routes for ``/bridges/{bridge_id}/...`` (``prefixed``) or the first bridge at the root."""

    def bridge_for(request: Request) -> SimBridge | None:
        if prefixed:
            return sim.bridges.get(str(request.path_params["bridge_id"]))
        return sim.first_bridge()

    def check_hash(request: Request, bridge: SimBridge, expected: Any) -> bool:
        ts_text = request.headers.get("timestamp", "")
        given = request.headers.get("hash", "")
        try:
            ts = int(ts_text.strip())
            if ts < 0:
                return False
            want = str(expected(decode_key(bridge.bridge_key), ts))
        except (ValueError, CommandFormatError):
            return False
        skew = sim.config.webhook_mgmt_max_skew
        if skew is not None and abs(sim.bridge_time(bridge) - ts) > skew:
            return False
        return hmac.compare_digest(want.encode(), given.strip().lower().encode())

    async def status(request: Request) -> Response:
        bridge = bridge_for(request)
        if bridge is None:
            return _text("Not found", 404)
        return _json(bridge, sim.status_of(bridge))

    async def to_lock(request: Request) -> Response:
        bridge = bridge_for(request)
        if bridge is None:
            return _text("Not found", 404)
        lock = sim.locks.get(bridge.lock_id) if bridge.lock_id else None
        if lock is not None:
            command = raw_query(request).get("command_signed_base64")
            verdict, cmd = judge_command(
                lock, command, lock_now=sim.bridge_time(bridge), config=sim.config
            )
            sim.model.record(lock, "bridge", verdict, cmd)
            if verdict is Verdict.ACCEPTED and cmd is not None:
                sim.model.remote_command(lock, ACTION_STATE[cmd.action], cmd.local_key_id)
        return _text(RESENT)

    async def list_webhooks(request: Request) -> Response:
        bridge = bridge_for(request)
        if bridge is None:
            return _text("Not found", 404)
        if not check_hash(request, bridge, webhook_list_hash):
            return _text("Unauthorized", 401)
        return _json(bridge, [_hook_json(h) for h in bridge.webhooks])

    async def create_webhook(request: Request) -> Response:
        bridge = bridge_for(request)
        if bridge is None:
            return _text("Not found", 404)
        try:
            body = await read_json_object(request)
        except BadRequest as exc:
            return _text(str(exc), 400)
        url = body.get("url")
        if not isinstance(url, str) or not url:
            return _text("url missing", 400)
        flags = flags_from_fields(body)

        def expected(key: bytes, ts: int) -> str:
            return webhook_create_hash(key, ts, url, flags)

        if not check_hash(request, bridge, expected):
            return _text("Unauthorized", 401)
        bridge.webhooks.append(SimWebhook(bridge.next_webhook_id, url, flags))
        bridge.next_webhook_id += 1
        return _text("")

    async def delete_webhook(request: Request) -> Response:
        bridge = bridge_for(request)
        if bridge is None:
            return _text("Not found", 404)
        try:
            hook_id = int(str(request.path_params["webhook_id"]))
            if not 0 <= hook_id <= 0xFFFFFFFFFFFFFFFF:
                raise ValueError
        except ValueError:
            return _text("Bad webhook id", 400)

        def expected(key: bytes, ts: int) -> str:
            return webhook_delete_hash(key, ts, hook_id)

        if not check_hash(request, bridge, expected):
            return _text("Unauthorized", 401)
        for hook in bridge.webhooks:
            if hook.id == hook_id:
                bridge.webhooks.remove(hook)
                return _text("")
        return _text("Webhook not found", 404)

    base = "/bridges/{bridge_id}" if prefixed else ""
    return [
        Route(f"{base}/status", status, methods=["GET"]),
        Route(f"{base}/to_lock", to_lock, methods=["GET"]),
        Route(f"{base}/webhooks", list_webhooks, methods=["GET"]),
        Route(f"{base}/webhooks", create_webhook, methods=["POST"]),
        Route(f"{base}/webhooks/{{webhook_id}}", delete_webhook, methods=["DELETE"]),
    ]


def _hook_json(hook: SimWebhook) -> dict[str, Any]:
    data: dict[str, Any] = {"id": hook.id, "url": hook.url}
    for bit, name in enumerate(TRIGGER_FIELDS):
        data[name] = (hook.flags >> bit) & 1
    return data
