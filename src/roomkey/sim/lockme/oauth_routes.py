"""HTTP face of the OAuth2 server: ``/authorize`` (with a consent page) and ``/access_token``."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from roomkey.sim.lockme.oauth import AuthorizeRequest, OAuthError

if TYPE_CHECKING:
    from roomkey.sim.lockme.simulator import LockmeSimulator

__all__ = ["oauth_routes"]

_AUTHORIZE_FIELDS = ("client_id", "redirect_uri", "response_type", "scope", "state")

_CONSENT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Lockme simulator: authorize {app}</title>
</head><body>
<h1>Authorize {app}</h1>
<p>The application <strong>{app}</strong> asks for access to the Lockme account
<strong>{nick}</strong> with the scopes: <code>{scopes}</code>.</p>
<form method="post" action="/authorize">
{hidden}
<button type="submit" name="decision" value="approve">Approve</button>
<button type="submit" name="decision" value="deny">Deny</button>
</form></body></html>
"""


def _with_query(uri: str, params: dict[str, str]) -> str:
    parts = urlsplit(uri)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _redirect(uri: str, params: dict[str, str], state: str | None) -> RedirectResponse:
    if state is not None:
        params["state"] = state
    return RedirectResponse(_with_query(uri, params), status_code=302)


def oauth_routes(sim: LockmeSimulator) -> list[BaseRoute]:
    """``/authorize`` and ``/access_token`` bound to ``sim``."""

    def _check(params: dict[str, str]) -> AuthorizeRequest | Response:
        try:
            return sim.oauth.check_authorize(params)
        except OAuthError as exc:
            if exc.status == 302:  # client and redirect URI are verified: tell the client
                client = sim.oauth.clients[params["client_id"]]
                uri = params.get("redirect_uri") or client.redirect_uri
                return _redirect(uri, {"error": exc.error,
                                             "error_description": exc.description},
                                 params.get("state"))
            return JSONResponse(exc.to_wire(), status_code=exc.status)

    def _approve(req: AuthorizeRequest) -> RedirectResponse:
        code = sim.oauth.issue_code(req, sim.authorize_user_id)
        return _redirect(req.redirect_uri, {"code": code}, req.state)

    async def authorize(request: Request) -> Response:
        if request.method == "POST":
            form = await request.form()
            params = {k: str(v) for k, v in form.items() if isinstance(v, str)}
        else:
            params = dict(request.query_params)
        checked = _check(params)
        if not isinstance(checked, AuthorizeRequest):
            return checked
        if request.method == "POST":
            if params.get("decision") == "approve":
                return _approve(checked)
            return _redirect(checked.redirect_uri,
                             {"error": "access_denied",
                              "error_description": "The resource owner denied the request"},
                             checked.state)
        if sim.oauth.settings.auto_approve:
            return _approve(checked)
        client = sim.oauth.clients[checked.client_id]
        hidden = "\n".join(
            f'<input type="hidden" name="{name}" value="{html.escape(value, quote=True)}">'
            for name, value in (
                ("client_id", checked.client_id), ("redirect_uri", checked.redirect_uri),
                ("response_type", "code"), ("scope", " ".join(checked.scopes)),
                ("state", checked.state or ""),
            ) if name != "state" or checked.state is not None
        )
        page = _CONSENT.format(app=html.escape(client.name),
                               nick=html.escape(sim.users[sim.authorize_user_id].nick),
                               scopes=html.escape(" ".join(checked.scopes)), hidden=hidden)
        return HTMLResponse(page)

    async def access_token(request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("application/x-www-form-urlencoded"):
            err = OAuthError("invalid_request",
                             "The token request must be application/x-www-form-urlencoded")
            return JSONResponse(err.to_wire(), status_code=err.status)
        form = await request.form()
        fields = {k: str(v) for k, v in form.items() if isinstance(v, str)}
        authorization = request.headers.get("authorization")
        try:
            token = sim.oauth.token_request(fields, authorization)
        except OAuthError as exc:
            headers = ({"WWW-Authenticate": 'Basic realm="lockme"'}
                       if exc.status == 401 and authorization else None)
            return JSONResponse(exc.to_wire(), status_code=exc.status, headers=headers)
        return JSONResponse(token, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    return [
        Route("/authorize", authorize, methods=["GET", "POST"]),
        Route("/access_token", access_token, methods=["POST"]),
    ]
