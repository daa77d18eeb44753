"""Transport error mapping (each branch) and the no-secret-anywhere rule."""

from __future__ import annotations

import logging
from urllib.parse import quote

import httpx
import pytest

from roomkey.loqed import (
    ApiError,
    InvalidRequestError,
    KeyRevokedError,
    LoqedError,
    MaybeDeliveredError,
    NotSentError,
    RateLimitedError,
    TransportError,
    UnauthorizedError,
    parse_event,
)
from roomkey.loqed.errors import map_transport_error
from roomkey.loqed.models import BridgeWebhook, CloudLock, LockStatus, WebhookTriggers

from .support import (
    API_TOKEN,
    BRIDGE_KEY,
    KEY_SECRET,
    NIGHT_LOCK_B64,
    TOKEN,
    Recorder,
    call,
    json_response,
    make_app,
    make_app_from_urls,
    make_bridge,
    make_cloud,
)

SIGNED_URL = "http://10.0.0.5/to_lock?command_signed_base64=" + quote(NIGHT_LOCK_B64)


def _leaky(exc_type: type[Exception]) -> Exception:
    """An httpx exception whose message contains a signed URL (as real ones may)."""
    message = f"failed for {SIGNED_URL}"
    if issubclass(exc_type, httpx.HTTPStatusError):  # pragma: no cover - not used
        raise AssertionError
    request = httpx.Request("GET", SIGNED_URL)
    try:
        return exc_type(message, request=request)  # type: ignore[call-arg]
    except TypeError:
        return exc_type(message)


NOT_SENT = [
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.ProxyError,
]
MAYBE = [
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
    httpx.CloseError,
    httpx.DecodingError,
]


@pytest.mark.parametrize("exc_type", NOT_SENT)
def test_not_sent_branch(exc_type: type[Exception]) -> None:
    err = map_transport_error(_leaky(exc_type), "bridge GET /to_lock (NIGHT_LOCK)")
    assert isinstance(err, NotSentError)
    assert isinstance(err, TransportError)
    assert err.cause == exc_type.__name__
    assert "command_signed_base64" not in str(err)
    assert "10.0.0.5" not in str(err)


@pytest.mark.parametrize("exc_type", MAYBE)
def test_maybe_delivered_branch(exc_type: type[Exception]) -> None:
    err = map_transport_error(_leaky(exc_type), "bridge GET /to_lock (NIGHT_LOCK)")
    assert isinstance(err, MaybeDeliveredError)
    assert "command_signed_base64" not in str(err)


def test_invalid_url_branch() -> None:
    err = map_transport_error(httpx.InvalidURL(f"bad {SIGNED_URL}"), "x")
    assert isinstance(err, InvalidRequestError)
    assert "to_lock" not in str(err)


@pytest.mark.parametrize("exc_type", NOT_SENT + MAYBE)
async def test_raised_errors_have_no_chain_and_no_secret(
    flavour: str, exc_type: type[Exception]
) -> None:
    client = make_bridge(flavour, Recorder(_leaky(exc_type)))
    with pytest.raises(TransportError) as info:
        await call(client, "night_lock")
    err = info.value
    assert err.__cause__ is None
    assert err.__context__ is None
    for text in (str(err), repr(err)):
        assert NIGHT_LOCK_B64[:20] not in text
        assert "command_signed_base64" not in text
        assert KEY_SECRET not in text


def test_error_tree_shape() -> None:
    assert issubclass(InvalidRequestError, ValueError)
    assert issubclass(KeyRevokedError, ApiError)
    assert issubclass(ApiError, LoqedError)
    assert issubclass(RateLimitedError, ApiError)
    assert issubclass(UnauthorizedError, ApiError)


# --------------------------------------------------------------------------- redaction

SECRETS = [
    KEY_SECRET,
    BRIDGE_KEY,
    TOKEN,
    API_TOKEN,
    NIGHT_LOCK_B64[:24],
    quote(NIGHT_LOCK_B64)[:24],
    "T0KSECRET",
    "PASTEDSIG",
]


def _assert_clean(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked into {text!r}"


def test_client_reprs_hide_secrets() -> None:
    bridge = make_bridge("sync", Recorder(httpx.Response(200)))
    cloud = make_cloud("sync", Recorder(httpx.Response(200)))
    app = make_app("sync", Recorder(httpx.Response(200)))
    pasted = make_app_from_urls(
        "sync",
        Recorder(httpx.Response(200)),
        [
            f"https://app.loqed.com/API/lock_command.php?api_token=T0KSECRET&lock_id=L&"
            f"command_signed_base64=PASTEDSIG{i}"
            for i in range(3)
        ]
        + ["https://app.loqed.com/API/lock_status.php?api_token=T0KSECRET&lock_id=L"],
    )
    _assert_clean(
        repr(bridge),
        str(bridge),
        repr(cloud),
        repr(app),
        repr(pasted),
        repr(pasted._core.urls),
        repr(bridge._core),
        repr(vars(bridge._core)),
    )


def test_model_reprs_hide_secrets() -> None:
    lock = CloudLock.from_payload(
        {
            "id": "L",
            "key_secret": KEY_SECRET,
            "bridge_key": BRIDGE_KEY,
            "backend_key": TOKEN,
            "mystery_secret": API_TOKEN,
        }
    )
    hook = BridgeWebhook(
        id=1, url="http://user:T0KSECRET@h/x?s=PASTEDSIG", triggers=WebhookTriggers.ALL
    )
    status = LockStatus.from_payload({"bolt_state": "open"})
    _assert_clean(repr(lock), str(lock), repr(hook), str(hook), repr(status))
    dumped = lock.model_dump_json()  # explicit serialisation keeps unknown extras, not keys
    assert KEY_SECRET not in dumped
    assert BRIDGE_KEY not in dumped
    assert TOKEN not in dumped
    event = parse_event({"event_type": "STATE_CHANGED_OPEN"})
    assert "raw" not in repr(event)


async def test_api_error_messages_hide_secrets(flavour: str) -> None:
    body = {"message": f"No query results for model [App\\Models\\ApiKey]. {TOKEN}"}
    client = make_cloud(flavour, Recorder(json_response(body, 404)))
    with pytest.raises(KeyRevokedError) as info:
        await call(client, "set_bolt_state", "L", "open")
    _assert_clean(str(info.value), repr(info.value))

    app = make_app(flavour, Recorder(httpx.Response(302, headers={"location": "/login"})))
    with pytest.raises(UnauthorizedError) as info2:
        await call(app, "open")
    _assert_clean(str(info2.value), repr(info2.value))


async def test_logs_never_carry_secrets(flavour: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bridge = make_bridge(flavour, Recorder(httpx.Response(200, text="Message resent")))
    await call(bridge, "night_lock")
    app = make_app(flavour, Recorder(httpx.Response(200, text="ok")))
    await call(app, "open")
    await call(app, "night_lock")
    pasted = make_app_from_urls(
        flavour,
        Recorder(httpx.Response(200)),
        [
            f"https://app.loqed.com/API/lock_command.php?api_token=T0KSECRET&lock_id=L&"
            f"command_signed_base64=PASTEDSIG{i}"
            for i in range(3)
        ]
        + ["https://app.loqed.com/API/lock_status.php?api_token=T0KSECRET&lock_id=L"],
    )
    await call(pasted, "open")
    cloud = make_cloud(flavour, Recorder(httpx.Response(204)))
    await call(cloud, "set_bolt_state", "L", "open")
    failing = make_bridge(flavour, Recorder(_leaky(httpx.ReadTimeout)))
    with pytest.raises(MaybeDeliveredError):
        await call(failing, "open")
    messages = [record.getMessage() for record in caplog.records]
    assert any("HTTP Request" in m for m in messages), "httpx request lines were captured"
    assert any("to_lock" in m for m in messages)
    _assert_clean(*messages)
