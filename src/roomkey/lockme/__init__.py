"""roomkey.lockme: a typed Python SDK for the Lockme (lock.me) partner API.

OAuth2 with single-flight refresh across threads and processes, sync and async clients for
every endpoint, tolerant pydantic models and a webhook-message helper. See docs/lockme.md.
"""

from .client import AsyncLockmeClient, LockmeClient
from .errors import (
    ApiError,
    AuthError,
    InvalidRequestError,
    InvalidResponseError,
    LockmeError,
    MaybeDeliveredError,
    NotFoundError,
    NoTokenError,
    NotSentError,
    OAuthError,
    RateLimitedError,
    RefusedError,
    ServerError,
    StateMismatchError,
    TransportError,
    ValidationError,
)
from .models import Message, Reservation, Room, Slot, User
from .oauth import (
    DEFAULT_API_DOMAIN,
    DEFAULT_SCOPES,
    DEFAULT_VERSION,
    OAuthConfig,
    authorization_url,
    check_state,
)
from .token import (
    AsyncTokenStore,
    FileTokenStore,
    LockingTokenStore,
    MemoryTokenStore,
    Token,
    TokenStore,
)
from .validation import ext_id
from .webhooks import (
    AsyncMessageHandler,
    AsyncSeenStore,
    Claim,
    MemorySeenStore,
    MessageHandler,
    Outcome,
    SeenStore,
    UnknownActionError,
    parse_message_id,
)

__all__ = [
    "DEFAULT_API_DOMAIN",
    "DEFAULT_SCOPES",
    "DEFAULT_VERSION",
    "ApiError",
    "AsyncLockmeClient",
    "AsyncMessageHandler",
    "AsyncSeenStore",
    "AsyncTokenStore",
    "AuthError",
    "Claim",
    "FileTokenStore",
    "InvalidRequestError",
    "InvalidResponseError",
    "LockingTokenStore",
    "LockmeClient",
    "LockmeError",
    "MaybeDeliveredError",
    "MemorySeenStore",
    "MemoryTokenStore",
    "Message",
    "MessageHandler",
    "NoTokenError",
    "NotFoundError",
    "NotSentError",
    "OAuthConfig",
    "OAuthError",
    "Outcome",
    "RateLimitedError",
    "RefusedError",
    "Reservation",
    "Room",
    "SeenStore",
    "ServerError",
    "Slot",
    "StateMismatchError",
    "Token",
    "TokenStore",
    "TransportError",
    "UnknownActionError",
    "User",
    "ValidationError",
    "authorization_url",
    "check_state",
    "ext_id",
    "parse_message_id",
]
