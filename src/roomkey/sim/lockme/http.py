"""Small helpers shared by the simulator's route modules: JSON answers and body parsing."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from roomkey.sim.lockme.errors import BadRequest, SimError
from roomkey.sim.lockme.oauth import BearerError

__all__ = ["Handler", "json_body", "json_response", "sim_errors"]

Handler = Callable[[Request], Awaitable[Response]]


def json_response(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


async def json_body(request: Request, *, default: Any = None) -> Any:
    """The parsed JSON body; ``default`` when empty; 400 when not JSON."""
    raw = await request.body()
    if not raw.strip():
        return default
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("Request body is not valid JSON") from None


def sim_errors(handler: Handler) -> Handler:
    """Turn simulator and bearer errors into JSON answers (never a 500 for bad input)."""

    @wraps(handler)
    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except BearerError as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return JSONResponse({"message": exc.message, "error": exc.error},
                                status_code=exc.status, headers=headers)
        except SimError as exc:
            return json_response({"message": exc.message}, exc.status)

    return wrapper
