"""A faithful offline Lockme API server: OAuth2, REST v2.0–v2.4, webhooks, traffic, faults.

>>> from roomkey.sim.clock import SimClock
>>> sim = LockmeSimulator(SimClock(manual=True, start=0))
>>> sim.app  # doctest: +SKIP
"""

from roomkey.sim.lockme.errors import BadRequest, Conflict, NotFound, Refused, SimError
from roomkey.sim.lockme.faults import FaultRule, Faults
from roomkey.sim.lockme.models import (
    DeliveryAttempt,
    Department,
    Message,
    OAuthClient,
    Pricer,
    Reservation,
    Room,
    User,
)
from roomkey.sim.lockme.oauth import OAuthServer, OAuthSettings
from roomkey.sim.lockme.simulator import CART_HOLD_SECONDS, LockmeSimulator
from roomkey.sim.lockme.webhooks import DEFAULT_SCHEDULE, USER_AGENT

__all__ = [
    "CART_HOLD_SECONDS",
    "DEFAULT_SCHEDULE",
    "USER_AGENT",
    "BadRequest",
    "Conflict",
    "DeliveryAttempt",
    "Department",
    "FaultRule",
    "Faults",
    "LockmeSimulator",
    "Message",
    "NotFound",
    "OAuthClient",
    "OAuthServer",
    "OAuthSettings",
    "Pricer",
    "Refused",
    "Reservation",
    "Room",
    "SimError",
    "User",
]
