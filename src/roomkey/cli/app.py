"""The ``roomkey`` command line: one Typer app that each part plugs its commands into.

Each sub-module owns its commands and exposes ``register(app, sim_app)``; this module only
assembles them, so parts can grow without touching each other.

Command modules are imported **lazily**: running a command imports only the module that
registers it (:data:`_COMMAND_OF`), so ``roomkey serve`` does not pay for the simulators,
the Lockme tools or the dashboard commands at start-up. Listing the commands
(``roomkey --help``, shell completion) and any name the table does not know load every
module, so a command registered by a module but missing from the table still works.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import typer
import typer.core
import typer.main
from typer import _click as click  # the click Typer is built on (vendored since 0.2x)

__all__ = ["app", "load_all", "main", "sim_app"]

# Modules that contribute commands, in display order. Each exposes register(app, sim_app).
_COMMAND_MODULES = (
    "roomkey.cli.sim_loqed",
    "roomkey.cli.sim_lockme",
    "roomkey.cli.lockme_cmds",
    "roomkey.cli.service_cmds",
    "roomkey.cli.web_cmds",
)

_SERVICE = ("roomkey.cli.service_cmds",)
_COMMAND_OF: dict[str, tuple[str, ...]] = {
    "sim": ("roomkey.cli.sim_loqed", "roomkey.cli.sim_lockme"),
    "lockme": ("roomkey.cli.lockme_cmds",),
    **dict.fromkeys(
        (
            "serve",
            "demo",
            "db",
            "rooms",
            "locks",
            "plan",
            "events",
            "sync",
            "open",
            "unlock",
            "lock",
            "secret-key",
        ),
        _SERVICE,
    ),
    "user": ("roomkey.cli.web_cmds",),
    "token": ("roomkey.cli.web_cmds",),
}
"""Top-level command name → the module(s) registering it (``sim``: its sub-commands')."""

_loaded: set[str] = set()


class _LazyGroup(typer.core.TyperGroup):
    """The top-level group: imports a command's module when the command is looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        _load(_COMMAND_MODULES)
        self._refresh()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        modules = _COMMAND_OF.get(cmd_name, _COMMAND_MODULES)
        if not _loaded.issuperset(modules) or cmd_name not in self.commands:
            _load(modules)
            self._refresh()
        found = super().get_command(ctx, cmd_name)
        if found is None and cmd_name in _COMMAND_OF:  # the table is stale: load everything
            _load(_COMMAND_MODULES)
            self._refresh()
            found = super().get_command(ctx, cmd_name)
        return found

    def _refresh(self) -> None:
        # Rebuild the click commands from the Typer app (cheap: no imports).
        self.commands = dict(typer.main.get_group(app).commands)


app = typer.Typer(
    name="roomkey",
    cls=_LazyGroup,
    help="Bookings open doors: Lockme reservations drive LOQED smart locks.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
sim_app = typer.Typer(help="Run the LOQED and Lockme simulators.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")


def _load(names: Iterable[str]) -> None:
    """Import the command modules ``names`` (in display order) and register their commands."""
    for name in _COMMAND_MODULES:
        if name not in names or name in _loaded:
            continue
        _loaded.add(name)
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # part not installed in this build yet
            raise
        module.register(app, sim_app)


def load_all() -> None:
    """Register every command now (for code that inspects ``app`` instead of running it)."""
    _load(_COMMAND_MODULES)


def main() -> None:
    """Console-script entry point."""
    app()
