"""Run the simulator on a real loopback socket (uvicorn inside the current event loop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

import uvicorn

from roomkey.sim.loqed.faults import DroppedConnection
from roomkey.sim.loqed.simulator import LoqedSimulator

__all__ = ["LoqedServer"]


class _QuietDrops(logging.Filter):
    """Hide uvicorn's traceback for connections the fault layer drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DroppedConnection)


_QUIET = _QuietDrops()
logging.getLogger("uvicorn.error").addFilter(_QUIET)


class LoqedServer:
    """``async with LoqedServer(sim) as server: server.url`` — port 0 picks a free port."""

    def __init__(
        self, sim: LoqedSimulator, *, host: str = "127.0.0.1", port: int = 0,
        log_level: str = "warning",
    ) -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self._config = uvicorn.Config(
            sim.app, host=host, port=port, log_level=log_level, lifespan="off",
            access_log=False,
        )
        self._server = uvicorn.Server(self._config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, *, wait: float = 10.0) -> None:
        self.sim.socket_mode = True
        self._task = asyncio.create_task(self._server.serve(), name="sim-loqed-server")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("simulator server stopped while starting")
            if loop.time() > deadline:
                raise TimeoutError("simulator server did not start")
            await asyncio.sleep(0.01)
        for server in self._server.servers:
            for sock in server.sockets:
                self.port = int(sock.getsockname()[1])
        await self.sim.clock.start()

    async def stop(self) -> None:
        await self.sim.clock.stop()
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=10)
            self._task = None
        await self.sim.aclose()

    async def __aenter__(self) -> LoqedServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
