"""Small request/response helpers shared by the simulator's routes."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["BadRequest", "json_error", "raw_query", "read_json_object"]


class BadRequest(Exception):
    """Malformed input; answered with 400 and a short reason."""


def raw_query(request: Request) -> dict[str, str]:
    """Parse the raw query string: percent-decoding only, so ``+`` stays ``+``.

    A standard form parser would turn ``+`` (base64) into a space. Both ``/`` and ``%2F``
    decode to ``/``. The first occurrence of a name wins.
    """
    raw = request.scope.get("query_string", b"")
    text = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    out: dict[str, str] = {}
    for part in text.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        key = unquote(name, errors="replace")
        if key not in out:
            out[key] = unquote(value, errors="replace")
    return out


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or :class:`BadRequest`."""
    body = await request.body()
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
