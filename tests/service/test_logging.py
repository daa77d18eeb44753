"""Redaction: no secret, token or signed URL survives into a log line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomkey.service.logging import REDACTED, configure_logging, redact, register_secret


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    handler = configure_logging(level=logging.DEBUG, json_lines=True, stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


SIGNED = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8wMTIzNA%3D%3D"


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("GET /hooks/lockme/s3cr3t-url-part HTTP/1.1 200", "s3cr3t-url-part"),
        ("POST /hooks/loqed/cloud/abcDEF123 400", "abcDEF123"),
        (f"GET http://10.0.0.5/to_lock?command_signed_base64={SIGNED}", SIGNED),
        (
            "https://app.loqed.com/API/lock_command.php?api_token=tok123456&lock_id=L1"
            f"&command_signed_base64={SIGNED}",
            "tok123456",
        ),
        ("webhook http://127.0.0.1:8080/hooks/lockme?s=qwerty987 failed", "qwerty987"),
        ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig"),
        ('token json {"access_token": "at-98765", "expires": 1}', "at-98765"),
        ("refresh_token='rt-55555' client_secret='cs-4444'", "rt-55555"),
        ("grant_type=refresh_token&refresh_token=rt-12345&client_secret=cs-999", "cs-999"),
    ],
)
def test_redact_removes_secrets(line: str, secret: str) -> None:
    out = redact(line)
    assert secret not in out
    assert REDACTED in out


def test_registered_secret_is_removed_wherever_it_appears(captured: io.StringIO) -> None:
    register_secret("kS3cretValue-in-config")
    log = logging.getLogger("roomkey.test")
    log.info("loaded %s from config", "kS3cretValue-in-config")
    try:
        raise RuntimeError("bad key kS3cretValue-in-config")
    except RuntimeError:
        log.exception("failure while using key")
    text = captured.getvalue()
    assert "kS3cretValue-in-config" not in text
    lines = _lines(captured)
    assert lines[0]["msg"] == f"loaded {REDACTED} from config"
    assert "RuntimeError" in str(lines[1]["exc"])


def test_uvicorn_access_log_lines_are_scrubbed(captured: io.StringIO) -> None:
    access = logging.getLogger("uvicorn.access")
    access.info(
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:5000",
        "POST",
        "/hooks/lockme/top-secret-path",
        "1.1",
        200,
    )
    text = captured.getvalue()
    assert "top-secret-path" not in text
    assert "/hooks/lockme/***" in text


def test_extras_are_structured_and_scrubbed(captured: io.StringIO) -> None:
    logging.getLogger("roomkey.x").warning(
        "delivery failed", extra={"url": "http://h/hooks/lockme/xyz-secret", "attempt": 3}
    )
    (entry,) = _lines(captured)
    assert entry["attempt"] == 3
    assert entry["level"] == "warning"
    assert "xyz-secret" not in json.dumps(entry)


def test_plain_text_mode_also_redacts() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    handler = configure_logging(json_lines=False, stream=stream)
    try:
        logging.getLogger("roomkey.t").warning("GET /hooks/lockme/plain-secret")
    finally:
        root.removeHandler(handler)
    assert "plain-secret" not in stream.getvalue()
    assert "/hooks/lockme/***" in stream.getvalue()


_token = st.text(
    alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd"), max_codepoint=127),
    min_size=6,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(secret=_token, prefix=st.text(max_size=20), suffix=st.text(max_size=20))
def test_url_secrets_never_survive(secret: str, prefix: str, suffix: str) -> None:
    for template in (
        "{p} /hooks/lockme/{s} {x}",
        "{p} /hooks/loqed/cloud/{s}?{x}",
        "{p}?api_token={s}&{x}",
        "{p}&command_signed_base64={s} {x}",
    ):
        line = template.format(p=prefix, s=secret, x=suffix)
        out = redact(line)
        # the secret may coincidentally occur in the random prefix/suffix; only its slot counts
        assert out.count(secret) <= prefix.count(secret) + suffix.count(secret)


def test_http_client_request_lines_are_held_to_warning_above_debug() -> None:
    root = logging.getLogger()
    for level, expected in ((logging.INFO, logging.WARNING), ("DEBUG", logging.NOTSET)):
        handler = configure_logging(level=level, json_lines=True, stream=io.StringIO())
        try:
            assert logging.getLogger("httpx").level == expected
            assert logging.getLogger("httpcore").level == expected
        finally:
            root.removeHandler(handler)
            logging.getLogger("httpx").setLevel(logging.NOTSET)
            logging.getLogger("httpcore").setLevel(logging.NOTSET)
