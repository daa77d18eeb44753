"""app.loqed.com client: pasted URLs and self-signed lock_command.php (sync and async)."""

from __future__ import annotations

from urllib.parse import parse_qs

import httpx
import pytest

from roomkey.loqed import (
    BoltState,
    InvalidPayloadError,
    InvalidRequestError,
    KeyRevokedError,
    RateLimitedError,
    UnauthorizedError,
)
from roomkey.loqed.signing import decode_command

from .support import (
    API_TOKEN,
    LOCK_ID,
    TS,
    FakeClock,
    Recorder,
    call,
    json_response,
    make_app,
    make_app_from_urls,
)

APP_STATUS = {
    "id": LOCK_ID,
    "bolt_state": "night_lock",
    "bolt_state_numeric": 3,
    "bridge_online": 1,
    "lock_online": 1,
    "battery_percentage": 88,
    "battery_type": "ALKALINE",
    "battery_type_numeric": 0,
    "guest_access_mode": 0,
    "twist_assist": 1,
    "touch_to_connect": 1,
    "lock_direction": "clockwise",
}
BASE = "https://app.loqed.com/API"
URLS = [
    f"{BASE}/lock_command.php?api_token=T0K&lock_id={LOCK_ID}&command_signed_base64=OPENSIG%2B1",
    f"{BASE}/lock_command.php?api_token=T0K&lock_id={LOCK_ID}&command_signed_base64=LATCHSIG%2B2",
    f"{BASE}/lock_command.php?api_token=T0K&lock_id={LOCK_ID}&command_signed_base64=NIGHTSIG%2B3",
    f"{BASE}/lock_status.php?api_token=T0K&lock_id={LOCK_ID}",
]


async def test_self_signed_status(flavour: str) -> None:
    rec = Recorder(json_response(APP_STATUS))
    client = make_app(flavour, rec)
    status = await call(client, "status")
    request = rec.requests[0]
    assert request.url.path == "/API/lock_status.php"
    assert parse_qs(request.url.query.decode()) == {"api_token": [API_TOKEN], "lock_id": [LOCK_ID]}
    assert status.bolt_state is BoltState.NIGHT_LOCK
    assert status.bridge_online is True
    assert status.lock_online is True
    assert status.battery_percentage == 88
    assert status.lock_id == LOCK_ID
    assert status.raw["twist_assist"] == 1


async def test_status_with_numeric_bolt_state_only(flavour: str) -> None:
    payload = {"id": LOCK_ID, "bolt_state": 2, "lock_online": "1"}
    client = make_app(flavour, Recorder(json_response(payload)))
    assert (await call(client, "status")).bolt_state is BoltState.DAY_LOCK


async def test_status_for_another_lock_is_rejected(flavour: str) -> None:
    client = make_app(flavour, Recorder(json_response({**APP_STATUS, "id": "someone-else"})))
    with pytest.raises(InvalidPayloadError):
        await call(client, "status")


@pytest.mark.parametrize(("short", "length"), [(True, 45), (False, 53)])
@pytest.mark.parametrize(("method", "action"), [("open", 1), ("day_lock", 2), ("night_lock", 3)])
async def test_self_signed_commands(
    flavour: str, short: bool, length: int, method: str, action: int
) -> None:
    rec = Recorder(httpx.Response(200, text="OK"))
    client = make_app(flavour, rec, short_command=short)
    await call(client, method)
    request = rec.requests[0]
    assert request.url.path == "/API/lock_command.php"
    query = parse_qs(request.url.query.decode())
    assert query["api_token"] == [API_TOKEN]
    assert query["lock_id"] == [LOCK_ID]
    decoded = decode_command(query["command_signed_base64"][0], allow_short=True)
    assert decoded.length == length
    assert decoded.action == action
    assert decoded.timestamp == TS
    assert decoded.verify(b"Hallo wereld")
    raw_query = request.url.raw_path.decode().split("?", 1)[1]
    assert "+" not in raw_query
    assert "/" not in raw_query


async def test_short_command_matches_reference_vector(flavour: str) -> None:
    rec = Recorder(httpx.Response(200))
    client = make_app(flavour, rec)
    await call(client, "night_lock")
    query = parse_qs(rec.requests[0].url.query.decode())
    assert query["command_signed_base64"] == [
        "AgcAAAAAZVPxAFE8GN7OnS2FN2iWh9bPvqkpLvBxEWy+4QKYs2Jj1yn6AQED"
    ]


async def test_self_signed_commands_are_signed_fresh(flavour: str) -> None:
    clock = FakeClock()
    rec = Recorder(httpx.Response(200))
    client = make_app(flavour, rec, clock=clock)
    await call(client, "open")
    clock.advance(30)
    await call(client, "open")
    stamps = [
        decode_command(
            parse_qs(r.url.query.decode())["command_signed_base64"][0], allow_short=True
        ).timestamp
        for r in rec.requests
    ]
    assert stamps == [TS, TS + 30]


async def test_self_signed_without_key_refused(flavour: str) -> None:
    rec = Recorder(httpx.Response(200))
    client = make_app(flavour, rec, key_secret=None, local_key_id=None)
    with pytest.raises(InvalidRequestError):
        await call(client, "open")
    assert rec.requests == []


async def test_pasted_urls_are_used_exactly(flavour: str) -> None:
    rec = Recorder(
        httpx.Response(200, text="OK"),
        httpx.Response(200),
        httpx.Response(200),
        json_response({**APP_STATUS, "id": LOCK_ID}),
    )
    client = make_app_from_urls(flavour, rec, URLS)
    await call(client, "open")
    await call(client, "day_lock")
    await call(client, "night_lock")
    status = await call(client, "status")
    assert [str(r.url) for r in rec.requests] == URLS
    assert status.bolt_state is BoltState.NIGHT_LOCK
    assert client._core.lock_id == LOCK_ID


@pytest.mark.parametrize(
    "status_url",
    [
        f"{BASE}/lock_status.php?lock_id={LOCK_ID}",
        f"{BASE}/lock_status.php?api_token=T0K",
        "not a url",
        "ftp://x/lock_status.php?api_token=a&lock_id=b",
    ],
)
def test_from_urls_validates_status_url(status_url: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        make_app_from_urls("sync", Recorder(httpx.Response(200)), [*URLS[:3], status_url])
    assert "T0K" not in str(info.value)


async def test_login_page_redirect_and_html_are_unauthorized(flavour: str) -> None:
    client = make_app(flavour, Recorder(httpx.Response(302, headers={"location": "/login"})))
    with pytest.raises(UnauthorizedError):
        await call(client, "status")
    client = make_app(flavour, Recorder(httpx.Response(200, text="<html>login</html>")))
    with pytest.raises(UnauthorizedError):
        await call(client, "open")


async def test_app_api_key_revoked_and_rate_limited(flavour: str) -> None:
    body = {"message": "No query results for model [App\\Models\\ApiKey]."}
    client = make_app(flavour, Recorder(json_response(body, 404)))
    with pytest.raises(KeyRevokedError):
        await call(client, "night_lock")
    client = make_app(flavour, Recorder(httpx.Response(429, headers={"retry-after": "43200"})))
    with pytest.raises(RateLimitedError) as info:
        await call(client, "status")
    assert info.value.retry_after == 43200.0
