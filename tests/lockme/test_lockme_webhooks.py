"""The webhook-message helper: ack only after success, failures stay unread, duplicates once."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest
import respx

from roomkey.lockme import (
    AsyncLockmeClient,
    AsyncMessageHandler,
    Claim,
    InvalidRequestError,
    LockmeClient,
    MaybeDeliveredError,
    MemorySeenStore,
    MemoryTokenStore,
    Message,
    MessageHandler,
    OAuthConfig,
    Outcome,
    UnknownActionError,
)

from .conftest import BASE

DATA = {"date": "2026-05-01", "hour": "19:00:00", "extid": "", "status": 1, "source": "web"}


def _message(
    api: respx.MockRouter, mid: int, action: str = "add"
) -> tuple[respx.Route, respx.Route]:
    get = api.get(f"{BASE}/message/{mid}").respond(
        json={"action": action, "roomid": 7, "reservationid": 900 + mid, "data": DATA}
    )
    ack = api.post(f"{BASE}/message/{mid}").respond(json=True)
    return get, ack


@pytest.fixture
def client(oauth: OAuthConfig, store: MemoryTokenStore) -> LockmeClient:
    return LockmeClient(oauth, store)


def test_handler_success_then_ack(api: respx.MockRouter, client: LockmeClient) -> None:
    _, ack = _message(api, 1)
    seen: list[Message] = []
    events: list[str] = []

    def acked(request: httpx.Request) -> httpx.Response:
        events.append("ack")
        return httpx.Response(200, json=True)

    ack.side_effect = acked

    def on_add(message: Message) -> None:
        assert not ack.called  # not acked before the handler returned
        events.append("handled")
        seen.append(message)

    helper = MessageHandler(client, {"add": on_add})
    assert helper.handle("1") == Outcome.HANDLED
    assert events == ["handled", "ack"]
    assert seen[0].reservationid == "901"
    assert seen[0].data is not None
    assert seen[0].data.start.isoformat() == "2026-05-01T19:00:00+02:00"
    assert ack.calls.last.request.content == b""


def test_handler_failure_leaves_message_unread_and_redelivery_retries(
    api: respx.MockRouter, client: LockmeClient
) -> None:
    _, ack = _message(api, 2, "edit")
    attempts: list[int] = []

    def flaky(message: Message) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("database down")

    helper = MessageHandler(client, {"edit": flaky})
    with pytest.raises(RuntimeError):
        helper.handle("2")
    assert not ack.called
    assert helper.handle("2") == Outcome.HANDLED  # Lockme redelivers; now it works
    assert len(attempts) == 2
    assert ack.call_count == 1


def test_handler_returning_false_is_not_acked(api: respx.MockRouter, client: LockmeClient) -> None:
    _, ack = _message(api, 3, "delete")
    helper = MessageHandler(client, {"delete": lambda m: False})
    assert helper.handle(3) == Outcome.NOT_HANDLED
    assert not ack.called


def test_duplicates_are_handled_once(api: respx.MockRouter, client: LockmeClient) -> None:
    get, ack = _message(api, 4)
    calls: list[int] = []
    helper = MessageHandler(client, {"add": lambda m: calls.append(1)})
    assert helper.handle("4") == Outcome.HANDLED
    assert helper.handle("4") == Outcome.DUPLICATE
    assert helper.handle(" 4 ") == Outcome.DUPLICATE
    assert calls == [1]
    assert get.call_count == 1
    assert ack.call_count == 1


def test_handled_but_ack_lost_is_reacked_without_rerunning_handler(
    api: respx.MockRouter, client: LockmeClient
) -> None:
    _, ack = _message(api, 5)
    ack.side_effect = [httpx.ReadTimeout("lost"), httpx.Response(200, json=True)]
    calls: list[int] = []
    store = MemorySeenStore()
    helper = MessageHandler(client, {"add": lambda m: calls.append(1)}, seen=store)
    with pytest.raises(MaybeDeliveredError):
        helper.handle("5")
    assert store.state(5) is Claim.HANDLED
    assert helper.handle("5") == Outcome.DUPLICATE
    assert calls == [1]
    assert ack.call_count == 2
    assert store.state(5) is Claim.ACKED


def test_concurrent_delivery_of_same_id_is_not_handled_twice(
    api: respx.MockRouter, client: LockmeClient
) -> None:
    _message(api, 6)
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow(message: Message) -> None:
        calls.append(1)
        entered.set()
        assert release.wait(10)

    helper = MessageHandler(client, {"add": slow})
    results: list[Outcome] = []
    first = threading.Thread(target=lambda: results.append(helper.handle("6")))
    first.start()
    assert entered.wait(10)
    assert helper.handle("6") == Outcome.IN_PROGRESS
    release.set()
    first.join(10)
    assert results == [Outcome.HANDLED]
    assert calls == [1]


def test_test_action_is_acked_by_default(api: respx.MockRouter, client: LockmeClient) -> None:
    api.get(f"{BASE}/message/7").respond(json={"action": "test", "data": []})
    ack = api.post(f"{BASE}/message/7").respond(json=True)
    assert MessageHandler(client, {}).handle("7") == Outcome.HANDLED
    assert ack.called


@pytest.mark.parametrize(
    ("policy", "outcome", "acked"),
    [("ack", Outcome.ACKED_UNKNOWN, True), ("ignore", Outcome.IGNORED, False)],
)
def test_unknown_action_policies(
    policy: Any, outcome: Outcome, acked: bool, api: respx.MockRouter, client: LockmeClient
) -> None:
    _, ack = _message(api, 8, "refund")
    assert MessageHandler(client, {}, on_unknown=policy).handle("8") == outcome
    assert ack.called is acked


def test_unknown_action_default_raises_and_leaves_unread(
    api: respx.MockRouter, client: LockmeClient
) -> None:
    _, ack = _message(api, 9, "refund")
    helper = MessageHandler(client, {"add": lambda m: None})
    with pytest.raises(UnknownActionError) as info:
        helper.handle("9")
    assert info.value.action == "refund"
    assert not ack.called
    with pytest.raises(UnknownActionError):  # not remembered as handled
        helper.handle("9")


@pytest.mark.parametrize("bad", ["", "abc", "0", "-5", None, "1e3", "12 34"])
def test_bad_message_ids_fetch_nothing(
    bad: str | None, api: respx.MockRouter, client: LockmeClient
) -> None:
    route = api.route().respond(json=True)
    with pytest.raises(InvalidRequestError):
        MessageHandler(client, {}).handle(bad)
    assert not route.called


async def test_async_helper_ack_after_success_and_duplicates(
    api: respx.MockRouter, oauth: OAuthConfig, store: MemoryTokenStore
) -> None:
    _, ack = _message(api, 10)
    gate, started = asyncio.Event(), asyncio.Event()
    calls: list[int] = []

    async def on_add(message: Message) -> None:
        calls.append(1)
        started.set()
        await gate.wait()

    async with AsyncLockmeClient(oauth, store) as aclient:
        helper = AsyncMessageHandler(aclient, {"add": on_add})
        first = asyncio.create_task(helper.handle("10"))
        await started.wait()
        assert await helper.handle("10") == Outcome.IN_PROGRESS
        assert not ack.called
        gate.set()
        assert await first == Outcome.HANDLED
        assert await helper.handle("10") == Outcome.DUPLICATE
    assert calls == [1]
    assert ack.call_count == 1


async def test_async_helper_failure_stays_unread(
    api: respx.MockRouter, oauth: OAuthConfig, store: MemoryTokenStore
) -> None:
    _, ack = _message(api, 11, "delete")

    def boom(message: Message) -> None:
        raise ValueError("nope")

    async with AsyncLockmeClient(oauth, store) as aclient:
        helper = AsyncMessageHandler(aclient, {"delete": boom})
        with pytest.raises(ValueError):
            await helper.handle("11")
    assert not ack.called
