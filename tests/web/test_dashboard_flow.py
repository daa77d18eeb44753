"""End to end in-process: a Lockme booking shows up on the dashboard, its door window fires
on the LOQED simulator, the lock's confirmation is drawn beside the plan, and a manual open
is confirmed — seen through the pages, the event log, its CSV export and the JSON API."""

from __future__ import annotations

import csv
import io
import re

from web_harness import ADMIN, DAY, LOCK, WebStack, page_csrf

from roomkey.service.executor import Executor, context_for


async def _run_executor(stack: WebStack, seconds: float, step: float = 1.0) -> None:
    """Advance time in steps, letting the executor fire and the simulator answer."""
    executor = Executor(context_for(stack.service))
    try:
        elapsed = 0.0
        while elapsed < seconds:
            await executor.run_once()
            await stack.clock.advance(step)
            elapsed += step
        await executor.run_once()
    finally:
        await executor.aclose()


async def test_booking_appears_fires_and_is_confirmed(stack: WebStack) -> None:
    web = stack.client()
    assert (await stack.login(web, ADMIN)).status_code == 303
    before = await web.get("/")
    assert 'data-testid="booking-row"' not in before.text

    rid = stack.lockme.book(stack.room_id, DAY, "09:00:00", source="panel", status=1)
    await stack.settle()

    page = await web.get("/")
    assert f'data-booking="{rid}"' in page.text
    assert page.text.count('data-testid="action-row" data-status="planned"') == 2

    # 08:00 now; the unlock is planned at 08:50 (10 minutes lead). Jump to just before it.
    await stack.clock.advance(49 * 60)
    await _run_executor(stack, 90)
    page = await web.get("/")
    assert 'data-testid="action-row" data-status="done"' in page.text
    assert "command state-confirmed" in page.text  # the lock's confirmation beside the plan

    api = stack.client(token=stack.tokens["viewer"])
    timeline = (
        await api.get(
            f"/api/v1/rooms/{stack.room_id}/timeline", params={"start": "2027-02-01T00:00:00+01:00"}
        )
    ).json()
    assert [b["id"] for b in timeline["bookings"]] == [rid]
    states = {c["state"] for c in timeline["commands"]}
    assert states == {"confirmed"}
    assert any(e["bolt_state"] == "day_lock" for e in timeline["events"])

    every = (await api.get("/api/v1/events", params={"type": "command"})).json()
    assert [(e["room_id"], e["reservation_id"], e["summary"]) for e in every] == [
        (stack.room_id, rid, "plan day_lock")
    ]
    log = await web.get("/events", params={"booking": str(rid)})
    assert "Lockme add" in log.text
    assert "plan day_lock" in log.text
    exported = await web.get("/events.csv", params={"booking": str(rid), "type": "lockme"})
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert rows
    assert {r["type"] for r in rows} == {"lockme"}
    assert all(r["reservation_id"] == str(rid) for r in rows)


async def test_manual_open_is_audited_and_confirmed(stack: WebStack) -> None:
    web = stack.client()
    await stack.login(web, ADMIN)
    confirm = await web.get(f"/rooms/{stack.room_id}/door/open")
    assert "Yes, open now" in confirm.text
    token = page_csrf(confirm.text)
    done = await web.post(
        f"/rooms/{stack.room_id}/door/open", data={"csrf_token": token, "confirm": "yes"}
    )
    assert done.status_code == 303
    location = done.headers["location"]
    assert location.startswith("/commands?ids=")
    pending = await web.get(location)
    assert re.search(r'data-testid="command-state">(pending|sending|sent)<', pending.text)

    await _run_executor(stack, 15)
    confirmed = await web.get(location)
    assert 'data-testid="command-state">confirmed<' in confirmed.text
    assert "user:alice" in confirmed.text

    api = stack.client(token=stack.tokens["admin"])
    events = (await api.get("/api/v1/events", params={"lock": LOCK, "type": "command"})).json()
    assert events[0]["summary"] == "manual open by user:alice"
    assert events[0]["state"] == "confirmed"
