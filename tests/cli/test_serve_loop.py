"""``roomkey serve --loop``: uvicorn's loop factory (uvloop when installed), or the stock loop."""

from __future__ import annotations

import asyncio

import pytest
import typer
from cli_support import invoke

from roomkey.cli.service_cmds import loop_factory, run_on_loop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_is_the_stock_loop() -> None:
    assert loop_factory("asyncio") is asyncio.SelectorEventLoop
    assert run_on_loop(_loop_module(), loop="asyncio").startswith("asyncio")


def test_auto_and_uvloop_run_on_uvloop_when_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    assert loop_factory("auto") is uvloop.new_event_loop
    assert run_on_loop(_loop_module()).startswith("uvloop")
    assert run_on_loop(_loop_module(), loop="uvloop").startswith("uvloop")


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(typer.BadParameter):
        loop_factory("trio")


def test_serve_refuses_an_unknown_loop_before_starting() -> None:
    result = invoke("serve", "--loop", "trio", "--config", "/nonexistent/roomkey.toml")
    assert result.exit_code == 2
    assert "--loop" in result.output
