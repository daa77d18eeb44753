"""The servers the benchmarks measure, each started in its own process::

    python -m bench.servers bare --port P
    python -m bench.servers roomkey --config roomkey.toml --port P [--receivers-only] [--probe]
    python -m bench.servers naive --config roomkey.toml --port P

All run under uvicorn with exactly the settings ``roomkey serve`` uses (uvloop + httptools
when installed, no access log, lifespan on).

* ``bare`` — a Starlette app that does only the HTTP work of a webhook receiver: route, read
  headers and body, answer a small JSON. The baseline for the intake benchmark.
* ``roomkey`` — roomkey's own app (``create_app(Service(config))``), migrated at start like
  ``roomkey serve``. ``--receivers-only`` serves the receivers without starting the workers
  (the intake benchmark measures the receivers and their durable insert, not the workers
  draining the flood). ``--probe`` records when each re-plan transaction commits and serves
  the records at ``GET /_bench/commits`` (reaction-latency benchmark).
* ``naive`` — the baseline of the pipeline benchmark: a consumer that handles Lockme messages
  one at a time the way the official WordPress integration does (fetch, apply, mark read,
  next), applying each with roomkey's own mirror + re-plan code in one transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger("bench.servers")


def _run(coro: Any, loop: str) -> None:
    """Run a server's coroutine on the event loop ``roomkey serve --loop`` would use
    (``auto``: uvloop when installed), the same for every kind of server."""
    from roomkey.cli.service_cmds import run_on_loop
    from roomkey.service.gc_tuning import freeze_startup_objects, tune_gc

    tune_gc()  # the garbage-collector settings of `roomkey serve`, for every kind of server
    freeze_startup_objects()
    run_on_loop(coro, loop=loop)


def _uvicorn(app: Any, port: int) -> uvicorn.Server:
    """The server ``roomkey serve`` builds (see ``roomkey.cli.service_cmds._serve``)."""
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
    )


# --------------------------------------------------------------------------- bare


async def _bare_hook(request: Request) -> Response:
    body = await request.body()
    message_id = request.headers.get("x-messageid")
    return JSONResponse(
        {"status": "accepted", "message_id": message_id, "bytes": len(body), "duplicate": False}
    )


async def _bare_health(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def bare_app() -> Starlette:
    """Only the HTTP work: the same paths as roomkey's receivers, no verification, no storage."""
    return Starlette(
        routes=[
            Route("/health", _bare_health),
            Route("/hooks/lockme/{secret}", _bare_hook, methods=["GET", "POST"]),
            Route("/hooks/loqed/bridge/{lock_id}", _bare_hook, methods=["POST"]),
            Route("/hooks/loqed/cloud/{secret}", _bare_hook, methods=["POST"]),
        ]
    )


# --------------------------------------------------------------------------- roomkey


def _configure_logging() -> None:
    from roomkey.service.logging import configure_logging

    configure_logging(level="INFO", json_lines=True)


async def _roomkey(
    config_path: str,
    port: int,
    *,
    receivers_only: bool,
    probe: bool,
    pool: int | None = None,
    count_sql: bool = False,
) -> None:
    from roomkey.service.app import create_app
    from roomkey.service.config import load_config
    from roomkey.service.crypto import SecretBox
    from roomkey.service.db.migrate import upgrade_async
    from roomkey.service.runtime import Service

    config = load_config(config_path)
    await upgrade_async(config.service.db_url())
    engine = None
    if pool is not None:
        from roomkey.service.db.engine import create_engine

        engine = create_engine(config.service.db_url(), pool_size=pool, max_overflow=0)
    service = Service(config, secret_box=SecretBox.from_env(), engine=engine)
    if receivers_only:
        await service.sync_inventory()
    app = create_app(service, manage_lifecycle=not receivers_only)
    if probe:
        _install_probe(service, app)
    if count_sql:
        _install_sql_counter(service, app)
    try:
        await _uvicorn(app, port).serve()
    finally:
        await service.aclose()


def _install_probe(service: Any, app: Any) -> None:
    """Record (rooms, wall-clock commit time) of every re-plan transaction.

    Wraps the service's public ``replan_rooms`` (which the message worker calls inside the
    transaction that applies a message) and hooks SQLAlchemy's ``after_commit`` event of that
    transaction's session. Adds ``GET /_bench/commits``.
    """
    from sqlalchemy import event

    commits: list[dict[str, Any]] = []
    original = service.replan_rooms

    async def replan_rooms(session: Any, rooms: Iterable[int], *, now: datetime) -> Any:
        rooms = list(rooms)
        result = await original(session, rooms, now=now)

        def committed(_session: Any) -> None:
            commits.append({"rooms": sorted(rooms), "at": time.time()})

        event.listen(session.sync_session, "after_commit", committed, once=True)
        return result

    service.replan_rooms = replan_rooms

    async def read(_request: Request) -> Response:
        return JSONResponse(commits)

    app.add_route("/_bench/commits", read, methods=["GET"])


def _install_sql_counter(service: Any, app: Any) -> None:
    """Count SQL statements sent to the database; ``GET /_bench/sql`` → ``{"statements": n}``."""
    from sqlalchemy import event

    counter = {"statements": 0}

    def count(*_args: Any) -> None:
        counter["statements"] += 1

    event.listen(service.engine.sync_engine, "before_cursor_execute", count)

    async def read(_request: Request) -> Response:
        return JSONResponse(counter)

    app.add_route("/_bench/sql", read, methods=["GET"])


# --------------------------------------------------------------------------- naive


async def _naive(config_path: str, port: int) -> None:
    from roomkey.lockme.models import Message
    from roomkey.service.clock import utc_now
    from roomkey.service.config import load_config
    from roomkey.service.crypto import SecretBox
    from roomkey.service.db.migrate import upgrade_async
    from roomkey.service.messages import apply_message
    from roomkey.service.runtime import Service

    config = load_config(config_path)
    await upgrade_async(config.service.db_url())
    service = Service(config, secret_box=SecretBox.from_env(), load_optional_workers=False)
    await service.sync_inventory()
    queue: asyncio.Queue[str] = asyncio.Queue()
    seen: set[str] = set()
    secret = service.lockme_webhook_secret

    async def consume() -> None:
        while True:
            message_id = await queue.get()
            try:
                message = await service.lockme.get_message(message_id)  # fetch
                now = utc_now(service.clock)
                async with service.session_factory() as session, session.begin():  # apply
                    result = await apply_message(
                        session,
                        Message.model_validate(message.model_dump(mode="json")),
                        message_id=message_id,
                        now=now,
                    )
                    if result is not None and result.rooms:
                        await service.replan_rooms(session, result.rooms, now=now)
                await service.lockme.mark_message_read(message_id)  # mark read
            except Exception:
                log.exception("naive consumer: message %s failed", message_id)
                seen.discard(message_id)  # Lockme will deliver it again

    async def hook(request: Request) -> Response:
        if request.path_params["secret"] != secret:
            return JSONResponse({"error": "not_found"}, status_code=404)
        message_id = request.headers.get("x-messageid", "")
        if message_id and message_id not in seen:
            seen.add(message_id)
            queue.put_nowait(message_id)
        return JSONResponse({"status": "accepted", "message_id": message_id})

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(consume())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = Starlette(
        routes=[
            Route("/health", _bare_health),
            Route("/hooks/lockme/{secret}", hook, methods=["GET", "POST"]),
        ],
        lifespan=lifespan,
    )
    try:
        await _uvicorn(app, port).serve()
    finally:
        await service.aclose()


# --------------------------------------------------------------------------- entry point


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("kind", choices=["bare", "roomkey", "naive"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config")
    parser.add_argument("--receivers-only", action="store_true")
    parser.add_argument("--probe", action="store_true")
    parser.add_argument("--count-sql", action="store_true")
    parser.add_argument(
        "--loop",
        default="auto",
        choices=["auto", "uvloop", "asyncio"],
        help="event loop, as `roomkey serve --loop` (default auto: uvloop when installed)",
    )
    parser.add_argument(
        "--pool", type=int, help="experiment: a connection pool of this size, no overflow"
    )
    args = parser.parse_args(argv)
    if args.kind == "bare":
        _run(_uvicorn(bare_app(), args.port).serve(), args.loop)
        return 0
    if not args.config:
        parser.error("--config is required")
    _configure_logging()
    if args.kind == "roomkey":
        _run(
            _roomkey(
                args.config,
                args.port,
                receivers_only=args.receivers_only,
                probe=args.probe,
                pool=args.pool,
                count_sql=args.count_sql,
            ),
            args.loop,
        )
    else:
        _run(_naive(args.config, args.port), args.loop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
