"""The Lockme webhook receiver: secret, message id validation, durable idempotent insert."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from test_runtime_harness import HOOK_SECRET, Stack, make_stack, receiver_client

from roomkey.service.crypto import SecretBox
from roomkey.service.db.models import LockmeMessage, MessageState
from roomkey.service.hooks_lockme import secret_matches


@pytest.fixture
async def stack(engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path) -> AsyncIterator[Stack]:
    s = await make_stack(engine, secret_box, tmp_path)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with receiver_client(stack.app) as c:
        yield c


async def _count(stack: Stack) -> int:
    async with stack.service.session_factory() as session:
        return int(await session.scalar(select(func.count()).select_from(LockmeMessage)) or 0)


HOOK = f"/hooks/lockme/{HOOK_SECRET}"


async def test_post_with_empty_body_stores_the_id_and_wakes_the_worker(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    stack.service.wakes.messages.clear()
    r = await client.post(HOOK, headers={"X-MessageId": "70001", "User-Agent": "LockMe/1.0"})
    assert r.status_code == 200
    assert r.json() == {"status": "accepted", "message_id": "70001", "duplicate": False}
    assert stack.service.wakes.messages.is_set()
    row = await stack.message("70001")
    assert row is not None
    assert row.state is MessageState.RECEIVED
    assert row.attempts == 0
    assert row.next_attempt_at is not None  # due at once


async def test_get_and_query_secret_forms_are_accepted(client: httpx.AsyncClient) -> None:
    r1 = await client.get(HOOK, headers={"X-MessageId": "1"})
    r2 = await client.post(f"/hooks/lockme?s={HOOK_SECRET}", headers={"X-MessageId": "2"})
    r3 = await client.get("/hooks/lockme", params={"s": HOOK_SECRET}, headers={"x-messageid": "3"})
    assert [r.status_code for r in (r1, r2, r3)] == [200, 200, 200]


async def test_duplicates_are_accepted_once(stack: Stack, client: httpx.AsyncClient) -> None:
    answers = [(await client.post(HOOK, headers={"X-MessageId": "42"})).json() for _ in range(3)]
    assert [a["duplicate"] for a in answers] == [False, True, True]
    assert await _count(stack) == 1
    text = stack.service.metrics.render().decode()
    assert 'roomkey_lockme_webhooks_total{outcome="stored"} 1.0' in text
    assert 'roomkey_lockme_webhooks_total{outcome="duplicate"} 2.0' in text


@pytest.mark.parametrize(
    "path",
    [
        "/hooks/lockme/wrong-secret",
        f"/hooks/lockme/{HOOK_SECRET}x",
        "/hooks/lockme?s=nope",
        "/hooks/lockme",
        f"/hooks/lockme?s={HOOK_SECRET}&s={HOOK_SECRET}",
    ],
)
async def test_wrong_or_missing_secret_is_404_and_stores_nothing(
    stack: Stack, client: httpx.AsyncClient, path: str
) -> None:
    r = await client.post(path, headers={"X-MessageId": "7"})
    assert r.status_code == 404
    assert r.json() == {"error": {"type": "not_found", "message": "Not Found"}}
    assert await _count(stack) == 0


@pytest.mark.parametrize(
    ("headers", "type_"),
    [
        ({}, "missing_message_id"),
        ({"X-MessageId": ""}, "invalid_message_id"),
        ({"X-MessageId": "12 34"}, "invalid_message_id"),
        ({"X-MessageId": "../../etc"}, "invalid_message_id"),
        ({"X-MessageId": "x" * 129}, "invalid_message_id"),
    ],
)
async def test_bad_message_id_is_a_typed_400(
    stack: Stack, client: httpx.AsyncClient, headers: dict[str, str], type_: str
) -> None:
    r = await client.post(HOOK, headers=headers)
    assert r.status_code == 400
    assert r.json()["error"]["type"] == type_
    assert await _count(stack) == 0


async def test_two_message_id_headers_are_refused(client: httpx.AsyncClient) -> None:
    r = await client.post(HOOK, headers=[("X-MessageId", "1"), ("X-MessageId", "2")])
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_message_id"


async def test_other_methods_get_a_typed_405(client: httpx.AsyncClient) -> None:
    r = await client.put(HOOK, headers={"X-MessageId": "1"})
    assert r.status_code == 405
    assert r.json()["error"]["type"] == "method_not_allowed"


async def test_database_down_is_503_not_500(stack: Stack, client: httpx.AsyncClient) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from roomkey.service.db.engine import create_session_factory

    broken = create_async_engine("sqlite+aiosqlite:////proc/roomkey-no-such-dir/db.sqlite3")
    stack.service.session_factory = create_session_factory(broken)
    try:
        r = await client.post(HOOK, headers={"X-MessageId": "5"})
    finally:
        await broken.dispose()
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "storage_unavailable"
    assert not stack.service.wakes.messages.is_set()


async def test_the_secret_never_reaches_the_logs(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    from roomkey.service.logging import RedactionFilter

    caplog.handler.addFilter(RedactionFilter())
    with caplog.at_level(logging.DEBUG):
        await client.post(HOOK, headers={"X-MessageId": "9"})
        await client.post("/hooks/lockme/guess-" + HOOK_SECRET, headers={"X-MessageId": "9"})
        logging.getLogger("uvicorn.access").info('"POST %s HTTP/1.1" 200', HOOK)
    assert caplog.records
    assert HOOK_SECRET not in caplog.text


def test_secret_compare() -> None:
    assert secret_matches("abc", "abc")
    assert not secret_matches("abc", "abd")
    assert not secret_matches("", "abc")
    assert not secret_matches(None, "abc")
    assert not secret_matches("abc", None)
    assert not secret_matches("abc", "")
    assert not secret_matches("\udcff", "abc")  # undecodable path bytes


_header_names = st.sampled_from(
    ["X-MessageId", "x-messageid", "Content-Type", "User-Agent", "X-Other", "Content-Length"]
)
_header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80
)
_paths = st.one_of(
    st.just(HOOK),
    st.just("/hooks/lockme"),
    st.builds(lambda s: f"/hooks/lockme/{quote(s, safe='')}", st.text(max_size=40)),
    st.builds(lambda s: f"/hooks/lockme?s={quote(s, safe='')}", st.text(max_size=40)),
    st.builds(lambda s: f"{HOOK}/{quote(s)}", st.text(max_size=20)),
    st.builds(lambda s: f"/{quote(s)}", st.text(max_size=20)),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    path=_paths,
    headers=st.lists(st.tuples(_header_names, _header_values), max_size=4),
    body=st.binary(max_size=300),
)
async def test_arbitrary_requests_never_get_a_5xx(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes,
) -> None:
    safe = [(k, v) for k, v in headers if k.lower() != "content-length"]
    r = await client.request(method, path, headers=safe, content=body)
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400 and method != "HEAD":
        assert r.json()["error"]["type"]
