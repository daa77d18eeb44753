"""``roomkey`` imports only the module of the command being run; ``--help`` lists them all."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import typer
import typer.main

from roomkey.cli import app as cli


def _run(code: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    loaded: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


_PROBE = """
import json, sys
from typer.testing import CliRunner
from roomkey.cli.app import app
result = CliRunner().invoke(app, {args!r})
print(json.dumps({{
    "exit": result.exit_code,
    "output": result.output,
    "modules": sorted(m for m in sys.modules if m.startswith("roomkey.")),
}}))
"""


def test_serve_imports_only_the_service_commands() -> None:
    probe = _run(_PROBE.format(args=["serve", "--help"]))
    assert probe["exit"] == 0
    assert "--config" in str(probe["output"])
    modules = set(probe["modules"])  # type: ignore[call-overload]
    assert "roomkey.cli.service_cmds" in modules
    for other in ("sim_loqed", "sim_lockme", "lockme_cmds", "web_cmds"):
        assert f"roomkey.cli.{other}" not in modules
    assert not any(m.startswith("roomkey.sim") for m in modules)


def test_help_lists_every_command_of_every_module() -> None:
    probe = _run(_PROBE.format(args=["--help"]))
    assert probe["exit"] == 0
    output = str(probe["output"])
    for name in cli._COMMAND_OF:
        assert f" {name} " in output
    sim = _run(_PROBE.format(args=["sim", "--help"]))
    assert " loqed " in str(sim["output"])
    assert " lockme " in str(sim["output"])


def test_the_lazy_table_names_exactly_what_each_module_registers() -> None:
    registered: dict[str, set[str]] = {}
    for name in cli._COMMAND_MODULES:
        top, sim = typer.Typer(), typer.Typer()
        before = set(typer.main.get_group(top).commands) if top.registered_commands else set()
        importlib.import_module(name).register(top, sim)
        names = set(typer.main.get_group(top).commands) - before
        if sim.registered_commands or sim.registered_groups:
            names.add("sim")
        for command in names:
            registered.setdefault(command, set()).add(name)
    assert set(registered) == set(cli._COMMAND_OF)
    for command, modules in registered.items():
        assert modules <= set(cli._COMMAND_OF[command]), command


def test_an_unknown_command_is_a_usage_error_not_a_crash() -> None:
    probe = _run(_PROBE.format(args=["no-such-command"]))
    assert probe["exit"] == 2
    assert "No such command" in str(probe["output"])
