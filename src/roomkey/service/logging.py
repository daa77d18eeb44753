"""Structured logs with a redaction filter.

Every record leaving a handler installed by :func:`configure_logging` passes through
:class:`RedactionFilter`: the message is rendered, then secrets are cut out of it, and the
rendered exception text is scrubbed the same way. What is removed:

* every value registered with :func:`register_secret` (tokens, keys, URL secrets from config);
* URL secrets in our own webhook paths (``/hooks/lockme/<secret>``,
  ``/hooks/loqed/cloud/<secret>``);
* query parameters that carry credentials or signed commands (``api_token=``,
  ``command_signed_base64=``, ``access_token=``, ``s=`` …);
* ``Authorization: Bearer …`` values and ``"access_token": "…"``-style key/value pairs.

Belt and braces: the SDKs never log these anyway.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = [
    "REDACTED",
    "JsonFormatter",
    "RedactionFilter",
    "configure_logging",
    "redact",
    "register_secret",
]

REDACTED = "***"

_PARAM_NAMES = (
    "s|secret|token|access_token|refresh_token|id_token|code|client_secret|api_token|api_key|"
    "key|key_secret|lock_api_key|command_signed_base64|hash|signature|password|"
    "lockme_api"
)
_KEY_NAMES = (
    "access_token|refresh_token|client_secret|key_secret|bridge_key|backend_key|api_token|"
    "api_key|password|secret|webhook_secret|authorization|token|command_signed_base64"
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # our own webhook paths carry a secret segment
    (re.compile(r"(/hooks/lockme/)[^/\s?#\"']+"), r"\1" + REDACTED),
    (re.compile(r"(/hooks/loqed/cloud/)[^/\s?#\"']+"), r"\1" + REDACTED),
    # credentials and signed commands in query strings / form bodies
    (
        re.compile(r"(?i)((?:[?&]|\b)(?:" + _PARAM_NAMES + r")=)[^&\s\"'#]+"),
        r"\1" + REDACTED,
    ),
    # Authorization headers
    (re.compile(r"(?i)\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    # "key": "value" / key: value pairs in JSON or reprs
    (
        re.compile(r"(?i)([\"']?(?:" + _KEY_NAMES + r")[\"']?\s*[:=]\s*)([\"'])[^\"']*\2"),
        r"\1\2" + REDACTED + r"\2",
    ),
)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_MIN_SECRET_LEN = 4


def register_secret(*values: str | None) -> None:
    """Remember literal secret values so they are cut out of every log line."""
    with _secrets_lock:
        for value in values:
            if value and len(value) >= _MIN_SECRET_LEN:
                _secrets.add(value)


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with registered secrets, URL secrets and credentials replaced by ``***``."""
    with _secrets_lock:
        literals = sorted({*_secrets, *(v for v in extra if v)}, key=len, reverse=True)
    for value in literals:
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactionFilter(logging.Filter):
    """Renders each record's message once and scrubs it (and its exception text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name in _STRUCTURED_FIELDS:
            value = getattr(record, name, None)
            if isinstance(value, str):
                setattr(record, name, redact(value))
        return True


_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_STRUCTURED_FIELDS = ("url", "path", "detail", "error")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool) else repr(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        return redact(json.dumps(entry, ensure_ascii=False, default=str))


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(
    *, level: int | str = logging.INFO, json_lines: bool = True, stream: TextIO | None = None
) -> logging.Handler:
    """Install one redacting handler on the root logger (replacing earlier roomkey handlers).

    Also routes uvicorn's loggers through it, so access-log lines with webhook secrets in
    their paths are scrubbed. httpx/httpcore log every outgoing request at INFO; above DEBUG
    they are held to WARNING (roomkey logs its own outcome of each call, and the per-request
    lines cost ~15 % of a Lockme call's CPU). Returns the handler.
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_roomkey", False):
            root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactionFilter())
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else _TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    handler._roomkey = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        # An earlier uvicorn.Config(log_level=...) or access_log=False may have raised the
        # level or disabled the logger; this handler now owns uvicorn's output.
        lg.setLevel(logging.NOTSET)
        lg.disabled = False
    numeric = logging.getLevelName(level) if isinstance(level, str) else level
    quiet = isinstance(numeric, int) and numeric > logging.DEBUG
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)
    return handler
