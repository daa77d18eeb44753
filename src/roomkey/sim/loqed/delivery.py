"""Outgoing webhooks: signed, sequential bridge deliveries and unsigned cloud deliveries."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from roomkey.loqed.signing import decode_key, webhook_payload_hash
from roomkey.sim.clock import SimClock
from roomkey.sim.loqed.config import SimConfig
from roomkey.sim.loqed.model import DeliveryRecord, SimBridge, SimCloudWebhook

__all__ = ["Dispatcher", "expand_placeholders", "split_userinfo"]

log = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"\[([A-Za-z0-9_\-]+)\]")
LEGACY_USER_AGENT = "ESP32 HTTP Client/1.0"


def expand_placeholders(url: str, payload: dict[str, Any]) -> str:
    """Replace ``[field]`` by the (percent-encoded) value of that key in the payload."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in payload:
            return match.group(0)
        value = payload[name]
        text = "" if value is None else str(value)
        return quote(text, safe="")

    return _PLACEHOLDER.sub(repl, url)


def split_userinfo(url: str) -> tuple[str, str | None, str]:
    """Return ``(url without userinfo, Basic auth header or None, url safe to record)``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, url
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    shown = urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, ""))
    return clean, f"Basic {token}", shown


def _log_target(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{host}{parts.path}"


@dataclass(slots=True)
class _BridgeJob:
    bridge: SimBridge
    lock_id: str | None
    body: bytes
    event_type: str | None
    trigger_bit: int | None
    after: Callable[[], None] | None
    done: asyncio.Future[None] | None = field(default=None)


class Dispatcher:
    """Delivers webhooks through one ``httpx.AsyncClient``.

    Bridge deliveries are sequential per bridge, to every registered URL in registration
    order. In manual-clock mode each delivery is awaited by the timer that caused it, so a
    test's ``await clock.advance(...)`` returns with every webhook delivered.
    """

    def __init__(
        self,
        clock: SimClock,
        config: SimConfig,
        client: httpx.AsyncClient | None,
    ) -> None:
        self._clock = clock
        self._config = config
        self._client = client
        self._own_client = client is None
        self._queues: dict[str, asyncio.Queue[_BridgeJob]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.records: list[DeliveryRecord] = []

    @property
    def inline(self) -> bool:
        return self._clock.manual

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._config.delivery_timeout, follow_redirects=False
            )
        return self._client

    # -- bridge ---------------------------------------------------------------------------
    async def bridge_event(
        self,
        bridge: SimBridge,
        lock_id: str | None,
        body: bytes,
        *,
        event_type: str | None,
        trigger_bit: int | None,
        after: Callable[[], None] | None = None,
    ) -> None:
        """Queue one event for the bridge's webhooks (awaits delivery in manual mode)."""
        job = _BridgeJob(bridge, lock_id, body, event_type, trigger_bit, after)
        queue = self._queues.get(bridge.bridge_id)
        if queue is None:
            queue = self._queues[bridge.bridge_id] = asyncio.Queue()
        worker = self._workers.get(bridge.bridge_id)
        if worker is None or worker.done():
            self._workers[bridge.bridge_id] = asyncio.create_task(
                self._bridge_worker(queue), name=f"sim-loqed-bridge-{bridge.bridge_id}"
            )
        if self.inline:
            job.done = asyncio.get_running_loop().create_future()
            await queue.put(job)
            await job.done
        else:
            await queue.put(job)

    async def _bridge_worker(self, queue: asyncio.Queue[_BridgeJob]) -> None:
        while True:
            job = await queue.get()
            try:
                await self._deliver_bridge_job(job)
            except Exception:
                log.exception("bridge webhook delivery failed")
            finally:
                if job.after is not None:
                    job.after()
                if job.done is not None and not job.done.done():
                    job.done.set_result(None)
                queue.task_done()

    async def _deliver_bridge_job(self, job: _BridgeJob) -> None:
        bridge = job.bridge
        try:
            payload = json.loads(job.body)
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        for hook in list(bridge.webhooks):
            if job.trigger_bit is not None and not (hook.flags >> job.trigger_bit) & 1:
                continue
            ts = int(self._clock.time() + bridge.clock_skew)
            headers: dict[str, str]
            if bridge.gateway == "legacy":
                headers = {
                    "User-Agent": LEGACY_USER_AGENT,
                    "Accept": "text/html",
                    "Accept-Encoding": "identity",
                    "Connection": "keep-alive",
                    "Content-Type": "application/json",
                    "HASH": webhook_payload_hash(decode_key(bridge.bridge_key), ts, job.body),
                    "TIMESTAMP": str(ts),
                }
            else:
                headers = {"Content-Type": "application/json"}
                if self._config.new_gateway_hash == "send":
                    key = decode_key(bridge.bridge_key)
                    headers["HASH"] = webhook_payload_hash(key, ts, job.body)
            await self._post(
                "bridge", bridge.bridge_id, job.lock_id, hook.url, payload, job.body,
                headers, job.event_type, duplicate=False,
            )

    # -- cloud ----------------------------------------------------------------------------
    async def cloud_event(
        self,
        hooks: list[SimCloudWebhook],
        bodies: list[dict[str, Any]],
        *,
        lock_id: str,
        event_type: str | None,
        duplicate: bool = False,
    ) -> None:
        """POST one event to each cloud webhook (unsigned)."""
        if self.inline:
            await self._cloud_send(hooks, bodies, lock_id, event_type, duplicate)
        else:
            task = asyncio.create_task(
                self._cloud_send(hooks, bodies, lock_id, event_type, duplicate)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _cloud_send(
        self,
        hooks: list[SimCloudWebhook],
        bodies: list[dict[str, Any]],
        lock_id: str,
        event_type: str | None,
        duplicate: bool,
    ) -> None:
        for hook, data in zip(hooks, bodies, strict=True):
            raw = json.dumps(data, separators=(",", ":")).encode("utf-8")
            headers = {
                "Accept": "text/plain, application/json, application/*+json, */*",
                "Content-Type": "application/json",
                "User-Agent": self._config.cloud.user_agent,
            }
            await self._post(
                "cloud", lock_id, lock_id, hook.url, data, raw, headers, event_type,
                duplicate=duplicate,
            )

    # -- shared ---------------------------------------------------------------------------
    async def _post(
        self,
        channel: Literal["bridge", "cloud"],
        source_id: str,
        lock_id: str | None,
        url_template: str,
        payload: dict[str, Any],
        body: bytes,
        headers: dict[str, str],
        event_type: str | None,
        *,
        duplicate: bool,
    ) -> None:
        try:
            url, auth, shown = split_userinfo(expand_placeholders(url_template, payload))
        except ValueError:
            url, auth, shown = "", None, "<unparsable url>"
        if auth is not None:
            headers = {**headers, "Authorization": auth}
        record = DeliveryRecord(
            at=self._clock.time(),
            channel=channel,
            source_id=source_id,
            lock_id=lock_id,
            url=shown,
            event_type=event_type,
            body=body,
            headers={k: v for k, v in headers.items() if k.lower() != "authorization"},
            duplicate=duplicate,
        )
        self.records.append(record)
        if not url:
            record.error = "InvalidURL"
            return
        try:
            response = await self._http().post(
                url, content=body, headers=headers, timeout=self._config.delivery_timeout
            )
            record.status = response.status_code
        except (httpx.HTTPError, ValueError) as exc:
            record.error = type(exc).__name__
            log.info("%s webhook to %s failed: %s", channel, _log_target(url), record.error)

    async def settle(self) -> None:
        """Wait until every queued delivery has been made."""
        for queue in list(self._queues.values()):
            await queue.join()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for worker in self._workers.values():
            worker.cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in [*self._workers.values(), *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._workers.clear()
        self._queues.clear()
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None
