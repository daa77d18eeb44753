"""Small helpers for handling secrets and URLs without ever printing them."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from .errors import InvalidRequestError
from .signing import CommandFormatError, decode_key

__all__ = ["SecretLike", "check_key", "normalise_base_url", "reveal", "secret"]

SecretLike = str | SecretStr


def secret(value: SecretLike | None) -> SecretStr | None:
    """Wrap ``value`` in :class:`SecretStr` (None stays None)."""
    if value is None or isinstance(value, SecretStr):
        return value
    return SecretStr(value)


def reveal(value: SecretStr) -> str:
    return value.get_secret_value()


def check_key(value: SecretStr | None, name: str) -> None:
    """Fail early (before any request) when a base64 key does not decode."""
    if value is None:
        return
    try:
        decode_key(reveal(value))
    except CommandFormatError:
        raise InvalidRequestError(f"{name} is not a valid non-empty base64 key") from None


def normalise_base_url(base_url: str, *, default_scheme: str = "http") -> str:
    """``10.0.0.5`` → ``http://10.0.0.5``; trailing slashes removed; validated."""
    text = base_url.strip()
    if "://" not in text:
        text = f"{default_scheme}://{text}"
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise InvalidRequestError("base_url is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidRequestError("base_url must be an http(s) URL with a host")
    return text.rstrip("/")
