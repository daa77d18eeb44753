"""``roomkey sim loqed`` and the temporary ``roomkey demo`` command."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from roomkey.cli import sim_loqed
from roomkey.cli.app import app


def own_app() -> typer.Typer:
    """Only this module's commands (the service may register its own ``demo`` later)."""
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


def test_demo_moves_the_lock_through_signed_commands_and_webhooks() -> None:
    runner = CliRunner(env={"COLUMNS": "160"})
    result = runner.invoke(own_app(), ["demo", "--for", "3", "--warp", "20"])
    assert result.exit_code == 0, result.output
    assert "signed DAY_LOCK" in result.output
    assert "GO_TO_STATE_MANUAL_LOCK_REMOTE_LATCH" in result.output
    assert "STATE_CHANGED_LATCH" in result.output
    assert "HASH ✓" in result.output
    assert "HASH ✗" not in result.output
    assert "commands the lock received:" in result.output
    assert "accepted" in result.output
