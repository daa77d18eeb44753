"""roomkey.loqed — a typed, sync + async SDK for LOQED smart locks.

Surfaces: the local bridge (:class:`BridgeClient`), the Integrations API
(:class:`CloudClient`), the app.loqed.com "incoming webhook" API (:class:`AppApiClient`),
the event parser (:func:`parse_event`) and bridge webhook verification
(:func:`verify_bridge_webhook`), and a persisted :class:`StatusBudget` for rate-limited
status reads. Imports nothing else from roomkey.
"""

from .app_api import AppApiClient, AsyncAppApiClient
from .bridge import AsyncBridgeClient, BridgeClient
from .budget import StatusBudget
from .cloud import AsyncCloudClient, CloudClient
from .errors import (
    ApiError,
    BadSignatureError,
    InvalidPayloadError,
    InvalidRequestError,
    KeyRevokedError,
    LoqedError,
    MaybeDeliveredError,
    MissingTimestampError,
    NotFoundError,
    NotSentError,
    RateLimitedError,
    ServerError,
    StaleTimestampError,
    StatusBudgetExhaustedError,
    TransportError,
    UnauthorizedError,
    WebhookVerificationError,
)
from .events import EventKind, EventSource, LockEvent, parse_event, verify_bridge_webhook
from .models import (
    BoltState,
    BridgeWebhook,
    CloudKey,
    CloudLock,
    CloudWebhook,
    LockStatus,
    WebhookTriggers,
    parse_bolt_state,
)
from .signing import Action

__all__ = [
    "Action",
    "ApiError",
    "AppApiClient",
    "AsyncAppApiClient",
    "AsyncBridgeClient",
    "AsyncCloudClient",
    "BadSignatureError",
    "BoltState",
    "BridgeClient",
    "BridgeWebhook",
    "CloudClient",
    "CloudKey",
    "CloudLock",
    "CloudWebhook",
    "EventKind",
    "EventSource",
    "InvalidPayloadError",
    "InvalidRequestError",
    "KeyRevokedError",
    "LockEvent",
    "LockStatus",
    "LoqedError",
    "MaybeDeliveredError",
    "MissingTimestampError",
    "NotFoundError",
    "NotSentError",
    "RateLimitedError",
    "ServerError",
    "StaleTimestampError",
    "StatusBudget",
    "StatusBudgetExhaustedError",
    "TransportError",
    "UnauthorizedError",
    "WebhookTriggers",
    "WebhookVerificationError",
    "parse_bolt_state",
    "parse_event",
    "verify_bridge_webhook",
]
