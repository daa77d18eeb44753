"""The OAuth2 authorization server: clients, codes, access and rotating refresh tokens.

Modelled on PHP league/oauth2-server (which Lockme's error style matches): single-use
authorization codes, refresh tokens that are rotated on every use (the old refresh token and
its access token are revoked), errors as ``{error, error_description, message}``. Lifetimes are
configurable; the defaults (1 h access, 30 d refresh, 10 min code) are league's and only a guess
for the real server.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from roomkey.sim.lockme.models import OAuthClient

__all__ = [
    "AuthorizeRequest",
    "BearerError",
    "GrantEvent",
    "OAuthError",
    "OAuthServer",
    "OAuthSettings",
    "TokenRecord",
    "split_scopes",
]

_SCOPE_SPLIT = re.compile(r"[\s,]+")


def split_scopes(value: str | None) -> tuple[str, ...]:
    """Split a scope string on spaces or commas (both separators occur in the wild)."""
    if not value:
        return ()
    return tuple(s for s in _SCOPE_SPLIT.split(value.strip()) if s)


class OAuthError(Exception):
    """An OAuth protocol error; ``to_wire`` is the JSON body the server answers with."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def to_wire(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description,
                "message": self.description}


class BearerError(Exception):
    """A resource request without a usable access token (401) or without the scope (403)."""

    def __init__(self, message: str, *, error: str = "access_denied", status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.error = error
        self.status = status


@dataclass
class OAuthSettings:
    """Tunable behaviour of the authorization server."""

    access_ttl: float = 3600.0
    refresh_ttl: float = 30 * 86400.0
    code_ttl: float = 600.0
    known_scopes: tuple[str, ...] = ("rooms_manage",)
    default_scopes: tuple[str, ...] = ("rooms_manage",)
    auto_approve: bool = True


@dataclass
class AuthorizeRequest:
    """A validated ``/authorize`` request."""

    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None


@dataclass
class _Code:
    code: str = field(repr=False)
    client_id: str
    user_id: int
    redirect_uri: str
    scopes: tuple[str, ...]
    expires_at: float
    used: bool = False
    access_tokens: list[str] = field(default_factory=list, repr=False)


@dataclass
class TokenRecord:
    """An issued access token (the string itself is kept out of ``repr``)."""

    access_token: str = field(repr=False)
    client_id: str
    user_id: int
    scopes: tuple[str, ...]
    issued_at: float
    expires_at: float
    revoked: bool = False


@dataclass
class _Refresh:
    refresh_token: str = field(repr=False)
    access_token: str = field(repr=False)
    client_id: str
    user_id: int
    scopes: tuple[str, ...]
    expires_at: float
    used: bool = False


@dataclass
class GrantEvent:
    """One ``/access_token`` request as the server saw it (for tests and the control API)."""

    at: float
    grant_type: str
    client_id: str | None
    ok: bool
    error: str | None = None

    def to_control(self) -> dict[str, Any]:
        return {"at": self.at, "grant_type": self.grant_type, "client_id": self.client_id,
                "ok": self.ok, "error": self.error}


class OAuthServer:
    """State and rules of the OAuth2 server; the routes in ``oauth_routes`` call into it."""

    def __init__(self, clock: Callable[[], float], settings: OAuthSettings | None = None) -> None:
        self._clock = clock
        self.settings = settings or OAuthSettings()
        self.clients: dict[str, OAuthClient] = {}
        self._codes: dict[str, _Code] = {}
        self._access: dict[str, TokenRecord] = {}
        self._refresh: dict[str, _Refresh] = {}
        self.grants: list[GrantEvent] = []

    # -- clients -------------------------------------------------------------------------
    def add_client(self, client: OAuthClient) -> OAuthClient:
        self.clients[client.client_id] = client
        return client

    # -- authorize -----------------------------------------------------------------------
    def check_authorize(self, params: Mapping[str, str]) -> AuthorizeRequest:
        """Validate an authorization request.

        Raises :class:`OAuthError`; its ``status`` is 400 when the error must be shown to the
        user (unknown client, bad redirect URI) and 302 when it may be sent back to the
        (verified) redirect URI.
        """
        client_id = params.get("client_id")
        if not client_id:
            raise OAuthError("invalid_request", "The request is missing the client_id parameter")
        client = self.clients.get(client_id)
        if client is None:
            raise OAuthError("invalid_client", "Client authentication failed", status=401)
        redirect_uri = params.get("redirect_uri") or client.redirect_uri
        if redirect_uri != client.redirect_uri:
            raise OAuthError("invalid_client", "The redirect_uri does not match the registered one",
                             status=401)
        state = params.get("state")
        response_type = params.get("response_type")
        if response_type != "code":
            raise OAuthError("unsupported_response_type",
                             "The authorization server only supports response_type=code",
                             status=302)
        scopes = split_scopes(params.get("scope")) or self.settings.default_scopes
        for scope in scopes:
            if scope not in self.settings.known_scopes:
                raise OAuthError("invalid_scope", f"The requested scope is invalid: {scope}",
                                 status=302)
        return AuthorizeRequest(client_id, redirect_uri, tuple(scopes), state)

    def issue_code(self, request: AuthorizeRequest, user_id: int) -> str:
        code = secrets.token_urlsafe(32)
        self._codes[code] = _Code(code, request.client_id, user_id, request.redirect_uri,
                                  request.scopes, self._clock() + self.settings.code_ttl)
        return code

    # -- token endpoint -------------------------------------------------------------------
    def token_request(self, form: Mapping[str, str], authorization: str | None) -> dict[str, Any]:
        """Handle a ``/access_token`` request; returns the token JSON or raises OAuthError."""
        grant_type = form.get("grant_type", "")
        client_id: str | None = form.get("client_id")
        try:
            client = self._authenticate_client(form, authorization)
            client_id = client.client_id
            if not grant_type:
                raise OAuthError("invalid_request",
                                 "The request is missing the grant_type parameter")
            if grant_type == "authorization_code":
                result = self._grant_code(client, form)
            elif grant_type == "refresh_token":
                result = self._grant_refresh(client, form)
            else:
                raise OAuthError("unsupported_grant_type",
                                 "The authorization grant type is not supported")
        except OAuthError as exc:
            self.grants.append(GrantEvent(self._clock(), grant_type, client_id, False, exc.error))
            raise
        self.grants.append(GrantEvent(self._clock(), grant_type, client_id, True))
        return result

    def _authenticate_client(self, form: Mapping[str, str],
                             authorization: str | None) -> OAuthClient:
        client_id = form.get("client_id")
        secret = form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            try:
                raw = base64.b64decode(authorization[6:].strip(), validate=True).decode()
                basic_id, _, basic_secret = raw.partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise OAuthError("invalid_client", "Client authentication failed",
                                 status=401) from None
            client_id = client_id or unquote(basic_id)
            secret = secret or unquote(basic_secret)
        if not client_id:
            raise OAuthError("invalid_request", "The request is missing the client_id parameter")
        client = self.clients.get(client_id)
        if client is None or secret is None or not secrets.compare_digest(
            secret.encode(), client.client_secret.encode()
        ):
            raise OAuthError("invalid_client", "Client authentication failed", status=401)
        return client

    def _grant_code(self, client: OAuthClient, form: Mapping[str, str]) -> dict[str, Any]:
        code_value = form.get("code")
        if not code_value:
            raise OAuthError("invalid_request", "The request is missing the code parameter")
        code = self._codes.get(code_value)
        if code is None or code.client_id != client.client_id:
            raise OAuthError("invalid_grant", "Authorization code is invalid")
        if code.used:
            # RFC 6749 §4.1.2: a replayed code revokes what it produced.
            for token in code.access_tokens:
                self._revoke_access(token)
            raise OAuthError("invalid_grant", "Authorization code has been revoked")
        if self._clock() >= code.expires_at:
            raise OAuthError("invalid_grant", "Authorization code has expired")
        if form.get("redirect_uri", code.redirect_uri) != code.redirect_uri:
            raise OAuthError("invalid_grant", "The redirect_uri does not match the one used")
        code.used = True
        issued = self.issue_token(client.client_id, code.user_id, code.scopes)
        code.access_tokens.append(str(issued["access_token"]))
        return issued

    def _grant_refresh(self, client: OAuthClient, form: Mapping[str, str]) -> dict[str, Any]:
        value = form.get("refresh_token")
        if not value:
            raise OAuthError("invalid_request",
                             "The request is missing the refresh_token parameter")
        record = self._refresh.get(value)
        if record is None or record.client_id != client.client_id:
            raise OAuthError("invalid_grant", "The refresh token is invalid")
        if record.used:
            raise OAuthError("invalid_grant", "The refresh token has been revoked")
        if self._clock() >= record.expires_at:
            raise OAuthError("invalid_grant", "The refresh token has expired")
        scopes = record.scopes
        requested = split_scopes(form.get("scope"))
        if requested:
            extra = [s for s in requested if s not in record.scopes]
            if extra:
                raise OAuthError("invalid_scope", f"The requested scope is invalid: {extra[0]}")
            scopes = requested
        record.used = True
        self._revoke_access(record.access_token)
        return self.issue_token(client.client_id, record.user_id, scopes)

    # -- tokens --------------------------------------------------------------------------
    def issue_token(self, client_id: str, user_id: int,
                    scopes: Iterable[str] | None = None) -> dict[str, Any]:
        """Mint an access + refresh token pair; returns the token endpoint's JSON."""
        now = self._clock()
        scope_tuple = tuple(self.settings.default_scopes if scopes is None else scopes)
        access = secrets.token_urlsafe(32)
        refresh = secrets.token_urlsafe(48)
        self._access[access] = TokenRecord(access, client_id, user_id, scope_tuple, now,
                                           now + self.settings.access_ttl)
        self._refresh[refresh] = _Refresh(refresh, access, client_id, user_id, scope_tuple,
                                          now + self.settings.refresh_ttl)
        expires_in = int(self.settings.access_ttl)
        return {"token_type": "Bearer", "expires_in": expires_in, "access_token": access,
                "refresh_token": refresh}

    def _revoke_access(self, token: str) -> None:
        record = self._access.get(token)
        if record is not None:
            record.revoked = True

    def authenticate(self, authorization: str | None, *, scope: str | None) -> TokenRecord:
        """Check a ``Authorization: Bearer`` header; raises :class:`BearerError`."""
        if not authorization:
            raise BearerError('Missing "Authorization" header')
        kind, _, value = authorization.partition(" ")
        value = value.strip()
        if kind.lower() != "bearer" or not value:
            raise BearerError("The Authorization header must be a Bearer token")
        record = self._access.get(value)
        if record is None:
            raise BearerError("The access token is invalid")
        if record.revoked:
            raise BearerError("Access token has been revoked")
        if self._clock() >= record.expires_at:
            raise BearerError("Access token has expired")
        if scope is not None and scope not in record.scopes:
            raise BearerError(f"The access token lacks the {scope} scope",
                              error="insufficient_scope", status=403)
        return record

    def expire_all(self, *, refresh: bool = False) -> int:
        """Expire every access token now (and refresh tokens too if asked); returns a count."""
        now = self._clock()
        count = 0
        for record in self._access.values():
            if record.expires_at > now:
                record.expires_at = now
                count += 1
        if refresh:
            for r in self._refresh.values():
                r.expires_at = min(r.expires_at, now)
        return count

    def token_records(self) -> list[TokenRecord]:
        return list(self._access.values())
