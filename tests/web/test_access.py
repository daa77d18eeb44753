"""Who may do what: every route of the app is classified here, and each one refuses anonymous
and under-privileged callers. A route added to the app without a row below fails the first
test, so nothing slips through unclassified."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount
from web_harness import ADMIN, LOCK, VIEWER, WebStack, page_csrf

from roomkey.web.models import ApiToken, User, WebSession

PUBLIC, READ, ADMIN_ONLY, SERVICE = "public", "read", "admin", "service"

ROUTES: dict[tuple[str, str], str] = {
    # the service's own receivers and probes (secret in the URL / signed / unauthenticated)
    ("GET", "/hooks/lockme/{secret}"): SERVICE,
    ("POST", "/hooks/lockme/{secret}"): SERVICE,
    ("GET", "/hooks/lockme"): SERVICE,
    ("POST", "/hooks/lockme"): SERVICE,
    ("POST", "/hooks/loqed/bridge/{lock_id}"): SERVICE,
    ("POST", "/hooks/loqed/cloud/{secret}"): SERVICE,
    ("GET", "/health"): SERVICE,
    ("GET", "/ready"): SERVICE,
    ("GET", "/metrics"): SERVICE,
    # dashboard pages
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("GET", "/dashboard"): PUBLIC,  # a redirect to "/" (which needs a session)
    ("POST", "/logout"): READ,
    ("GET", "/"): READ,
    ("GET", "/locks"): READ,
    ("GET", "/events"): READ,
    ("GET", "/events.csv"): READ,
    ("GET", "/alerts"): READ,
    ("POST", "/alerts/{alert_id}/ack"): ADMIN_ONLY,
    ("GET", "/rooms/{room_id}/door/{action}"): ADMIN_ONLY,
    ("POST", "/rooms/{room_id}/door/{action}"): ADMIN_ONLY,
    ("GET", "/commands"): READ,
    ("GET", "/reconcile"): ADMIN_ONLY,
    ("POST", "/reconcile"): ADMIN_ONLY,
    ("GET", "/rooms"): READ,
    ("GET", "/rooms/{room_id}/settings"): ADMIN_ONLY,
    ("POST", "/rooms/{room_id}/settings"): ADMIN_ONLY,
    ("GET", "/webhooks"): READ,
    ("POST", "/webhooks/endpoints"): ADMIN_ONLY,
    ("POST", "/webhooks/endpoints/{endpoint_id}/{op}"): ADMIN_ONLY,
    ("POST", "/webhooks/deliveries/{delivery_id}/retry"): ADMIN_ONLY,
    ("GET", "/admin/users"): ADMIN_ONLY,
    ("POST", "/admin/users"): ADMIN_ONLY,
    ("POST", "/admin/tokens"): ADMIN_ONLY,
    ("POST", "/admin/tokens/{token_id}/revoke"): ADMIN_ONLY,
    ("GET", "/live"): READ,
    # JSON API
    ("GET", "/api/v1/openapi.json"): PUBLIC,
    ("GET", "/api/v1/me"): READ,
    ("GET", "/api/v1/rooms"): READ,
    ("GET", "/api/v1/rooms/{room_id}"): READ,
    ("GET", "/api/v1/rooms/{room_id}/timeline"): READ,
    ("GET", "/api/v1/locks"): READ,
    ("GET", "/api/v1/locks/{lock_id}"): READ,
    ("GET", "/api/v1/events"): READ,
    ("GET", "/api/v1/events.csv"): READ,
    ("GET", "/api/v1/alerts"): READ,
    ("POST", "/api/v1/alerts/{alert_id}/acknowledge"): ADMIN_ONLY,
    ("POST", "/api/v1/rooms/{room_id}/{action}"): ADMIN_ONLY,
    ("GET", "/api/v1/commands/{command_id}"): READ,
    ("POST", "/api/v1/reconcile"): ADMIN_ONLY,
    ("POST", "/api/v1/rooms/{room_id}/settings/preview"): ADMIN_ONLY,
    ("PUT", "/api/v1/rooms/{room_id}/settings"): ADMIN_ONLY,
    ("DELETE", "/api/v1/rooms/{room_id}/settings"): ADMIN_ONLY,
    ("GET", "/api/v1/webhooks/endpoints"): ADMIN_ONLY,
    ("POST", "/api/v1/webhooks/endpoints"): ADMIN_ONLY,
    ("DELETE", "/api/v1/webhooks/endpoints/{endpoint_id}"): ADMIN_ONLY,
    ("GET", "/api/v1/webhooks/deliveries"): READ,
    ("POST", "/api/v1/webhooks/deliveries/{delivery_id}/retry"): ADMIN_ONLY,
}

STREAMING = {("GET", "/live")}
"""Answers forever when allowed (tested through change_stream and the browser instead)."""


def app_routes(stack: WebStack) -> set[tuple[str, str]]:
    """Every (method, path) the app answers, included routers flattened."""
    found: set[tuple[str, str]] = set()
    for context in iter_route_contexts(stack.app.routes):
        if isinstance(context.original_route, Mount):
            assert context.path == "/static", f"unexpected mount {context.path}"
            continue
        assert context.path is not None, context
        for method in (context.methods or set()) - {"HEAD", "OPTIONS"}:
            found.add((method, context.path))
    return found


def concrete(path: str, stack: WebStack) -> str:
    values = {
        "room_id": str(stack.room_id),
        "action": "open",
        "alert_id": "1",
        "endpoint_id": "1",
        "delivery_id": "1",
        "token_id": "1",
        "op": "test",
        "lock_id": LOCK,
        "command_id": "00000000-0000-0000-0000-000000000000",
        "secret": "x",
    }
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def cases(access: str) -> list[tuple[str, str]]:
    return sorted(k for k, v in ROUTES.items() if v == access)


async def test_every_route_is_classified(stack: WebStack) -> None:
    routes = app_routes(stack)
    assert routes - set(ROUTES) == set(), "classify new routes in ROUTES"
    assert set(ROUTES) - routes == set(), "ROUTES lists routes the app no longer has"


async def test_anonymous_is_refused_everywhere_but_login_and_schema(stack: WebStack) -> None:
    client = stack.client()
    for method, path in cases(READ) + cases(ADMIN_ONLY):
        response = await client.request(method, concrete(path, stack))
        if path.startswith("/api/"):
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["type"] == "unauthorized"
        elif method == "GET":
            assert response.status_code == 303, (method, path)
            assert response.headers["location"].startswith("/login?next=")
        else:
            assert response.status_code == 401, (method, path)


async def test_invalid_and_revoked_tokens_are_refused(stack: WebStack) -> None:
    for token in ("rk_" + "x" * 43, "not-a-token", stack.tokens["admin"][:-1]):
        response = await stack.client(token=token).get("/api/v1/me")
        assert response.status_code == 401
    admin = stack.client()
    await stack.login(admin, ADMIN)
    users = await admin.get("/admin/users")
    token_id = re.search(r"/admin/tokens/(\d+)/revoke", users.text)
    assert token_id
    api = stack.client(token=stack.tokens["admin"])
    me = (await api.get("/api/v1/me")).json()
    assert me["role"] == "admin"
    # revoke every token of alice's through the page, then her token is refused
    for tid in re.findall(r"/admin/tokens/(\d+)/revoke", users.text):
        await admin.post(f"/admin/tokens/{tid}/revoke", data={"csrf_token": page_csrf(users.text)})
    assert (await api.get("/api/v1/me")).status_code == 401


async def test_read_only_user_is_refused_every_admin_route(stack: WebStack) -> None:
    viewer = stack.client()
    assert (await stack.login(viewer, VIEWER)).status_code == 303
    csrf = page_csrf((await viewer.get("/")).text)
    api = stack.client(token=stack.tokens["viewer"])
    for method, path in cases(ADMIN_ONLY):
        url = concrete(path, stack)
        if path.startswith("/api/"):
            response = await api.request(method, url, json={})
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["error"]["type"] == "forbidden"
        else:
            data = {"csrf_token": csrf, "confirm": "yes"} if method == "POST" else None
            response = await viewer.request(method, url, data=data)
            assert response.status_code == 403, (method, path)
            assert "Your role may not do this" in response.text


async def test_read_only_user_sees_every_read_route(stack: WebStack) -> None:
    viewer = stack.client()
    await stack.login(viewer, VIEWER)
    api = stack.client(token=stack.tokens["viewer"])
    for method, path in cases(READ):
        if method != "GET" or (method, path) in STREAMING:
            continue
        client = api if path.startswith("/api/") else viewer
        response = await client.get(concrete(path, stack))
        assert response.status_code in (200, 404), (path, response.status_code)
    # and no admin control is offered to them
    today = await viewer.get("/")
    assert "/door/open" not in today.text
    assert "Re-run reconciliation" not in today.text


async def test_admin_reaches_admin_pages(stack: WebStack) -> None:
    admin = stack.client()
    await stack.login(admin, ADMIN)
    api = stack.client(token=stack.tokens["admin"])
    for method, path in cases(ADMIN_ONLY):
        if method == "GET":
            client = api if path.startswith("/api/") else admin
            response = await client.get(concrete(path, stack))
            assert response.status_code == 200, path


@pytest.mark.parametrize(
    "form",
    [{}, {"csrf_token": ""}, {"csrf_token": "forged"}],
    ids=["missing", "empty", "forged"],
)
async def test_forms_without_the_sessions_csrf_token_are_refused(
    stack: WebStack, form: dict[str, str]
) -> None:
    admin = stack.client()
    await stack.login(admin, ADMIN)
    for path in (
        f"/rooms/{stack.room_id}/door/open",
        "/reconcile",
        "/admin/users",
        "/logout",
        "/webhooks/endpoints",
    ):
        response = await admin.post(path, data={**form, "confirm": "yes"})
        assert response.status_code == 403, path
    async with stack.service.session_factory() as session:
        from sqlalchemy import func, select

        from roomkey.service.db.models import Command

        assert (await session.execute(select(func.count(Command.id)))).scalar_one() == 0


async def test_csrf_token_of_another_session_is_refused(stack: WebStack) -> None:
    other = stack.client()
    await stack.login(other, ADMIN)
    stolen = page_csrf((await other.get("/")).text)
    admin = stack.client()
    await stack.login(admin, ADMIN)
    response = await admin.post(
        f"/rooms/{stack.room_id}/door/open", data={"csrf_token": stolen, "confirm": "yes"}
    )
    assert response.status_code == 403


async def test_login_form_needs_its_csrf_cookie(stack: WebStack) -> None:
    client = stack.client()
    response = await client.post(
        "/login", data={"username": ADMIN[0], "password": ADMIN[1], "csrf_token": "x"}
    )
    assert response.status_code == 403
    assert "roomkey_session" not in response.cookies


async def test_session_cookie_flags_and_logout(stack: WebStack) -> None:
    client = stack.client()
    response = await stack.login(client, ADMIN)
    cookie = next(
        v
        for k, v in response.headers.multi_items()
        if k == "set-cookie" and v.startswith("roomkey_session=")
    )
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite=lax", "path=/"} <= flags
    value = cookie.split(";")[0].split("=", 1)[1]
    async with stack.service.session_factory() as session:
        from sqlalchemy import select

        stored = list((await session.execute(select(WebSession.id))).scalars())
    assert value not in stored  # only its hash is kept
    csrf = page_csrf((await client.get("/")).text)
    out = await client.post("/logout", data={"csrf_token": csrf})
    assert out.status_code == 303
    replay = stack.client()
    replay.cookies.set("roomkey_session", value, domain="testserver")
    assert (await replay.get("/")).status_code == 303  # the old cookie is dead


async def test_open_redirect_after_login_is_refused(stack: WebStack) -> None:
    client = stack.client()
    page = await client.get("/login")
    response = await client.post(
        "/login",
        data={
            "username": ADMIN[0],
            "password": ADMIN[1],
            "csrf_token": page_csrf(page.text),
            "next": "//evil.example/",
        },
    )
    assert response.headers["location"] == "/"


async def test_login_is_rate_limited_per_ip_and_user(stack: WebStack) -> None:
    client = stack.client()
    for _ in range(5):
        response = await stack.login(client, (ADMIN[0], "wrong-password-x"))
        assert response.status_code == 401
    blocked = await stack.login(client, ADMIN)  # even the right password now
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    assert "roomkey_session" not in blocked.cookies
    # another user from the same address is not blocked by alice's failures
    assert (await stack.login(stack.client(), VIEWER)).status_code == 303


async def test_rate_limit_window_passes(engine, secret_box, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from web_harness import make_stack

    from roomkey.web import WebSettings

    now = [1_800_000_000.0]
    stack = await make_stack(
        engine,
        secret_box,
        tmp_path,
        settings=WebSettings(login_window_seconds=60, wall=lambda: now[0]),
    )
    try:
        client = stack.client()
        for _ in range(5):
            await stack.login(client, (ADMIN[0], "wrong-password-x"))
        assert (await stack.login(client, ADMIN)).status_code == 429
        now[0] += 61
        assert (await stack.login(client, ADMIN)).status_code == 303
    finally:
        await stack.close()


async def test_secrets_are_hashed_at_rest_and_kept_out_of_reprs(stack: WebStack) -> None:
    from sqlalchemy import select

    async with stack.service.session_factory() as session:
        users = list((await session.execute(select(User))).scalars())
        tokens = list((await session.execute(select(ApiToken))).scalars())
    assert all(u.password_hash.startswith("$argon2id$") for u in users)
    assert all(ADMIN[1] not in u.password_hash for u in users)
    plain = set(stack.tokens.values())
    assert not plain & {t.token_hash for t in tokens}
    assert all(t.prefix not in ("", None) and len(t.prefix) < 16 for t in tokens)
    for row in users + tokens:
        text = repr(row)
        assert "argon2" not in text
        assert not any(p in text for p in plain)
