"""``roomkey sim loqed``."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from roomkey.cli import sim_loqed
from roomkey.cli.app import app


def own_app() -> typer.Typer:
    """Only this module's commands."""
    root, sim_app = typer.Typer(), typer.Typer()
    root.add_typer(sim_app, name="sim")
    sim_loqed.register(root, sim_app)
    return root


def test_sim_loqed_command_is_registered() -> None:
    result = CliRunner().invoke(app, ["sim", "loqed", "--help"])
    assert result.exit_code == 0
    for option in ("--port", "--warp", "--seed-demo", "--gateway", "--host"):
        assert option in result.output


def test_sim_loqed_rejects_a_bad_gateway() -> None:
    result = CliRunner().invoke(own_app(), ["sim", "loqed", "--gateway", "zigbee", "--port", "0"])
    assert result.exit_code != 0
