"""Operator actions and views: acknowledging alerts, re-running reconciliation, personal data
in the event log, CSV export hygiene, live updates, demo credentials."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from sqlalchemy import select
from web_harness import ADMIN, DAY, LOCK, VIEWER, WebStack, page_csrf

from roomkey.service.alerts import AlertKind, raise_alert
from roomkey.service.clock import utc_now
from roomkey.service.db.models import AuditEntry, EventSource
from roomkey.service.db.models import LockEvent as LockEventRow
from roomkey.web import create_demo_credentials
from roomkey.web.live import change_stream
from roomkey.web.models import Role
from roomkey.web.queries import events_csv
from roomkey.web.schemas import EventOut


async def _alert(stack: WebStack) -> int:
    async with stack.service.session_factory() as session, session.begin():
        alert = await raise_alert(
            session,
            AlertKind.MOTOR_STALL,
            subject=LOCK,
            message="motor stalled",
            now=utc_now(stack.clock),
            lock_id=LOCK,
        )
    assert alert is not None
    return alert.id


async def test_acknowledging_alerts_from_the_page_and_the_api(stack: WebStack) -> None:
    first = await _alert(stack)
    page = stack.client()
    await stack.login(page, ADMIN)
    alerts = await page.get("/alerts")
    assert "motor stalled" in alerts.text
    done = await page.post(f"/alerts/{first}/ack", data={"csrf_token": page_csrf(alerts.text)})
    assert done.status_code == 303
    assert "motor stalled" not in (await page.get("/alerts")).text
    closed = (await page.get("/alerts?all=1")).text
    assert "by user:alice" in closed

    second = await _alert(stack)
    api = stack.client(token=stack.tokens["admin"])
    assert (await api.post(f"/api/v1/alerts/{second}/acknowledge")).status_code == 200
    again = await api.post(f"/api/v1/alerts/{second}/acknowledge")
    assert again.status_code == 404
    assert again.json()["error"]["type"] == "not_found"
    assert (await api.get("/api/v1/alerts")).json() == []
    async with stack.service.session_factory() as session:
        acks = (
            await session.execute(
                select(AuditEntry.actor).where(AuditEntry.action == "web.alert_ack")
            )
        ).scalars()
        assert sorted(acks) == ["user:alice", "user:alice (token:tests)"]


async def test_rerunning_reconciliation_heals_a_missed_booking(stack: WebStack) -> None:
    stack.lockme.configure_department(next(iter(stack.lockme.departments)), webhook_active=False)
    rid = stack.lockme.book(stack.room_id, DAY, "15:00:00", source="panel", status=1)
    await stack.settle()
    api = stack.client(token=stack.tokens["viewer"])
    timeline = f"/api/v1/rooms/{stack.room_id}/timeline"
    assert (await api.get(timeline)).json()["bookings"] == []  # the webhook never came

    page = stack.client()
    await stack.login(page, ADMIN)
    confirm = await page.get("/reconcile")
    done = await page.post("/reconcile", data={"csrf_token": page_csrf(confirm.text)})
    assert done.status_code == 303
    assert "reconciled 1 room(s): 1 added" in done.headers["location"].replace("+", " ").replace(
        "%28", "("
    ).replace("%29", ")").replace("%3A", ":").replace("%2C", ",")
    assert [b["id"] for b in (await api.get(timeline)).json()["bookings"]] == [rid]

    admin = stack.client(token=stack.tokens["admin"])
    report = (await admin.post("/api/v1/reconcile")).json()
    assert report["finished"] is True
    assert report["report"]["ran"] is True


async def _lock_event(stack: WebStack, raw: dict[str, object]) -> None:
    async with stack.service.session_factory() as session, session.begin():
        session.add(
            LockEventRow(
                lock_id=LOCK,
                source=EventSource.CLOUD,
                event_type="STATE_CHANGED_OPEN",
                kind="state_changed",
                bolt_state="open",
                key_local_id=3,
                received_at=utc_now(stack.clock),
                dedupe_key="x",
                raw=raw,
            )
        )


async def test_event_log_hides_email_addresses_unless_kept(stack: WebStack) -> None:
    raw = {"key_account_email": "guest@example.com", "key_name_user": "Guest"}
    await _lock_event(stack, raw)
    api = stack.client(token=stack.tokens["viewer"])
    rows = (await api.get("/api/v1/events", params={"type": "loqed"})).json()
    assert rows
    assert "guest@example.com" not in json.dumps(rows)
    assert "guest@example.com" not in (await api.get("/api/v1/events.csv")).text
    page = stack.client()
    await stack.login(page, VIEWER)
    assert "guest@example.com" not in (await page.get("/events")).text

    config = stack.service.config
    stack.service.config = config.model_copy(
        update={"loqed": config.loqed.model_copy(update={"keep_event_pii": True})}
    )
    kept = (await api.get("/api/v1/events", params={"type": "loqed"})).json()
    assert "key_account_email=guest@example.com" in kept[0]["detail"]


def test_csv_cells_cannot_smuggle_spreadsheet_formulas() -> None:
    row = EventOut(
        type="command",
        at=dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
        id="=cmd()",
        room_id=1,
        lock_id="+lock",
        reservation_id=None,
        summary="@SUM(A1)",
        detail="-2+3",
    )
    text = events_csv([row])
    assert "'=cmd()" in text
    assert "'+lock" in text
    assert "'@SUM(A1)" in text
    assert "'-2+3" in text


async def test_live_stream_announces_changes(stack: WebStack) -> None:
    stream = change_stream(stack.service, stack.web.settings, _never, sleep=_yield)
    first = await anext(stream)
    assert first.startswith("retry: 3000\nid: ")
    digest = first.split("id: ", 1)[1].split("\n", 1)[0]
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.05)
    assert not pending.done()  # nothing changed: nothing sent
    stack.lockme.book(stack.room_id, DAY, "11:00:00", source="panel", status=1)
    await stack.settle()
    seen: set[str] = set()
    event = await asyncio.wait_for(pending, 10)
    while True:
        assert "event: change\n" in event
        seen |= set(json.loads(event.split("data: ", 1)[1])["changed"])
        if {"bookings", "plan", "messages"} <= seen:
            break
        event = await asyncio.wait_for(anext(stream), 10)
    await stream.aclose()

    # A browser reconnecting with the digest it last saw hears at once that it missed changes.
    resumed = change_stream(stack.service, stack.web.settings, _never, last_event_id=digest)
    assert "event: change" in await anext(resumed)
    await resumed.aclose()
    current = change_stream(stack.service, stack.web.settings, _never, last_event_id=None)
    fresh = (await anext(current)).split("id: ", 1)[1].split("\n", 1)[0]
    await current.aclose()
    same = change_stream(stack.service, stack.web.settings, _never, last_event_id=fresh)
    assert "event: change" not in await anext(same)
    await same.aclose()


async def test_live_stream_ends_by_itself(stack: WebStack) -> None:
    ticks = iter(range(1000))
    stream = change_stream(
        stack.service,
        stack.web.settings,
        _never,
        sleep=_yield,
        monotonic=lambda: float(next(ticks)) * 10,
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].startswith("retry:")
    assert len(chunks) < 10


async def _never() -> bool:
    return False


async def _yield(_seconds: float) -> None:
    await asyncio.sleep(0.01)


async def test_partial_pages_for_live_refresh(stack: WebStack) -> None:
    page = stack.client()
    await stack.login(page, ADMIN)
    full = await page.get("/locks")
    partial = await page.get("/locks", headers={"X-Partial": "1"})
    assert "<html" in full.text
    assert "<html" not in partial.text
    assert 'data-testid="lock-door-1"' in partial.text
    assert full.headers["cache-control"] == "no-store"
    assert full.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in full.headers["content-security-policy"]
    assert "script-src 'self'" in full.headers["content-security-policy"]
    assert (await page.get("/dashboard")).headers["location"] == "/"
    landing = await page.get("/dashboard/", follow_redirects=True)  # the demo prints this one
    assert landing.status_code == 200
    assert 'data-testid="whoami"' in landing.text


async def test_demo_credentials_log_in_with_their_roles(stack: WebStack) -> None:
    creds = await create_demo_credentials(stack.service)
    assert {(c.username, c.role) for c in creds} == {
        ("admin", Role.ADMIN),
        ("viewer", Role.READ_ONLY),
    }
    again = await create_demo_credentials(stack.service)  # a second demo run resets them
    assert {c.password for c in again}.isdisjoint({c.password for c in creds})
    for cred in again:
        client = stack.client()
        assert (await stack.login(client, (cred.username, cred.password))).status_code == 303
        who = (await client.get("/")).text
        assert ("admin" if cred.role is Role.ADMIN else "read-only") in who


async def test_installing_twice_keeps_one_dashboard(stack: WebStack) -> None:
    from fastapi.routing import iter_route_contexts

    from roomkey.web import WebSettings, install

    before = [c.path for c in iter_route_contexts(stack.app.routes)]
    tuned = WebSettings(session_hours=1.0)
    state = install(stack.app, stack.service, tuned)
    assert state is stack.web
    assert state.settings is tuned
    assert [c.path for c in iter_route_contexts(stack.app.routes)] == before
