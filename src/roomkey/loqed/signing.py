"""Pure signing functions for every LOQED surface.

* the 53-byte bridge command (``/to_lock?command_signed_base64=``),
* the 45-byte app.loqed.com variant (no 8-byte message id),
* the SHA-256 ``HASH`` header of the bridge's webhook-management calls,
* the SHA-256 ``HASH`` of webhooks the bridge sends.

Nothing here does I/O. Time comes from an injectable clock (a callable returning
Unix seconds), so every function is deterministic under test.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

__all__ = [
    "COMMAND_LENGTH",
    "DEVICE_ID",
    "PROTOCOL",
    "SHORT_COMMAND_LENGTH",
    "TYPE_NORMAL",
    "Action",
    "Clock",
    "CommandFormatError",
    "DecodedCommand",
    "build_command",
    "command_mac",
    "decode_command",
    "decode_key",
    "encode_command_param",
    "sign_command",
    "verify_command_mac",
    "webhook_create_hash",
    "webhook_delete_hash",
    "webhook_list_hash",
    "webhook_payload_hash",
]

Clock = Callable[[], float]
"""Returns the current Unix time in seconds."""

PROTOCOL = 2
TYPE_NORMAL = 7
DEVICE_ID = 1
COMMAND_LENGTH = 53
SHORT_COMMAND_LENGTH = 45
_MESSAGE_ID = b"\x00" * 8


class Action(enum.IntEnum):
    """The action byte of a signed command."""

    OPEN = 1
    DAY_LOCK = 2
    NIGHT_LOCK = 3


class CommandFormatError(ValueError):
    """A command or key could not be decoded. The message never contains the input."""


def decode_key(secret_b64: str) -> bytes:
    """Decode a base64 key (``key_secret`` or ``bridge_key``) to raw bytes."""
    try:
        raw = base64.b64decode(secret_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CommandFormatError("key is not valid base64") from None
    if not raw:
        raise CommandFormatError("key is empty")
    return raw


def _check_key_id(local_key_id: int) -> None:
    if not 0 <= local_key_id <= 255:
        raise CommandFormatError("local key id must be 0..255")


def _authenticated_bytes(timestamp: int, local_key_id: int, action: int) -> bytes:
    return struct.pack(">BBQBBB", PROTOCOL, TYPE_NORMAL, timestamp, local_key_id, DEVICE_ID, action)


def command_mac(key: bytes, *, timestamp: int, local_key_id: int, action: int) -> bytes:
    """HMAC-SHA256 over ``protocol ‖ type ‖ ts(u64 BE) ‖ key_id ‖ device ‖ action``."""
    _check_key_id(local_key_id)
    if timestamp < 0:
        raise CommandFormatError("timestamp must not be negative")
    message = _authenticated_bytes(timestamp, local_key_id, action)
    return hmac.new(key, message, hashlib.sha256).digest()


def build_command(
    key: bytes,
    *,
    action: Action | int,
    local_key_id: int,
    timestamp: int,
    with_message_id: bool = True,
) -> bytes:
    """Build the raw command: 53 bytes (bridge) or 45 bytes (``with_message_id=False``)."""
    act = int(action)
    mac = command_mac(key, timestamp=timestamp, local_key_id=local_key_id, action=act)
    body = (
        struct.pack(">BBQ", PROTOCOL, TYPE_NORMAL, timestamp)
        + mac
        + struct.pack(">BBB", local_key_id, DEVICE_ID, act)
    )
    return (_MESSAGE_ID + body) if with_message_id else body


def sign_command(
    key_secret_b64: str,
    *,
    action: Action | int,
    local_key_id: int,
    clock: Clock = time.time,
    with_message_id: bool = True,
) -> str:
    """Sign a command now (per ``clock``) and return its standard base64 (with padding)."""
    raw = build_command(
        decode_key(key_secret_b64),
        action=action,
        local_key_id=local_key_id,
        timestamp=int(clock()),
        with_message_id=with_message_id,
    )
    return base64.b64encode(raw).decode("ascii")


def encode_command_param(command_b64: str, *, encode_slash: bool = False) -> str:
    """Percent-encode a base64 command for a query string.

    ``encode_slash=False`` is Python-``quote`` style (``/`` stays literal, as loqedAPI and
    go-loqed send it); ``True`` also turns ``/`` into ``%2F`` (node, PHP, Java clients).
    ``+`` and ``=`` are always encoded.
    """
    return quote(command_b64, safe="" if encode_slash else "/")


@dataclass(frozen=True, slots=True)
class DecodedCommand:
    """A parsed signed command (either length)."""

    message_id: bytes
    protocol: int
    command_type: int
    timestamp: int
    mac: bytes
    local_key_id: int
    device_id: int
    action: int
    length: int

    def verify(self, key: bytes) -> bool:
        """Constant-time check of the MAC with ``key`` (raw bytes)."""
        return verify_command_mac(self, key)


def decode_command(command_b64: str, *, allow_short: bool = False) -> DecodedCommand:
    """Decode a base64 command (already percent-decoded).

    Accepts 53 bytes, and 45 bytes too when ``allow_short`` (the app.loqed.com variant).
    Raises :class:`CommandFormatError` on anything else.
    """
    text = command_b64.strip()
    # base64 without padding (the 45-byte form is exactly 60 chars, so no padding needed)
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CommandFormatError("command is not valid base64") from None
    if len(raw) == COMMAND_LENGTH:
        message_id, rest = raw[:8], raw[8:]
    elif len(raw) == SHORT_COMMAND_LENGTH and allow_short:
        message_id, rest = b"", raw
    else:
        raise CommandFormatError(f"command has {len(raw)} bytes")
    protocol, ctype, ts = struct.unpack(">BBQ", rest[:10])
    mac = rest[10:42]
    key_id, device, action = struct.unpack(">BBB", rest[42:45])
    return DecodedCommand(
        message_id=message_id,
        protocol=protocol,
        command_type=ctype,
        timestamp=ts,
        mac=mac,
        local_key_id=key_id,
        device_id=device,
        action=action,
        length=len(raw),
    )


def verify_command_mac(command: DecodedCommand, key: bytes) -> bool:
    """Recompute the HMAC of ``command`` with ``key`` and compare in constant time."""
    expected = hmac.new(
        key,
        struct.pack(
            ">BBQBBB",
            command.protocol,
            command.command_type,
            command.timestamp,
            command.local_key_id,
            command.device_id,
            command.action,
        ),
        hashlib.sha256,
    ).digest()
    return hmac.compare_digest(expected, command.mac)


def _hash(prefix: bytes, timestamp: int, bridge_key: bytes) -> str:
    if timestamp < 0:
        raise CommandFormatError("timestamp must not be negative")
    return hashlib.sha256(prefix + struct.pack(">Q", timestamp) + bridge_key).hexdigest()


def webhook_list_hash(bridge_key: bytes, timestamp: int) -> str:
    """``HASH`` header for ``GET /webhooks``."""
    return _hash(b"", timestamp, bridge_key)


def webhook_create_hash(bridge_key: bytes, timestamp: int, url: str, flags: int) -> str:
    """``HASH`` header for ``POST /webhooks``: over ``url ‖ u32be(flags)``."""
    if not 0 <= flags <= 0xFFFFFFFF:
        raise CommandFormatError("flags must fit in 32 bits")
    return _hash(url.encode("utf-8") + struct.pack(">I", flags), timestamp, bridge_key)


def webhook_delete_hash(bridge_key: bytes, timestamp: int, webhook_id: int) -> str:
    """``HASH`` header for ``DELETE /webhooks/{id}``: over ``u64be(id)``."""
    if not 0 <= webhook_id <= 0xFFFFFFFFFFFFFFFF:
        raise CommandFormatError("webhook id must fit in 64 bits")
    return _hash(struct.pack(">Q", webhook_id), timestamp, bridge_key)


def webhook_payload_hash(bridge_key: bytes, timestamp: int, raw_body: bytes) -> str:
    """``HASH`` of a webhook the bridge sends: over the raw body bytes."""
    return _hash(raw_body, timestamp, bridge_key)
