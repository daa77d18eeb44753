"""Shared output and error handling for roomkey's service commands (Seam CLI style).

* Only the command's answer goes to **stdout**: JSON with ``--json`` or whenever stdout is not a
  terminal (pipes, CI, scripts), a rich table otherwise.
* Everything else — progress, notes, errors — goes to **stderr**.
* Expected errors end with a one-line (or short) message and a distinct exit code, never a
  traceback; every message is passed through :func:`roomkey.service.logging.redact`, so no
  secret, token or signed URL is ever printed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

import click
import typer
from pydantic import BaseModel, SecretStr
from rich.console import Console
from rich.table import Table
from typer.exceptions import TyperException

from roomkey.service.logging import redact

__all__ = [
    "CliError",
    "ExitCode",
    "Output",
    "fail",
    "handle_errors",
    "make_output",
    "stdout_is_tty",
    "to_jsonable",
]


class ExitCode(enum.IntEnum):
    """Exit codes of the service commands (documented in docs/operations.md)."""

    OK = 0
    FAILURE = 1
    """Anything else that went wrong."""
    USAGE = 2
    """Wrong arguments or options (Typer/Click's own code)."""
    CONFIG = 3
    """The configuration file (or ``ROOMKEY_SECRET_KEY``) is missing or invalid."""
    NOT_FOUND = 4
    """The room, lock or record named does not exist."""
    DOOR_FAILED = 5
    """A door command failed (rejected, unauthorized, stalled, expired …)."""
    UNREACHABLE = 6
    """The database, Lockme or a lock could not be reached."""
    NOT_CONFIRMED = 7
    """A door command was sent but not confirmed by the lock within the wait timeout."""
    DATABASE = 8
    """The database is not initialised or not at the code's schema (run ``roomkey db upgrade``)."""


class CliError(Exception):
    """An expected failure: printed as ``error: <message>`` and exits with ``code``."""

    def __init__(
        self, message: str, code: ExitCode = ExitCode.FAILURE, *, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.hint = hint


def fail(message: str, code: ExitCode = ExitCode.FAILURE, *, hint: str | None = None) -> NoReturn:
    raise CliError(message, code, hint=hint)


def stdout_is_tty() -> bool:
    """Whether stdout is an interactive terminal (tests monkeypatch this)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: datetimes as ISO 8601, enums as values, secrets hidden."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, SecretStr):
        return "***"
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, BaseModel):
        return to_jsonable(value.model_dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, Sequence | set | frozenset):
        return [to_jsonable(v) for v in value]
    return str(value)


Renderer = Callable[[Any], Table | str]


@dataclasses.dataclass
class Output:
    """Where a command's answer and its notes go."""

    json: bool
    console: Console
    """stdout (the answer only)."""
    err: Console
    """stderr (progress, notes, errors)."""

    def emit(self, data: Any, render: Renderer | None = None) -> None:
        """Print the answer: JSON, or ``render(data)`` (a rich table or text) on a terminal."""
        if self.json or render is None:
            text = json.dumps(to_jsonable(data), ensure_ascii=False, indent=2)
            self.console.file.write(redact(text) + "\n")
            self.console.file.flush()
            return
        self.console.print(render(data))

    def note(self, message: str) -> None:
        """A human note on stderr (never stdout)."""
        self.err.print(redact(message), markup=False, highlight=False)

    def error(self, message: str, code: ExitCode, hint: str | None = None) -> None:
        text = redact(message)
        if self.json:
            body: dict[str, Any] = {
                "type": code.name.lower(),
                "message": text,
                "exit_code": int(code),
            }
            if hint:
                body["hint"] = redact(hint)
            sys.stderr.write(json.dumps({"error": body}, ensure_ascii=False) + "\n")
            return
        self.err.print(f"[bold red]error:[/] {_escape(text)}", highlight=False)
        if hint:
            self.err.print(f"[dim]hint:[/] {_escape(redact(hint))}", highlight=False)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def make_output(json_flag: bool) -> Output:
    """JSON when asked for or when stdout is not a terminal; rich otherwise."""
    use_json = json_flag or not stdout_is_tty()
    no_color = bool(os.environ.get("NO_COLOR")) or use_json
    return Output(
        json=use_json,
        console=Console(file=sys.stdout, no_color=no_color, soft_wrap=False),
        err=Console(file=sys.stderr, no_color=no_color, stderr=True),
    )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def classify(exc: BaseException) -> tuple[ExitCode, str, str | None]:
    """Exit code, message and hint for an exception a command let through."""
    # Imported here: the CLI stays importable even while parts are being built.
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    from roomkey.lockme import errors as lockme_errors
    from roomkey.loqed import errors as loqed_errors
    from roomkey.service.config import ConfigError
    from roomkey.service.crypto import CryptoError

    if isinstance(exc, CliError):
        return exc.code, exc.message, exc.hint
    if isinstance(exc, ConfigError):
        return ExitCode.CONFIG, str(exc), "see docs/configuration.md and examples/roomkey.toml"
    if isinstance(exc, CryptoError):
        return ExitCode.CONFIG, str(exc), None
    if isinstance(exc, OperationalError | InterfaceError):
        # The driver's text may quote the URL: say only what kind of failure it was.
        orig = getattr(exc, "orig", None)
        kind = type(orig).__name__ if orig is not None else type(exc).__name__
        return (
            ExitCode.UNREACHABLE,
            f"the database cannot be reached or used ({kind})",
            "check [service] database_url and that the database server is running",
        )
    if isinstance(exc, DBAPIError):
        return ExitCode.FAILURE, f"database error ({type(exc.orig).__name__})", None
    if isinstance(exc, lockme_errors.TransportError):
        return ExitCode.UNREACHABLE, f"Lockme is unreachable: {_describe(exc)}", None
    if isinstance(exc, lockme_errors.AuthError | lockme_errors.OAuthError):
        return (
            ExitCode.FAILURE,
            f"Lockme refused roomkey's credentials: {_describe(exc)}",
            "log in again with `roomkey lockme login`",
        )
    if isinstance(exc, lockme_errors.LockmeError):
        return ExitCode.FAILURE, f"Lockme error: {_describe(exc)}", None
    if isinstance(exc, loqed_errors.TransportError):
        return ExitCode.UNREACHABLE, f"the lock is unreachable: {_describe(exc)}", None
    if isinstance(exc, loqed_errors.LoqedError):
        return ExitCode.DOOR_FAILED, f"LOQED error: {_describe(exc)}", None
    if isinstance(exc, ConnectionError | TimeoutError):
        return ExitCode.UNREACHABLE, _describe(exc), None
    if isinstance(exc, OSError):
        return ExitCode.FAILURE, _describe(exc), None
    return ExitCode.FAILURE, f"unexpected error: {_describe(exc)}", None


@contextlib.contextmanager
def handle_errors(out: Output) -> Iterator[None]:
    """Turn expected exceptions into a clean message on stderr and a distinct exit code.

    Unexpected exceptions are reported the same way (redacted, no traceback) with exit code 1;
    set ``ROOMKEY_DEBUG=1`` to see the traceback.
    """
    try:
        yield
    except (typer.Exit, typer.Abort, TyperException, click.ClickException, KeyboardInterrupt):
        raise  # usage errors keep Click's own message and exit code 2
    except Exception as exc:
        if os.environ.get("ROOMKEY_DEBUG") == "1":
            raise
        code, message, hint = classify(exc)
        out.error(message, code, hint)
        raise typer.Exit(int(code)) from None
