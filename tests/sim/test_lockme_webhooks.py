"""Lockme simulator: webhook messages, delivery, redelivery until read, carts that lapse."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from roomkey.sim.clock import SimClock
from roomkey.sim.lockme import (
    CART_HOLD_SECONDS,
    DEFAULT_SCHEDULE,
    BadRequest,
    Conflict,
    LockmeSimulator,
)

START = 1_790_000_000.0
DAY = "2026-09-28"
HOOK = "http://receiver.test/hooks/lockme?s=hook-secret"


@dataclass
class Receiver:
    """A webhook receiver app that records what it gets and can be switched off."""

    calls: list[dict[str, object]] = field(default_factory=list)
    up: bool = True

    def app(self) -> Starlette:
        async def hook(request: Request) -> PlainTextResponse:
            if not self.up:
                raise httpx.ConnectError("receiver down")
            self.calls.append({"method": request.method, "body": await request.body(),
                               "ua": request.headers.get("user-agent"),
                               "id": request.headers.get("x-messageid"),
                               "secret": request.query_params.get("s")})
            return PlainTextResponse("OK")

        return Starlette(routes=[Route("/hooks/lockme", hook, methods=["GET", "POST"])])


@dataclass
class Env:
    sim: LockmeSimulator
    clock: SimClock
    receiver: Receiver
    room: int
    dept: int


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    receiver = Receiver()
    clock = SimClock(manual=True, start=START)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(receiver.app())) as delivery:
        sim = LockmeSimulator(clock, delivery_client=delivery)
        dept = sim.add_department("Escape", HOOK)
        room = sim.add_room(dept.id, "Vault", [{"hour": "10:00:00", "pricers": []},
                                               {"hour": "12:00:00", "pricers": []}])
        yield Env(sim, clock, receiver, room.id, dept.id)
        await sim.aclose()


async def test_each_change_posts_an_empty_body_with_lockme_headers(env: Env) -> None:
    rid = env.sim.book(env.room, DAY, "10:00:00", source="widget", name="Ann")
    env.sim.edit(rid, {"people": 3})
    env.sim.cancel(rid)
    await env.sim.flush()
    messages = env.sim.messages()
    assert [m.action for m in messages] == ["add", "edit", "delete"]
    assert all(m.reservationid == rid and m.roomid == env.room for m in messages)
    assert messages[1].data["people"] == 3
    assert messages[1].data["from_date"] == DAY
    assert messages[1].data["from_hour"] == "10:00:00"
    assert messages[0].data["from_date"] is None
    assert [c["id"] for c in env.receiver.calls] == [str(m.id) for m in messages]
    for call in env.receiver.calls:
        assert (call["method"], call["body"], call["ua"]) == ("POST", b"", "LockMe/1.0")
        assert call["secret"] == "hook-secret"
    assert all(m.attempts[0].outcome == "delivered" and m.attempts[0].status_code == 200
               for m in messages)


async def test_redelivered_on_schedule_until_marked_read(env: Env) -> None:
    env.sim.book(env.room, DAY, "10:00:00")
    message = env.sim.messages()[0]
    assert message.schedule == [START + off for off in DEFAULT_SCHEDULE]
    await env.clock.advance(16 * 60)
    assert [a.at - START for a in message.attempts] == [0, 60, 300, 900]
    assert env.sim.mark_read(message.id) is True
    await env.clock.advance(2 * 86400)
    assert len(message.attempts) == 4
    assert env.sim.webhooks.pending() == 0


async def test_redelivery_stops_after_24_hours(env: Env) -> None:
    env.sim.book(env.room, DAY, "10:00:00")
    message = env.sim.messages()[0]
    await env.clock.advance(3 * 86400)
    assert [a.at - START for a in message.attempts] == list(DEFAULT_SCHEDULE)
    assert message.attempts[-1].at - START == 86400
    assert len(env.receiver.calls) == len(DEFAULT_SCHEDULE)
    assert not message.read


async def test_custom_schedule(env: Env) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(env.receiver.app())) as c:
        sim = LockmeSimulator(env.clock, delivery_client=c, redelivery_schedule=[0, 10, 30])
        dept = sim.add_department("D", HOOK)
        room = sim.add_room(dept.id, "R")
        sim.book(room.id, DAY, "10:00:00")
        await env.clock.advance(100)
        assert [a.at - START for a in sim.messages()[0].attempts] == [0, 10, 30]
    with pytest.raises(ValueError, match="schedule"):
        LockmeSimulator(env.clock, redelivery_schedule=[])


async def test_down_receiver_simply_misses_deliveries(env: Env) -> None:
    env.receiver.up = False
    env.sim.book(env.room, DAY, "10:00:00")
    message = env.sim.messages()[0]
    await env.clock.advance(301)
    assert [a.outcome for a in message.attempts] == ["failed", "failed", "failed"]
    assert all(a.error for a in message.attempts)
    env.receiver.up = True
    await env.clock.advance(900 - 301)
    assert [a.outcome for a in message.attempts] == ["failed"] * 3 + ["delivered"]
    assert [c["id"] for c in env.receiver.calls] == [str(message.id)]


async def test_unreachable_url_is_recorded_without_leaking_the_query(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(_refuse)) as client:
        sim = LockmeSimulator(env.clock, delivery_client=client)
        dept = sim.add_department("D", HOOK)
        room = sim.add_room(dept.id, "R")
        sim.book(room.id, DAY, "10:00:00")
        with caplog.at_level("INFO"):
            await sim.flush()
    assert sim.messages()[0].attempts[0].error == "ConnectError"
    assert "hook-secret" not in caplog.text
    assert "receiver.test/hooks/lockme" in caplog.text


def _refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


async def test_method_is_configurable_and_inactive_integrations_get_nothing(env: Env) -> None:
    env.sim.configure_department(env.dept, webhook_method="get")
    env.sim.book(env.room, DAY, "10:00:00")
    await env.sim.flush()
    assert env.receiver.calls[-1]["method"] == "GET"
    env.sim.configure_department(env.dept, webhook_active=False)
    env.sim.book(env.room, DAY, "12:00:00")
    await env.sim.flush()
    assert len(env.receiver.calls) == 1
    assert env.sim.messages()[-1].attempts == []


async def test_api_changes_notify_unless_switched_off(env: Env) -> None:
    env.sim.add_oauth_client("c", "secret-x", "http://127.0.0.1/cb")
    token = env.sim.issue_token("c")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(env.sim.app), base_url="http://lockme.test/v2.4",
        headers={"Authorization": f"Bearer {token['access_token']}"},
    ) as api:
        resp = await api.put(f"/room/{env.room}/reservation",
                             json={"date": DAY, "hour": "10:00:00"})
        assert env.sim.messages()[-1].action == "add"
        assert env.sim.messages()[-1].data["source"] == "api"
        env.sim.configure_department(env.dept, notify_api_changes=False)
        before = len(env.sim.messages())
        await api.post(f"/room/{env.room}/reservation/{resp.json()}", json={"people": 2})
        await api.delete(f"/room/{env.room}/reservation/{resp.json()}")
        assert len(env.sim.messages()) == before
    with pytest.raises(BadRequest, match="Unknown department setting"):
        env.sim.configure_department(env.dept, colour="red")


async def test_test_trigger_creates_a_test_message(env: Env) -> None:
    message = env.sim.trigger_test(env.dept)
    await env.sim.flush()
    assert message.to_wire() == {"action": "test", "roomid": env.room, "reservationid": None,
                                 "data": {}}
    assert env.receiver.calls[-1]["id"] == str(message.id)


async def test_unpaid_web_cart_lapses_after_20_minutes_with_a_delete(env: Env) -> None:
    rid = env.sim.book(env.room, DAY, "10:00:00", source="web", status=0)
    assert env.sim.messages()[-1].action == "add"
    assert env.sim.messages()[-1].data["status"] == 0
    await env.clock.advance(CART_HOLD_SECONDS - 1)
    assert rid in env.sim.reservations
    await env.clock.advance(1)
    assert rid not in env.sim.reservations
    last = env.sim.messages()[-1]
    assert (last.action, last.reservationid, last.created) == ("delete", rid,
                                                               START + CART_HOLD_SECONDS)
    # the slot is free again
    assert env.sim.book(env.room, DAY, "10:00:00", source="web", status=0) != rid


async def test_cart_holds_the_slot_and_payment_keeps_it(env: Env) -> None:
    rid = env.sim.book(env.room, DAY, "10:00:00", source="web", status=0)
    with pytest.raises(Conflict, match="taken"):
        env.sim.book(env.room, DAY, "10:00:00", source="widget")
    await env.clock.advance(300)
    paid = env.sim.pay(rid)
    assert paid.status == 1
    assert env.sim.messages()[-1].action == "edit"
    assert env.sim.messages()[-1].data["status"] == 1
    await env.clock.advance(CART_HOLD_SECONDS)
    assert rid in env.sim.reservations
    assert [m.action for m in env.sim.messages()] == ["add", "edit"]


async def test_customers_can_only_book_offered_slots(env: Env) -> None:
    with pytest.raises(Conflict, match="No bookable slot"):
        env.sim.book(env.room, DAY, "11:00:00", source="web", status=0)
    staff = env.sim.book(env.room, DAY, "15:00:00", source="panel")
    assert staff in env.sim.reservations


async def test_staff_move_keeps_from_date_and_hour(env: Env) -> None:
    rid = env.sim.book(env.room, DAY, "10:00:00")
    env.sim.move(rid, roomid=env.room, date="2026-09-30", hour="12:00:00")
    last = env.sim.messages()[-1]
    assert last.action == "edit"
    assert (last.data["from_date"], last.data["from_hour"]) == (DAY, "10:00:00")
    assert (last.data["date"], last.data["hour"]) == ("2026-09-30", "12:00:00")


async def test_deliveries_in_flight_are_bounded() -> None:
    in_flight = peak = 0
    gate_open = asyncio.Event()

    async def hook(_request: Request) -> PlainTextResponse:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await gate_open.wait()
        in_flight -= 1
        return PlainTextResponse("OK")

    app = Starlette(routes=[Route("/hooks/lockme", hook, methods=["POST"])])
    clock = SimClock(manual=True, start=START)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app)) as delivery:
        sim = LockmeSimulator(clock, delivery_client=delivery)
        sim.webhooks.max_parallel = 3
        dept = sim.add_department("Escape", HOOK)
        room = sim.add_room(dept.id, "Vault", [{"hour": "10:00:00", "pricers": []}])
        for day in range(10):
            sim.book(room.id, f"2026-10-{day + 1:02d}", "10:00:00")
        sends = asyncio.gather(*(sim.webhooks.deliver(m) for m in sim.messages()))
        for _ in range(50):
            await asyncio.sleep(0)
        assert peak == 3
        gate_open.set()
        attempts = await sends
        assert [a.outcome for a in attempts if a is not None] == ["delivered"] * 10
        assert peak == 3
        await sim.aclose()


def test_max_parallel_must_be_positive() -> None:
    from roomkey.sim.lockme.faults import Faults
    from roomkey.sim.lockme.webhooks import WebhookDispatcher

    clock = SimClock(manual=True)
    faults = Faults(clock.time)
    with pytest.raises(ValueError, match="max_parallel"):
        WebhookDispatcher(clock, faults, lambda _id: None, max_parallel=0)
