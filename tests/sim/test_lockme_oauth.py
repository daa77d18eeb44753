"""Lockme simulator: the OAuth2 server (authorize, token endpoint, rotation) and bearer checks."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from roomkey.sim.clock import SimClock
from roomkey.sim.lockme import LockmeSimulator, OAuthSettings

CLIENT_ID = "roomkey"
SECRET = "s3cret-value-123"
REDIRECT = "http://127.0.0.1:8080/cb"


@pytest.fixture
def clock() -> SimClock:
    return SimClock(manual=True, start=1_790_000_000.0)


@pytest.fixture
def sim(clock: SimClock) -> LockmeSimulator:
    s = LockmeSimulator(clock)
    s.add_oauth_client(CLIENT_ID, SECRET, REDIRECT, name="RoomKey")
    dept = s.add_department("Escape", None)
    s.add_room(dept.id, "Vault")
    return s


@pytest.fixture
async def client(sim: LockmeSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(sim.app),
                                 base_url="http://lockme.test") as c:
        yield c


def _query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def _authorize(client: httpx.AsyncClient, **overrides: str) -> httpx.Response:
    params = {"client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code",
              "scope": "rooms_manage", "state": "st4te", "approval_prompt": "auto"}
    params.update(overrides)
    return await client.get("/authorize", params=params)


async def _code(client: httpx.AsyncClient) -> str:
    resp = await _authorize(client)
    assert resp.status_code == 302
    return _query(resp.headers["location"])["code"]


async def _token(client: httpx.AsyncClient, **form: str) -> httpx.Response:
    data = {"client_id": CLIENT_ID, "client_secret": SECRET, "redirect_uri": REDIRECT}
    data.update(form)
    return await client.post("/access_token", data=data)


async def test_authorization_code_flow_issues_a_working_token(
        client: httpx.AsyncClient) -> None:
    resp = await _authorize(client)
    assert resp.status_code == 302
    location = resp.headers["location"]
    assert location.startswith(REDIRECT + "?")
    query = _query(location)
    assert query["state"] == "st4te"
    token = await _token(client, grant_type="authorization_code", code=query["code"])
    assert token.status_code == 200
    body = token.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"]
    assert body["refresh_token"]
    test = await client.get("/v2.4/test",
                            headers={"Authorization": f"Bearer {body['access_token']}"})
    assert test.json() == "OK"


@pytest.mark.parametrize("scope", ["rooms_manage", "rooms_manage,rooms_manage",
                                   "rooms_manage rooms_manage", ""])
async def test_scope_accepts_space_or_comma_separators_and_defaults(
        client: httpx.AsyncClient, scope: str) -> None:
    resp = await _authorize(client, scope=scope)
    assert resp.status_code == 302
    assert "code" in _query(resp.headers["location"])


async def test_basic_client_authentication_is_accepted(client: httpx.AsyncClient) -> None:
    code = await _code(client)
    basic = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
    resp = await client.post("/access_token", headers={"Authorization": f"Basic {basic}"},
                             data={"grant_type": "authorization_code", "code": code,
                                   "redirect_uri": REDIRECT})
    assert resp.status_code == 200
    assert resp.json()["refresh_token"]


@pytest.mark.parametrize(
    ("params", "status", "error"),
    [
        ({"client_id": "nobody"}, 401, "invalid_client"),
        ({"client_id": ""}, 400, "invalid_request"),
        ({"redirect_uri": "http://127.0.0.1:8080/cb/"}, 401, "invalid_client"),
        ({"redirect_uri": "http://evil.example/cb"}, 401, "invalid_client"),
    ],
)
async def test_authorize_errors_that_cannot_redirect_answer_json(
        client: httpx.AsyncClient, params: dict[str, str], status: int, error: str) -> None:
    resp = await _authorize(client, **params)
    assert resp.status_code == status
    body = resp.json()
    assert body["error"] == error
    assert body["message"] == body["error_description"]


@pytest.mark.parametrize(("params", "error"), [
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"scope": "rooms_manage admin"}, "invalid_scope"),
])
async def test_authorize_errors_redirect_back_with_state(
        client: httpx.AsyncClient, params: dict[str, str], error: str) -> None:
    resp = await _authorize(client, **params)
    assert resp.status_code == 302
    query = _query(resp.headers["location"])
    assert query["error"] == error
    assert query["state"] == "st4te"
    assert "code" not in query


async def test_consent_page_approve_and_deny(sim: LockmeSimulator,
                                             client: httpx.AsyncClient) -> None:
    sim.oauth.settings.auto_approve = False
    page = await _authorize(client, state="<x>")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "RoomKey" in page.text
    assert 'value="approve"' in page.text
    assert "&lt;x&gt;" in page.text
    assert "<x>" not in page.text
    form = {"client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code",
            "scope": "rooms_manage", "state": "<x>"}
    approved = await client.post("/authorize", data={**form, "decision": "approve"})
    assert approved.status_code == 302
    query = _query(approved.headers["location"])
    assert query["state"] == "<x>"
    token = await _token(client, grant_type="authorization_code", code=query["code"])
    assert token.status_code == 200
    denied = await client.post("/authorize", data={**form, "decision": "deny"})
    assert _query(denied.headers["location"])["error"] == "access_denied"


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"grant_type": "authorization_code", "code": "bogus"}, 400, "invalid_grant"),
        ({"grant_type": "authorization_code"}, 400, "invalid_request"),
        ({"grant_type": "password", "username": "u", "password": "p"}, 400,
         "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
        ({}, 400, "invalid_request"),
        ({"grant_type": "refresh_token"}, 400, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": "nope"}, 400, "invalid_grant"),
        ({"grant_type": "refresh_token", "refresh_token": "x", "client_secret": "wrong"}, 401,
         "invalid_client"),
        ({"grant_type": "refresh_token", "refresh_token": "x", "client_id": "other"}, 401,
         "invalid_client"),
    ],
)
async def test_token_endpoint_errors(client: httpx.AsyncClient, form: dict[str, str],
                                     status: int, error: str) -> None:
    resp = await _token(client, **form)
    assert resp.status_code == status
    body = resp.json()
    assert body["error"] == error
    assert body["error_description"]
    assert body["message"] == body["error_description"]


async def test_token_endpoint_without_client_id_or_with_json_body(
        client: httpx.AsyncClient) -> None:
    missing = await client.post("/access_token", data={"grant_type": "refresh_token"})
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"
    as_json = await client.post("/access_token", json={"grant_type": "refresh_token"})
    assert as_json.status_code == 400
    assert as_json.json()["error"] == "invalid_request"
    bad_basic = await client.post("/access_token", headers={"Authorization": "Basic !!!"},
                                  data={"grant_type": "refresh_token"})
    assert bad_basic.status_code == 401
    assert bad_basic.headers["www-authenticate"].startswith("Basic")


async def test_code_is_single_use_and_replay_revokes_its_token(
        client: httpx.AsyncClient) -> None:
    code = await _code(client)
    first = await _token(client, grant_type="authorization_code", code=code)
    access = first.json()["access_token"]
    again = await _token(client, grant_type="authorization_code", code=code)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    resp = await client.get("/v2.4/test", headers={"Authorization": f"Bearer {access}"})
    assert resp.status_code == 401


async def test_code_expires_after_ten_minutes(client: httpx.AsyncClient,
                                              clock: SimClock) -> None:
    code = await _code(client)
    await clock.advance(600)
    resp = await _token(client, grant_type="authorization_code", code=code)
    assert resp.status_code == 400
    assert "expired" in resp.json()["message"]


async def test_code_redirect_uri_must_match_and_client_must_match(
        sim: LockmeSimulator, client: httpx.AsyncClient) -> None:
    code = await _code(client)
    wrong = await _token(client, grant_type="authorization_code", code=code,
                         redirect_uri="http://127.0.0.1:8080/other")
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    sim.add_oauth_client("other", "other-secret", "http://127.0.0.1:9/cb")
    code2 = await _code(client)
    stolen = await client.post("/access_token", data={
        "grant_type": "authorization_code", "code": code2, "client_id": "other",
        "client_secret": "other-secret", "redirect_uri": "http://127.0.0.1:9/cb"})
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_grant"


async def test_refresh_rotates_and_old_tokens_die(client: httpx.AsyncClient) -> None:
    code = await _code(client)
    first = (await _token(client, grant_type="authorization_code", code=code)).json()
    second = await _token(client, grant_type="refresh_token",
                          refresh_token=first["refresh_token"])
    assert second.status_code == 200
    new = second.json()
    assert new["refresh_token"] != first["refresh_token"]
    assert new["access_token"] != first["access_token"]
    reuse = await _token(client, grant_type="refresh_token",
                         refresh_token=first["refresh_token"])
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    old = await client.get("/v2.4/test",
                           headers={"Authorization": f"Bearer {first['access_token']}"})
    assert old.status_code == 401
    ok = await client.get("/v2.4/test",
                          headers={"Authorization": f"Bearer {new['access_token']}"})
    assert ok.status_code == 200


async def test_refresh_token_expires_and_lifetimes_are_configurable(clock: SimClock) -> None:
    sim = LockmeSimulator(clock, oauth_settings=OAuthSettings(access_ttl=60, refresh_ttl=120))
    sim.add_oauth_client(CLIENT_ID, SECRET, REDIRECT)
    token = sim.issue_token(CLIENT_ID)
    assert token["expires_in"] == 60
    assert token["expires"] == int(clock.time()) + 60
    async with httpx.AsyncClient(transport=httpx.ASGITransport(sim.app),
                                 base_url="http://lockme.test") as client:
        await clock.advance(121)
        resp = await _token(client, grant_type="refresh_token",
                            refresh_token=token["refresh_token"])
    assert resp.status_code == 400
    assert resp.json()["message"] == "The refresh token has expired"


async def test_grant_log_counts_token_requests(sim: LockmeSimulator,
                                               client: httpx.AsyncClient) -> None:
    token = sim.issue_token(CLIENT_ID)
    await _token(client, grant_type="refresh_token", refresh_token=token["refresh_token"])
    await _token(client, grant_type="refresh_token", refresh_token=token["refresh_token"])
    assert [(g.grant_type, g.ok, g.error) for g in sim.oauth.grants] == [
        ("refresh_token", True, None), ("refresh_token", False, "invalid_grant")]


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer unknown-token", "Token abc",
                                    "Basic Zm9vOmJhcg=="])
async def test_bearer_missing_or_unknown_is_401_json(client: httpx.AsyncClient,
                                                    header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    resp = await client.get("/v2.4/rooms", headers=headers)
    assert resp.status_code == 401
    body = resp.json()
    assert body["error"] == "access_denied"
    assert body["message"]
    assert resp.headers["www-authenticate"] == "Bearer"


async def test_bearer_expired_token_is_401(sim: LockmeSimulator, client: httpx.AsyncClient,
                                           clock: SimClock) -> None:
    token = sim.issue_token(CLIENT_ID)
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    assert (await client.get("/v2.4/rooms", headers=headers)).status_code == 200
    await clock.advance(3600)
    resp = await client.get("/v2.4/rooms", headers=headers)
    assert resp.status_code == 401
    assert resp.json()["message"] == "Access token has expired"


async def test_scope_rooms_manage_is_required_except_for_me(
        sim: LockmeSimulator, client: httpx.AsyncClient) -> None:
    token = sim.issue_token(CLIENT_ID, scopes=[])
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    rooms = await client.get("/v2.4/rooms", headers=headers)
    assert rooms.status_code == 403
    assert rooms.json()["error"] == "insufficient_scope"
    me = await client.get("/v2.4/me", headers=headers)
    assert me.status_code == 200
    assert me.json()["userid"] == sim.default_user.userid


@pytest.mark.parametrize("version", ["v2.0", "v2.1", "v2.2", "v2.3", "v2.4"])
async def test_every_api_version_prefix_is_served(sim: LockmeSimulator,
                                                  client: httpx.AsyncClient,
                                                  version: str) -> None:
    token = sim.issue_token(CLIENT_ID)
    resp = await client.get(f"/{version}/test",
                            headers={"Authorization": f"Bearer {token['access_token']}"})
    assert resp.json() == "OK"


async def test_unknown_version_is_404_json(sim: LockmeSimulator,
                                           client: httpx.AsyncClient) -> None:
    token = sim.issue_token(CLIENT_ID)
    resp = await client.get("/v3.0/test",
                            headers={"Authorization": f"Bearer {token['access_token']}"})
    assert resp.status_code == 404
    assert "message" in resp.json()


async def test_secrets_never_appear_in_reprs(sim: LockmeSimulator) -> None:
    token = sim.issue_token(CLIENT_ID)
    dept = sim.add_department("Hidden", "http://127.0.0.1:1/hook?s=hook-secret")
    texts = [repr(sim.oauth.clients[CLIENT_ID]), repr(sim.oauth.token_records()), repr(dept)]
    for text in texts:
        assert SECRET not in text
        assert token["access_token"] not in text
        assert "hook-secret" not in text
