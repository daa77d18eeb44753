"""OAuth2 authorization-code flow pieces for Lockme (pure: no I/O).

Lockme's endpoints are unversioned (``{api_domain}/authorize``, ``{api_domain}/access_token``);
REST calls go to ``{api_domain}/{version}/...``. Token requests are form-encoded with the client
credentials in the body (as league/oauth2-client sends them). Authlib builds the URL and bodies.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from authlib.oauth2.rfc6749.parameters import (  # type: ignore[import-untyped]
    prepare_grant_uri,
    prepare_token_request,
)

from .errors import InvalidRequestError, StateMismatchError

__all__ = [
    "DEFAULT_API_DOMAIN",
    "DEFAULT_SCOPES",
    "DEFAULT_VERSION",
    "OAuthConfig",
    "authorization_url",
    "check_state",
    "code_grant_body",
    "new_state",
    "refresh_grant_body",
]

DEFAULT_API_DOMAIN = "https://api.lock.me"
DEFAULT_VERSION = "v2.4"
DEFAULT_SCOPES: tuple[str, ...] = ("rooms_manage",)


@dataclass(frozen=True)
class OAuthConfig:
    """An app registered in the Lockme Cockpit. ``client_secret`` is hidden from ``repr``."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    api_domain: str = DEFAULT_API_DOMAIN
    version: str = DEFAULT_VERSION
    scopes: tuple[str, ...] = DEFAULT_SCOPES

    def __post_init__(self) -> None:
        if not self.client_id:
            raise InvalidRequestError("client_id is required")
        if not self.api_domain.startswith(("http://", "https://")):
            raise InvalidRequestError("api_domain must be an http(s) URL")
        if not self.version or "/" in self.version:
            raise InvalidRequestError("version must look like 'v2.4'")
        object.__setattr__(self, "api_domain", self.api_domain.rstrip("/"))

    @property
    def authorize_endpoint(self) -> str:
        return f"{self.api_domain}/authorize"

    @property
    def token_endpoint(self) -> str:
        return f"{self.api_domain}/access_token"

    @property
    def api_base(self) -> str:
        """Prefix of every REST call, e.g. ``https://api.lock.me/v2.4``."""
        return f"{self.api_domain}/{self.version}"


def new_state() -> str:
    """32 random hex characters, like the PHP provider's state."""
    return secrets.token_hex(16)


def authorization_url(
    config: OAuthConfig, *, state: str | None = None, scopes: Sequence[str] | None = None
) -> tuple[str, str]:
    """Return ``(url, state)`` for sending the user to Lockme's consent page."""
    state = state or new_state()
    scope_list = list(scopes) if scopes else list(config.scopes)
    url = prepare_grant_uri(
        config.authorize_endpoint,
        client_id=config.client_id,
        response_type="code",
        redirect_uri=config.redirect_uri,
        scope=" ".join(scope_list),
        state=state,
        approval_prompt="auto",
    )
    return str(url), state


def check_state(expected: str | None, received: str | None) -> None:
    """Constant-time state comparison; any mismatch (or a missing value) raises."""
    if not expected or not received:
        raise StateMismatchError("OAuth state missing")
    if not hmac.compare_digest(expected.encode("utf-8"), received.encode("utf-8")):
        raise StateMismatchError("OAuth state does not match the one issued")


def code_grant_body(config: OAuthConfig, code: str) -> str:
    """Form body of the authorization_code grant."""
    if not code:
        raise InvalidRequestError("authorization code is empty")
    return str(
        prepare_token_request(
            "authorization_code",
            code=code,
            client_id=config.client_id,
            client_secret=config.client_secret,
            redirect_uri=config.redirect_uri,
        )
    )


def refresh_grant_body(config: OAuthConfig, refresh_token: str) -> str:
    """Form body of the refresh_token grant."""
    return str(
        prepare_token_request(
            "refresh_token",
            refresh_token=refresh_token,
            client_id=config.client_id,
            client_secret=config.client_secret,
            redirect_uri=config.redirect_uri,
        )
    )
