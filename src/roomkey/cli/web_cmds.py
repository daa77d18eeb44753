"""Dashboard commands: ``roomkey user create|list`` and ``roomkey token create``.

The first admin is created here (``roomkey user create NAME --admin``); further users can be
added in the dashboard. Passwords are read from a hidden prompt, or from stdin with
``--password-stdin`` (for scripts). A token is printed once; only its hash is stored.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Annotated, Any

import typer

from roomkey.cli.output import ExitCode, fail, handle_errors, make_output
from roomkey.cli.service_cmds import DEFAULT_CONFIG, ConfigOpt, JsonOpt, load_cli_config

__all__ = ["register"]

user_app = typer.Typer(help="Dashboard users.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens for /api/v1.", no_args_is_help=True)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


@user_app.command("create")
def user_create(
    username: Annotated[str, typer.Argument(help="Login name.")],
    admin: Annotated[
        bool,
        typer.Option("--admin/--read-only", help="Admin (door actions, settings) or read-only."),
    ] = False,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    config_path: ConfigOpt = DEFAULT_CONFIG,
    as_json: JsonOpt = False,
) -> None:
    """Create a dashboard user (the first admin comes from here)."""
    out = make_output(as_json)
    with handle_errors(out):
        config = load_cli_config(config_path)
        password = _read_password(password_stdin)
        from roomkey.cli.service_cmds import _database, _run
        from roomkey.web.models import Role
        from roomkey.web.users import UserError, create_user

        role = Role.ADMIN if admin else Role.READ_ONLY

        async def go() -> dict[str, Any]:
            async with _database(config) as sessions, sessions() as session, session.begin():
                try:
                    user = await create_user(session, username, password, role, now=_now())
                except UserError as exc:
                    fail(str(exc), ExitCode.FAILURE)
                return {"username": user.username, "role": user.role}

        data = _run(go())
        out.emit(data, lambda d: f"created {d['role']} user {d['username']}")


@user_app.command("list")
def user_list(config_path: ConfigOpt = DEFAULT_CONFIG, as_json: JsonOpt = False) -> None:
    """List dashboard users."""
    out = make_output(as_json)
    with handle_errors(out):
        config = load_cli_config(config_path)
        from roomkey.cli.service_cmds import _database, _run
        from roomkey.web.users import list_users

        async def go() -> list[dict[str, Any]]:
            async with _database(config) as sessions, sessions() as session:
                return [
                    {"username": u.username, "role": u.role, "last_login_at": u.last_login_at}
                    for u in await list_users(session)
                ]

        data = _run(go())
        out.emit(data, lambda d: "\n".join(f"{u['username']}\t{u['role']}" for u in d))


@token_app.command("create")
def token_create(
    username: Annotated[str, typer.Argument(help="The user the token acts as (and its role).")],
    name: Annotated[str, typer.Option("--name", help="A label to tell tokens apart.")] = "cli",
    config_path: ConfigOpt = DEFAULT_CONFIG,
    as_json: JsonOpt = False,
) -> None:
    """Create an API token (printed once; roomkey keeps only its hash)."""
    out = make_output(as_json)
    with handle_errors(out):
        config = load_cli_config(config_path)
        from roomkey.cli.service_cmds import _database, _run
        from roomkey.web.users import UserError, create_token

        async def go() -> dict[str, Any]:
            async with _database(config) as sessions, sessions() as session, session.begin():
                try:
                    row, token = await create_token(session, username, name, now=_now())
                except UserError as exc:
                    fail(str(exc), ExitCode.NOT_FOUND)
                return {"name": row.name, "user": username, "token": token}

        data = _run(go())
        # The token is the answer itself: print it raw (output redaction would mask it).
        if out.json:
            import json

            sys.stdout.write(json.dumps(data) + "\n")
        else:
            sys.stdout.write(f"{data['token']}\n")
            out.note(f"token {data['name']!r} for {username}: store it now, it is not shown again")


def register(app: typer.Typer, sim_app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
    app.add_typer(token_app, name="token")
