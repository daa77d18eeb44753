"""The ``roomkey`` command line: one Typer app that each part plugs its commands into.

Each sub-module owns its commands and exposes ``register(app)``; this module only
assembles them, so parts can grow without touching each other.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="roomkey",
    help="Bookings open doors: Lockme reservations drive LOQED smart locks.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
sim_app = typer.Typer(help="Run the LOQED and Lockme simulators.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")

# Modules that contribute commands, in display order. Each exposes register(app, sim_app).
_COMMAND_MODULES = (
    "roomkey.cli.sim_loqed",
    "roomkey.cli.sim_lockme",
    "roomkey.cli.lockme_cmds",
    "roomkey.cli.service_cmds",
    "roomkey.cli.web_cmds",
)


def _load() -> None:
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # part not installed in this build yet
            raise
        module.register(app, sim_app)


_load()


def main() -> None:
    """Console-script entry point."""
    app()
