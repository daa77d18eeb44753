"""Error mapping (status, body, transport) and that secrets never leak."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
import respx

from roomkey.lockme import (
    ApiError,
    AsyncLockmeClient,
    AuthError,
    FileTokenStore,
    InvalidResponseError,
    LockmeClient,
    LockmeError,
    MaybeDeliveredError,
    MemoryTokenStore,
    NotFoundError,
    NotSentError,
    OAuthConfig,
    OAuthError,
    RateLimitedError,
    RefusedError,
    ServerError,
    Token,
    ValidationError,
)

from .conftest import ACCESS, API, BASE, CLIENT_SECRET, NOW, REFRESH, FakeClock


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, ValidationError),
        (422, ValidationError),
        (403, AuthError),
        (404, NotFoundError),
        (409, RefusedError),
        (423, RefusedError),
        (429, RateLimitedError),
        (418, ApiError),
        (500, ServerError),
        (503, ServerError),
        (302, ApiError),
    ],
)
def test_status_maps_to_error_class(
    status: int,
    cls: type[ApiError],
    api: respx.MockRouter,
    oauth: OAuthConfig,
    store: MemoryTokenStore,
) -> None:
    body = {"message": "Reservation paid via Lockme cannot be deleted", "error": "refused"}
    api.delete(BASE + "/room/7/reservation/5").respond(status, json=body)
    with LockmeClient(oauth, store) as client, pytest.raises(cls) as info:
        client.delete_reservation(7, 5)
    err = info.value
    assert type(err) is cls
    assert err.status == status
    assert err.message == body["message"]
    assert err.error == "refused"
    assert '"refused"' in err.body
    assert err.data == body
    assert "Reservation paid via Lockme" in str(err)


def test_retry_after_is_read(
    api: respx.MockRouter, oauth: OAuthConfig, store: MemoryTokenStore
) -> None:
    api.get(BASE + "/rooms").respond(429, headers={"Retry-After": "7"}, text="slow down")
    with LockmeClient(oauth, store) as client, pytest.raises(RateLimitedError) as info:
        client.list_rooms()
    assert info.value.retry_after == 7.0
    assert info.value.body == "slow down"
    assert info.value.message is None


def test_error_key_on_success_status_is_an_error(
    api: respx.MockRouter, oauth: OAuthConfig, store: MemoryTokenStore
) -> None:
    api.get(BASE + "/rooms").respond(200, json={"error": "Something went wrong"})
    with LockmeClient(oauth, store) as client, pytest.raises(ApiError) as info:
        client.list_rooms()
    assert info.value.status == 200
    assert info.value.error == "Something went wrong"


def test_non_json_bodies(
    api: respx.MockRouter, oauth: OAuthConfig, store: MemoryTokenStore
) -> None:
    api.get(BASE + "/test").respond(200, text="OK\n")
    api.get(BASE + "/rooms").respond(500, text="<html>oops</html>")
    api.get(BASE + "/me").respond(
        200, text="{not json", headers={"content-type": "application/json"}
    )
    api.get(BASE + "/room/1").respond(200, text="hello")
    with LockmeClient(oauth, store) as client:
        assert client.test() == "OK"
        with pytest.raises(ServerError) as info:
            client.list_rooms()
        assert info.value.body == "<html>oops</html>"
        assert info.value.message is None
        with pytest.raises(ApiError):
            client.me()
        with pytest.raises(InvalidResponseError):
            client.get_room(1)


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (httpx.ConnectError("dns failure"), NotSentError),
        (httpx.ConnectTimeout("connect"), NotSentError),
        (httpx.PoolTimeout("pool"), NotSentError),
        (httpx.ReadTimeout("read"), MaybeDeliveredError),
        (httpx.WriteTimeout("write"), MaybeDeliveredError),
        (httpx.RemoteProtocolError("dropped"), MaybeDeliveredError),
        (httpx.ReadError("reset"), MaybeDeliveredError),
    ],
)
async def test_transport_errors_sent_vs_not_sent(
    exc: Exception,
    cls: type[LockmeError],
    api: respx.MockRouter,
    oauth: OAuthConfig,
    store: MemoryTokenStore,
) -> None:
    api.put(BASE + "/room/7/reservation").mock(side_effect=exc)
    data = {"roomid": 7, "date": "2026-01-01", "hour": "10:00:00"}
    with LockmeClient(oauth, store) as client, pytest.raises(cls) as info:
        client.add_reservation(data)
    assert "PUT /room/7/reservation" in str(info.value)
    async with AsyncLockmeClient(oauth, store) as aclient:
        with pytest.raises(cls):
            await aclient.add_reservation(data)


def _secrets_absent(text: str) -> None:
    for secret in (ACCESS, REFRESH, CLIENT_SECRET, "NEW-ACCESS-zzz", "NEW-REFRESH-zzz", "CODE-q"):
        assert secret not in text


def test_no_secret_in_reprs_messages_or_logs(
    api: respx.MockRouter,
    oauth: OAuthConfig,
    clock: FakeClock,
    tmp_path: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = Token(access_token=ACCESS, refresh_token=REFRESH, expires=NOW - 1, id_token="CODE-q")
    store = FileTokenStore(tmp_path / "token.json")
    store.save(token)
    texts = [repr(token), str(token), repr(oauth), str(oauth), repr(store)]
    # a token endpoint that answers 200 without expiry info but with a bad type
    api.post(API + "/access_token").respond(
        200,
        json={
            "access_token": "NEW-ACCESS-zzz",
            "refresh_token": "NEW-REFRESH-zzz",
            "expires": "soon",
        },
    )
    with LockmeClient(oauth, store, clock=clock) as client, pytest.raises(OAuthError) as info:
        client.me()
    texts += [str(info.value), repr(info.value), info.value.body, repr(client)]
    assert '"access_token": "***"' in info.value.body
    # a token endpoint error
    api.post(API + "/access_token").respond(
        400, json={"error": "invalid_grant", "error_description": "bad refresh"}
    )
    with LockmeClient(oauth, store, clock=clock) as client, pytest.raises(OAuthError) as info2:
        client.me()
    assert info2.value.error == "invalid_grant"
    assert info2.value.description == "bad refresh"
    texts += [str(info2.value), repr(info2.value), info2.value.body]
    # an API error
    store.save(Token(access_token=ACCESS, refresh_token=REFRESH, expires=NOW + 3600))
    api.get(BASE + "/me").respond(500, json={"message": "boom"})
    with LockmeClient(oauth, store, clock=clock) as client, pytest.raises(ServerError) as info3:
        client.me()
    texts += [str(info3.value), repr(info3.value)]
    # a transport error
    api.get(BASE + "/rooms").mock(side_effect=httpx.ConnectError(f"failed {ACCESS}"))
    with LockmeClient(oauth, store, clock=clock) as client, pytest.raises(NotSentError) as info4:
        client.list_rooms()
    texts += [str(info4.value), repr(info4.value), caplog.text]
    for text in texts:
        _secrets_absent(text)


def test_non_json_token_answer_is_not_kept(
    api: respx.MockRouter, oauth: OAuthConfig, clock: FakeClock
) -> None:
    store = MemoryTokenStore(Token(access_token=ACCESS, refresh_token=REFRESH, expires=NOW - 5))
    api.post(API + "/access_token").respond(
        200, text="access_token=NEW-ACCESS-zzz&refresh_token=NEW-REFRESH-zzz"
    )
    with LockmeClient(oauth, store, clock=clock) as client, pytest.raises(OAuthError) as info:
        client.test()
    assert info.value.error == "invalid_response"
    _secrets_absent(info.value.body + str(info.value))


def test_token_endpoint_5xx_and_429_are_api_errors(
    api: respx.MockRouter, oauth: OAuthConfig, clock: FakeClock
) -> None:
    store = MemoryTokenStore(Token(access_token=ACCESS, refresh_token=REFRESH, expires=NOW - 5))
    api.post(API + "/access_token").respond(503, text="maintenance")
    with LockmeClient(oauth, store, clock=clock) as client, pytest.raises(ServerError):
        client.test()
    api.post(API + "/access_token").respond(429)
    with LockmeClient(oauth, store, clock=clock) as client, pytest.raises(RateLimitedError):
        client.test()
    api.post(API + "/access_token").mock(side_effect=httpx.ReadTimeout("t"))
    with LockmeClient(oauth, store, clock=clock) as client, pytest.raises(MaybeDeliveredError):
        client.test()
