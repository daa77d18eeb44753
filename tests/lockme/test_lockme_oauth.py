"""OAuth2: authorization URL, state check, code exchange, refresh rotation, 401 handling."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from roomkey.lockme import (
    AsyncLockmeClient,
    AuthError,
    FileTokenStore,
    LockmeClient,
    MemoryTokenStore,
    NoTokenError,
    OAuthConfig,
    OAuthError,
    StateMismatchError,
    Token,
    check_state,
)

from .conftest import ACCESS, API, BASE, CLIENT_SECRET, NOW, REFRESH, FakeClock


def _token_answer(n: int, expires_in: int = 3600) -> dict[str, object]:
    return {
        "token_type": "Bearer",
        "expires_in": expires_in,
        "access_token": f"access-{n}",
        "refresh_token": f"refresh-{n}",
    }


def test_authorization_url(oauth: OAuthConfig, store: MemoryTokenStore) -> None:
    client = LockmeClient(oauth, store)
    url, state = client.authorization_url()
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{API}/authorize"
    query = parse_qs(parts.query)
    assert query == {
        "response_type": ["code"],
        "client_id": ["roomkey"],
        "redirect_uri": ["http://127.0.0.1:8765/cb"],
        "scope": ["rooms_manage"],
        "state": [state],
        "approval_prompt": ["auto"],
    }
    assert len(state) == 32
    assert int(state, 16) >= 0
    assert client.authorization_url()[1] != state
    assert CLIENT_SECRET not in url
    url2, state2 = client.authorization_url(state="given", scopes=["rooms_manage", "x"])
    assert state2 == "given"
    assert parse_qs(urlsplit(url2).query)["scope"] == ["rooms_manage x"]


def test_state_check_is_strict() -> None:
    check_state("abc", "abc")
    for expected, received in (
        ("abc", "abd"),
        ("abc", "ab"),
        ("abc", None),
        (None, "abc"),
        ("", ""),
        ("abc", "ABC"),
    ):
        with pytest.raises(StateMismatchError):
            check_state(expected, received)


def test_code_exchange_saves_token(
    api: respx.MockRouter, oauth: OAuthConfig, clock: FakeClock, tmp_path: Path
) -> None:
    route = api.post(API + "/access_token").respond(json=_token_answer(1, 7200))
    store = FileTokenStore(tmp_path / "t" / "token.json")
    client = LockmeClient(oauth, store, clock=clock)
    with pytest.raises(StateMismatchError):
        client.fetch_token("CODE", state="evil", expected_state="good")
    assert not route.called
    token = client.fetch_token("CODE", state="good", expected_state="good")
    form = parse_qs(route.calls.last.request.content.decode())
    assert route.calls.last.request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form == {
        "grant_type": ["authorization_code"],
        "code": ["CODE"],
        "client_id": ["roomkey"],
        "client_secret": [CLIENT_SECRET],
        "redirect_uri": ["http://127.0.0.1:8765/cb"],
    }
    assert token.access_token == "access-1"
    assert token.expires == NOW + 7200
    assert store.load() == token
    saved = json.loads(store.path.read_text())
    assert saved["expires"] == NOW + 7200
    assert saved["token_type"] == "Bearer"
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_code_exchange_oauth_error(
    api: respx.MockRouter, oauth: OAuthConfig, store: MemoryTokenStore
) -> None:
    api.post(API + "/access_token").respond(
        400,
        json={
            "error": "invalid_grant",
            "error_description": "code expired",
            "message": "code expired",
        },
    )
    with pytest.raises(OAuthError) as info:
        LockmeClient(oauth, store).fetch_token("C", state="s", expected_state="s")
    assert (info.value.error, info.value.description, info.value.status) == (
        "invalid_grant",
        "code expired",
        400,
    )
    api.post(API + "/access_token").respond(200, json={"error": "access_denied"})
    with pytest.raises(OAuthError):
        LockmeClient(oauth, store).fetch_token("C", state="s", expected_state="s")
    api.post(API + "/access_token").respond(200, json={"token_type": "Bearer"})
    with pytest.raises(OAuthError):
        LockmeClient(oauth, store).fetch_token("C", state="s", expected_state="s")


def test_refresh_rotates_and_keeps_extras(
    api: respx.MockRouter, oauth: OAuthConfig, clock: FakeClock
) -> None:
    store = MemoryTokenStore(Token(access_token=ACCESS, refresh_token=REFRESH, expires=NOW - 1))
    route = api.post(API + "/access_token").respond(
        json={**_token_answer(2), "scope": "rooms_manage"}
    )
    me = api.get(BASE + "/me").respond(json={"userid": 1})
    client = LockmeClient(oauth, store, clock=clock)
    assert client.me().userid == 1
    form = parse_qs(route.calls.last.request.content.decode())
    assert form["grant_type"] == ["refresh_token"]
    assert form["refresh_token"] == [REFRESH]
    assert form["client_secret"] == [CLIENT_SECRET]
    stored = store.load()
    assert stored is not None
    assert (stored.access_token, stored.refresh_token) == ("access-2", "refresh-2")
    assert stored.model_extra == {"scope": "rooms_manage"}
    assert me.calls.last.request.headers["authorization"] == "Bearer access-2"


def test_refresh_without_new_refresh_token_keeps_the_old_one(
    api: respx.MockRouter, oauth: OAuthConfig, clock: FakeClock
) -> None:
    store = MemoryTokenStore(Token(access_token=ACCESS, refresh_token=REFRESH, expires=NOW - 1))
    api.post(API + "/access_token").respond(json={"access_token": "a3", "expires_in": 60})
    LockmeClient(oauth, store, clock=clock).refresh_token()
    stored = store.load()
    assert stored is not None
    assert stored.refresh_token == REFRESH
    assert stored.access_token == "a3"


def test_no_token_or_no_refresh_token(
    api: respx.MockRouter, oauth: OAuthConfig, clock: FakeClock
) -> None:
    with pytest.raises(NoTokenError):
        LockmeClient(oauth, MemoryTokenStore(), clock=clock).test()
    store = MemoryTokenStore(Token(access_token=ACCESS, expires=NOW - 1))
    with pytest.raises(NoTokenError):
        LockmeClient(oauth, store, clock=clock).test()


def test_proactive_refresh_within_margin(
    api: respx.MockRouter, oauth: OAuthConfig, clock: FakeClock
) -> None:
    store = MemoryTokenStore(Token(access_token=ACCESS, refresh_token=REFRESH, expires=NOW + 100))
    refresh = api.post(API + "/access_token").respond(json=_token_answer(4))
    api.get(BASE + "/test").respond(json="OK")
    client = LockmeClient(oauth, store, clock=clock, refresh_margin=60)
    client.test()
    assert refresh.call_count == 0  # 100 s left > 60 s margin
    clock.now = NOW + 45  # 55 s left: inside the margin
    client.test()
    assert refresh.call_count == 1
    client.test()
    assert refresh.call_count == 1  # fresh token is reused


def test_proactive_refresh_failure_falls_back_to_still_valid_token(
    api: respx.MockRouter, oauth: OAuthConfig, clock: FakeClock
) -> None:
    store = MemoryTokenStore(Token(access_token=ACCESS, refresh_token=REFRESH, expires=NOW + 30))
    api.post(API + "/access_token").mock(side_effect=httpx.ConnectError("down"))
    test = api.get(BASE + "/test").respond(json="OK")
    assert LockmeClient(oauth, store, clock=clock).test() == "OK"
    assert test.calls.last.request.headers["authorization"] == f"Bearer {ACCESS}"


def test_401_refreshes_once_and_retries_once(
    api: respx.MockRouter, oauth: OAuthConfig, store: MemoryTokenStore, clock: FakeClock
) -> None:
    refresh = api.post(API + "/access_token").respond(json=_token_answer(5))
    rooms = api.get(BASE + "/rooms").mock(
        side_effect=[httpx.Response(401, json={"message": "expired"}), httpx.Response(200, json=[])]
    )
    assert LockmeClient(oauth, store, clock=clock).list_rooms() == []
    assert refresh.call_count == 1
    assert rooms.call_count == 2
    auths = [c.request.headers["authorization"] for c in rooms.calls]
    assert auths == [f"Bearer {ACCESS}", "Bearer access-5"]


def test_401_twice_is_auth_error_not_a_loop(
    api: respx.MockRouter, oauth: OAuthConfig, store: MemoryTokenStore, clock: FakeClock
) -> None:
    refresh = api.post(API + "/access_token").respond(json=_token_answer(6))
    rooms = api.get(BASE + "/rooms").respond(401, json={"message": "nope"})
    with pytest.raises(AuthError) as info:
        LockmeClient(oauth, store, clock=clock).list_rooms()
    assert info.value.status == 401
    assert info.value.message == "nope"
    assert refresh.call_count == 1
    assert rooms.call_count == 2


def test_401_reuses_token_rotated_by_someone_else(
    api: respx.MockRouter, oauth: OAuthConfig, store: MemoryTokenStore, clock: FakeClock
) -> None:
    refresh = api.post(API + "/access_token").respond(json=_token_answer(7))

    def first_401_while_other_process_rotates(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"] == f"Bearer {ACCESS}":
            store.save(
                Token(access_token="rotated-elsewhere", refresh_token="r9", expires=NOW + 900)
            )
            return httpx.Response(401, json={"message": "expired"})
        return httpx.Response(200, json="OK")

    test = api.get(BASE + "/test").mock(side_effect=first_401_while_other_process_rotates)
    assert LockmeClient(oauth, store, clock=clock).test() == "OK"
    assert refresh.call_count == 0
    assert test.calls.last.request.headers["authorization"] == "Bearer rotated-elsewhere"


async def test_async_401_refresh_and_proactive(
    api: respx.MockRouter, oauth: OAuthConfig, clock: FakeClock
) -> None:
    store = MemoryTokenStore(Token(access_token=ACCESS, refresh_token=REFRESH, expires=NOW + 10))
    refresh = api.post(API + "/access_token").mock(
        side_effect=[
            httpx.Response(200, json=_token_answer(8)),
            httpx.Response(200, json=_token_answer(9)),
        ]
    )
    me = api.get(BASE + "/me").mock(
        side_effect=[
            httpx.Response(401, json={"message": "revoked"}),
            httpx.Response(200, json={"userid": 3}),
        ]
    )
    async with AsyncLockmeClient(oauth, store, clock=clock) as client:
        user = await client.me()
    assert user.userid == 3
    assert refresh.call_count == 2
    assert [c.request.headers["authorization"] for c in me.calls] == [
        "Bearer access-8",
        "Bearer access-9",
    ]


def test_file_store_atomic_and_private(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "token.json")
    assert store.load() is None
    store.save(Token(access_token="a", refresh_token="r", expires=NOW))
    store.save(Token(access_token="b", refresh_token="r2", expires=NOW + 1))
    loaded = store.load()
    assert loaded is not None
    assert loaded.access_token == "b"
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token.json"]  # no temp files left
    assert store.lock_path == tmp_path / "token.json.lock"
    store.path.write_text("{garbage")
    with pytest.raises(Exception) as info:
        store.load()
    assert "garbage" not in str(info.value)


def test_token_expires_relative_values_are_rebased() -> None:
    token = Token.from_response({"access_token": "x", "expires": 3600}, now=NOW)
    assert token.expires == NOW + 3600
    token = Token.from_response({"access_token": "x", "expires": NOW + 5}, now=NOW)
    assert token.expires == NOW + 5
