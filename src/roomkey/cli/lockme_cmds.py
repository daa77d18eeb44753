"""``roomkey lockme``: log in to Lockme (OAuth2 authorization code) and try the API.

``login`` starts a tiny loopback listener on the redirect URI's port, sends you (or, with
``--fetch``, itself: for the simulator, whose /authorize auto-approves) to the authorization
URL, catches ``code`` + ``state``, checks the state, exchanges the code and saves the token.
``test``, ``me`` and ``rooms`` use that token (refreshing it when due). Tokens and the client
secret are never printed.

Two ways to say where the token goes:

* ``--config PATH`` (the service's TOML; or ``$ROOMKEY_CONFIG`` when neither ``--config`` nor
  ``--client-id`` is given): the ``[lockme]`` client settings come from the file and the token
  is saved exactly where the service reads it (by default encrypted in its database, shared by
  every replica; needs ``ROOMKEY_SECRET_KEY`` and a migrated database).
* the flags ``--client-id``, ``--client-secret``, ``--token-file``, …: standalone SDK use, a
  plain 0600 token file (default ``$XDG_CONFIG_HOME/roomkey/lockme-token.json``).
"""

from __future__ import annotations

import contextlib
import html
import ipaddress
import json
import os
import queue
import threading
import webbrowser
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import typer
from sqlalchemy.engine import make_url

from roomkey.lockme import (
    DEFAULT_API_DOMAIN,
    DEFAULT_VERSION,
    FileTokenStore,
    LockmeClient,
    LockmeError,
    OAuthConfig,
    TokenStore,
)

__all__ = ["default_token_file", "register"]

_ENV = "ROOMKEY_LOCKME_"
CONFIG_ENV = "ROOMKEY_CONFIG"
DEFAULT_REDIRECT_URI = "http://127.0.0.1:8080/callback"


_T = TypeVar("_T")

def default_token_file() -> Path:
    """``$XDG_CONFIG_HOME/roomkey/lockme-token.json`` (``~/.config`` by default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "roomkey" / "lockme-token.json"


ClientId = Annotated[
    str | None,
    typer.Option(
        envvar=_ENV + "CLIENT_ID",
        help="OAuth client (App) id from the Cockpit (required without --config).",
        show_default=False,
    ),
]
ClientSecret = Annotated[
    str,
    typer.Option(
        envvar=_ENV + "CLIENT_SECRET",
        help="OAuth client secret (prefer the environment variable).",
        show_default=False,
    ),
]
RedirectUri = Annotated[
    str, typer.Option(envvar=_ENV + "REDIRECT_URI", help="Registered redirect URI (loopback).")
]
ApiDomain = Annotated[str, typer.Option(envvar=_ENV + "API_DOMAIN", help="Lockme API domain.")]
ApiVersion = Annotated[
    str, typer.Option("--api-version", envvar=_ENV + "API_VERSION", help="REST API version.")
]
TokenFile = Annotated[
    Path | None,
    typer.Option(
        envvar=_ENV + "TOKEN_FILE",
        help="Token file (default: $XDG_CONFIG_HOME/roomkey/lockme-token.json).",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ServiceConfig = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="roomkey's configuration file: use its [lockme] settings and the service's token "
        "store (the database by default; needs ROOMKEY_SECRET_KEY). Replaces the other flags. "
        "Without --config and --client-id: $ROOMKEY_CONFIG, if set.",
        show_default=False,
    ),
]


def _config(
    client_id: str, client_secret: str, redirect_uri: str, api_domain: str, api_version: str
) -> OAuthConfig:
    try:
        return OAuthConfig(
            client_id=client_id,
            client_secret=client_secret,
            redirect_uri=redirect_uri,
            api_domain=api_domain,
            version=api_version,
        )
    except LockmeError as exc:
        raise typer.BadParameter(str(exc)) from None


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
    return typer.Exit(1)


@contextlib.contextmanager
def _client(config: OAuthConfig, store: TokenStore) -> Iterator[LockmeClient]:
    try:
        with LockmeClient(config, store) as client:
            yield client
    finally:
        close = getattr(store, "close", None)  # the database store's connections
        if callable(close):
            close()


def _target(
    service_config: Path | None,
    client_id: str | None,
    client_secret: str,
    redirect_uri: str,
    api_domain: str,
    api_version: str,
    token_file: Path | None,
) -> tuple[OAuthConfig, TokenStore]:
    """The OAuth settings and token store: from the service's config, or from the flags."""
    if service_config is None and not client_id and os.environ.get(CONFIG_ENV):
        service_config = Path(os.environ[CONFIG_ENV])
    if service_config is not None:
        return _service_target(service_config)
    if not client_id:
        raise typer.BadParameter("give --client-id (or --config PATH)", param_hint="--client-id")
    config = _config(client_id, client_secret, redirect_uri, api_domain, api_version)
    return config, FileTokenStore(token_file or default_token_file())


def _call(
    call: Callable[[LockmeClient], _T],
    service_config: Path | None,
    client_id: str | None,
    client_secret: str,
    redirect_uri: str,
    api_domain: str,
    api_version: str,
    token_file: Path | None,
) -> _T:
    """Run one API call with the resolved settings; SDK errors become a clean exit 1."""
    config, store = _target(
        service_config, client_id, client_secret, redirect_uri, api_domain, api_version,
        token_file,
    )
    try:
        with _client(config, store) as client:
            return call(client)
    except LockmeError as exc:
        raise _fail(exc) from None


def _service_target(path: Path) -> tuple[OAuthConfig, TokenStore]:
    """``[lockme]`` of the service's config and the store the service itself uses."""
    import asyncio

    from roomkey.cli.service_cmds import load_cli_config
    from roomkey.service.config import ConfigError
    from roomkey.service.crypto import CryptoError, SecretBox
    from roomkey.service.db.engine import redact_url
    from roomkey.service.db.migrate import current_revision, head_revision
    from roomkey.service.lockme_gateway import oauth_config, token_store
    from roomkey.service.lockme_token_store import DatabaseTokenStore

    try:
        config = load_cli_config(path)
        box = SecretBox.from_env()
    except (ConfigError, CryptoError) as exc:
        raise _fail(exc) from None
    url = config.service.db_url()
    store = token_store(config, box, url)
    if isinstance(store, DatabaseTokenStore):
        parsed = make_url(url)
        database = parsed.database or ""
        missing = parsed.get_backend_name() == "sqlite" and not Path(database).exists()
        try:
            revision = None if missing else asyncio.run(current_revision(url))
        except Exception as exc:  # unreachable server, bad credentials, ...
            typer.echo(
                f"error: cannot read the database {redact_url(url)} ({type(exc).__name__})",
                err=True,
            )
            raise typer.Exit(1) from None
        if revision != head_revision():
            typer.echo(
                "error: the database is not at this roomkey's schema; run "
                "`roomkey db upgrade --config ...` first",
                err=True,
            )
            raise typer.Exit(1)
    return oauth_config(config), store


def _where(store: TokenStore) -> str:
    location = getattr(store, "location", None)
    if isinstance(location, str):
        return location
    path = getattr(store, "path", None)
    return str(path) if path is not None else "the token store"


# ---------------------------------------------------------------- loopback redirect listener


class _Callback:
    """The first request to the redirect path that carries ``code``/``state`` or ``error``."""

    def __init__(self, path: str) -> None:
        self.path = path or "/"
        self.result: queue.Queue[dict[str, str]] = queue.Queue(maxsize=1)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        callback = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return  # the query holds the authorization code: never log it

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if parts.path != callback.path or not (
                    ("code" in query and "state" in query) or "error" in query
                ):
                    self._answer(404, "Not the Lockme redirect.")
                    return
                with contextlib.suppress(queue.Full):
                    callback.result.put_nowait(query)
                if "error" in query:
                    self._answer(400, f"Lockme refused: {query['error']}")
                else:
                    self._answer(200, "Lockme login received. You can close this window.")

            def _answer(self, status: int, text: str) -> None:
                body = f"<!doctype html><title>roomkey</title><p>{html.escape(text)}</p>".encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


def _loopback_listener(redirect_uri: str) -> tuple[ThreadingHTTPServer, _Callback]:
    parts = urlsplit(redirect_uri)
    host = parts.hostname or ""
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if parts.scheme != "http" or not loopback:
        raise typer.BadParameter(
            "login needs an http://127.0.0.1:PORT/... (loopback) redirect URI",
            param_hint="--redirect-uri",
        )
    callback = _Callback(parts.path)
    try:
        server = ThreadingHTTPServer((host, parts.port or 80), callback.handler())
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot listen on {host}:{parts.port or 80} ({exc.strerror})",
            param_hint="--redirect-uri",
        ) from None
    server.daemon_threads = True
    return server, callback


# ---------------------------------------------------------------- commands


def register(app: typer.Typer, sim_app: typer.Typer) -> None:
    """Add the ``roomkey lockme`` group."""
    lockme_app = typer.Typer(help="Lockme partner API: log in and try calls.", no_args_is_help=True)
    app.add_typer(lockme_app, name="lockme")

    @lockme_app.command("login")
    def login(
        client_id: ClientId = None,
        client_secret: ClientSecret = "",
        redirect_uri: RedirectUri = DEFAULT_REDIRECT_URI,
        api_domain: ApiDomain = DEFAULT_API_DOMAIN,
        api_version: ApiVersion = DEFAULT_VERSION,
        token_file: TokenFile = None,
        browser: Annotated[
            bool, typer.Option(help="Open the authorization URL in a web browser.")
        ] = True,
        fetch: Annotated[
            bool,
            typer.Option(
                "--fetch",
                help="Request the authorization URL from this process (for the simulator, "
                "which auto-approves) instead of a browser.",
            ),
        ] = False,
        timeout: Annotated[float, typer.Option(help="Seconds to wait for the redirect.")] = 300.0,
        service_config: ServiceConfig = None,
    ) -> None:
        """Authorization-code login through a loopback redirect; saves the token (with
        --config: where the service reads it)."""
        config, store = _target(
            service_config, client_id, client_secret, redirect_uri, api_domain, api_version,
            token_file,
        )
        if service_config is None and not client_secret:
            raise typer.BadParameter(
                "give --client-secret (or --config PATH)", param_hint="--client-secret"
            )
        server, callback = _loopback_listener(config.redirect_uri)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            with _client(config, store) as client:
                url, state = client.authorization_url()
                typer.echo(f"Authorize roomkey at:\n  {url}")
                if fetch:
                    try:
                        httpx.get(url, follow_redirects=True, timeout=30.0)
                    except httpx.HTTPError as exc:
                        raise _fail(exc) from None
                elif browser:
                    webbrowser.open(url)
                try:
                    query = callback.result.get(timeout=timeout)
                except queue.Empty:
                    typer.echo("error: no redirect received in time", err=True)
                    raise typer.Exit(1) from None
                if "error" in query:
                    typer.echo(f"error: Lockme refused: {query['error']}", err=True)
                    raise typer.Exit(1)
                try:
                    token = client.fetch_token(
                        query["code"], state=query.get("state"), expected_state=state
                    )
                    user = client.me()
                except LockmeError as exc:
                    raise _fail(exc) from None
                typer.echo(
                    f"Logged in as {user.nick or user.userid}; token saved to {_where(store)}"
                    + (f" (expires at {token.expires:.0f})" if token.expires else "")
                )
        finally:
            server.shutdown()
            server.server_close()

    @lockme_app.command("test")
    def test(
        client_id: ClientId = None,
        client_secret: ClientSecret = "",
        redirect_uri: RedirectUri = DEFAULT_REDIRECT_URI,
        api_domain: ApiDomain = DEFAULT_API_DOMAIN,
        api_version: ApiVersion = DEFAULT_VERSION,
        token_file: TokenFile = None,
        as_json: AsJson = False,
        service_config: ServiceConfig = None,
    ) -> None:
        """Call GET /test (Lockme answers OK)."""
        result = _call(
            lambda client: client.test(),
            service_config, client_id, client_secret, redirect_uri, api_domain, api_version,
            token_file,
        )
        typer.echo(json.dumps(result) if as_json else result)

    @lockme_app.command("me")
    def me(
        client_id: ClientId = None,
        client_secret: ClientSecret = "",
        redirect_uri: RedirectUri = DEFAULT_REDIRECT_URI,
        api_domain: ApiDomain = DEFAULT_API_DOMAIN,
        api_version: ApiVersion = DEFAULT_VERSION,
        token_file: TokenFile = None,
        as_json: AsJson = False,
        service_config: ServiceConfig = None,
    ) -> None:
        """Call GET /me (the account the token belongs to)."""
        user = _call(
            lambda client: client.me(),
            service_config, client_id, client_secret, redirect_uri, api_domain, api_version,
            token_file,
        )
        if as_json:
            typer.echo(json.dumps(user.model_dump(mode="json")))
        else:
            typer.echo(f"{user.nick} (user id {user.userid})")

    @lockme_app.command("rooms")
    def rooms(
        client_id: ClientId = None,
        client_secret: ClientSecret = "",
        redirect_uri: RedirectUri = DEFAULT_REDIRECT_URI,
        api_domain: ApiDomain = DEFAULT_API_DOMAIN,
        api_version: ApiVersion = DEFAULT_VERSION,
        token_file: TokenFile = None,
        as_json: AsJson = False,
        service_config: ServiceConfig = None,
    ) -> None:
        """Call GET /rooms."""
        found = _call(
            lambda client: client.list_rooms(),
            service_config, client_id, client_secret, redirect_uri, api_domain, api_version,
            token_file,
        )
        if as_json:
            payload = [room.model_dump(mode="json", by_alias=True) for room in found]
            typer.echo(json.dumps(payload))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table("roomid", "room", "department")
        for room in found:
            table.add_row(str(room.roomid), room.room or "", room.department or "")
        Console().print(table)
