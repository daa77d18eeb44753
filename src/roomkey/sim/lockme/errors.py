"""Errors raised by simulator operations; the HTTP layers turn them into JSON answers."""

from __future__ import annotations

__all__ = ["BadRequest", "Conflict", "NotFound", "Refused", "SimError"]


class SimError(Exception):
    """A simulator operation refused its input; ``status`` is the HTTP status to answer with."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(SimError):
    """Malformed or invalid input (400)."""

    status = 400


class NotFound(SimError):
    """Unknown room, reservation, message, department, ... (404)."""

    status = 404


class Conflict(SimError):
    """The slot is taken or the extid is already used in the room (409)."""

    status = 409


class Refused(SimError):
    """The operation is not allowed for this object, e.g. deleting a Lockme-paid booking (409)."""

    status = 409
