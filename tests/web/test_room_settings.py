"""Editing a room's locks and door policy: validated, previewed with the planner (the next
day's windows before/after), audited, applied at once (re-planned) and kept across restarts."""

from __future__ import annotations

from sqlalchemy import select
from web_harness import ADMIN, LOCK, SPARE_LOCK, WebStack, page_csrf

from roomkey.service.db.models import AuditEntry, DoorAction, DoorActionStatus
from roomkey.service.runtime import Service
from roomkey.web.overrides import apply_stored_overrides

TOMORROW = "2027-02-02"


async def _book_tomorrow(stack: WebStack) -> list[int]:
    ids = [
        stack.lockme.book(stack.room_id, TOMORROW, "18:00:00", source="panel", status=1),
        stack.lockme.book(stack.room_id, TOMORROW, "20:00:00", source="panel", status=1),
    ]
    await stack.settle()
    return ids


async def test_preview_shows_how_the_next_days_windows_change(stack: WebStack) -> None:
    await _book_tomorrow(stack)
    api = stack.client(token=stack.tokens["admin"])
    body = {"locks": [LOCK], "policy": {"unlock_lead_minutes": 30, "merge_gap_minutes": 90}}
    preview = await api.post(f"/api/v1/rooms/{stack.room_id}/settings/preview", json=body)
    assert preview.status_code == 200, preview.text
    data = preview.json()
    assert data["day"] == TOMORROW
    # default policy: 17:50–19:15 and 19:50–21:15 (the 35-minute gap is over 30: two windows)
    assert [(w["start_at"][11:16], w["end_at"][11:16]) for w in data["before"]] == [
        ("16:50", "18:15"),
        ("18:50", "20:15"),
    ]  # UTC (Warsaw is UTC+1 in February)
    # 30 min lead and a 90 min merge gap: one window 17:30–21:15 local
    assert [(w["start_at"][11:16], w["end_at"][11:16]) for w in data["after"]] == [
        ("16:30", "20:15")
    ]
    assert len(data["removed"]) == 2
    assert len(data["added"]) == 1
    assert data["policy_after"]["unlock_lead_minutes"] == 30
    # nothing changed yet
    actions = await _actions(stack)
    assert {a.planned_at.strftime("%H:%M") for a in actions if a.kind.value == "unlock"} == {
        "16:50",
        "18:50",
    }


async def test_invalid_settings_are_refused_with_every_problem(stack: WebStack) -> None:
    api = stack.client(token=stack.tokens["admin"])
    body = {
        "locks": ["nope", LOCK, LOCK],
        "policy": {"unlock_lead_minutes": "5", "unlock_mode": "teleport", "extra": 1},
    }
    response = await api.put(f"/api/v1/rooms/{stack.room_id}/settings", json=body)
    assert response.status_code == 400
    problems = response.json()["error"]["problems"]
    joined = " | ".join(problems)
    assert "unknown lock 'nope'" in joined
    assert "listed twice" in joined
    assert "policy.unlock_lead_minutes" in joined
    assert "policy.unlock_mode" in joined
    assert "policy.extra" in joined
    missing = await api.put("/api/v1/rooms/999/settings", json={"locks": [LOCK]})
    assert missing.status_code == 404
    async with stack.service.session_factory() as session:
        audit = (await session.execute(select(AuditEntry))).scalars().all()
    assert not [a for a in audit if a.action.startswith("web.room_settings")]


async def test_saving_replans_at_once_and_survives_a_restart(stack: WebStack) -> None:
    await _book_tomorrow(stack)
    page = stack.client()
    await stack.login(page, ADMIN)
    form = await page.get(f"/rooms/{stack.room_id}/settings")
    fields = {
        "csrf_token": page_csrf(form.text),
        f"lock:{LOCK}": "on",
        f"lock:{SPARE_LOCK}": "on",
        "unlock_lead_minutes": "20",
        "lock_lag_minutes": "15",
        "default_slot_minutes": "60",
        "merge_gap_minutes": "30",
        "max_lateness_minutes": "15",
        "unlock_mode": "day_lock",
        "lock_action": "night_lock",
        "bookings": "paid",
    }
    preview = await page.post(
        f"/rooms/{stack.room_id}/settings", data={**fields, "step": "preview"}
    )
    assert preview.status_code == 200
    assert 'data-testid="preview"' in preview.text
    assert "door-2" in preview.text
    saved = await page.post(f"/rooms/{stack.room_id}/settings", data={**fields, "step": "save"})
    assert saved.status_code == 303

    actions = await _actions(stack)
    planned = {(a.lock_id, a.kind.value, a.planned_at.strftime("%H:%M")) for a in actions}
    assert (SPARE_LOCK, "unlock", "16:40") in planned
    assert (LOCK, "unlock", "16:40") in planned
    rooms = (await stack.client(token=stack.tokens["viewer"]).get("/api/v1/rooms")).json()
    assert rooms[0]["locks"] == [LOCK, SPARE_LOCK]
    assert rooms[0]["overridden"] is True
    assert rooms[0]["policy"]["unlock_lead_minutes"] == 20
    async with stack.service.session_factory() as session:
        audit = (
            await session.execute(
                select(AuditEntry).where(AuditEntry.action == "web.room_settings")
            )
        ).scalar_one()
    assert audit.actor == "user:alice"
    assert audit.details is not None
    assert audit.details["locks"]["after"] == [LOCK, SPARE_LOCK]

    # A restart starts from the file's configuration; the stored override is laid over it.
    restarted = Service(
        stack.web.base_config,
        clock=stack.clock,
        engine=stack.service.engine,
        secret_box=stack.service.secret_box,
        load_optional_workers=False,
    )
    try:
        assert restarted.config.room(stack.room_id).locks == [LOCK]
        await apply_stored_overrides(restarted)
        assert restarted.config.room(stack.room_id).locks == [LOCK, SPARE_LOCK]
        assert restarted.config.policy_for(stack.room_id).unlock_lead_minutes == 20
    finally:
        await restarted.lockme.aclose()

    # Reset: back to the file, re-planned again (door-2's actions are superseded).
    api = stack.client(token=stack.tokens["admin"])
    assert (await api.delete(f"/api/v1/rooms/{stack.room_id}/settings")).status_code == 200
    live = [a for a in await _actions(stack) if a.status is DoorActionStatus.PLANNED]
    assert {a.lock_id for a in live} == {LOCK}
    assert {a.planned_at.strftime("%H:%M") for a in live if a.kind.value == "unlock"} == {
        "16:50",
        "18:50",
    }
    assert (await api.delete(f"/api/v1/rooms/{stack.room_id}/settings")).status_code == 404


async def _actions(stack: WebStack) -> list[DoorAction]:
    async with stack.service.session_factory() as session:
        rows = await session.execute(
            select(DoorAction).where(DoorAction.status == DoorActionStatus.PLANNED)
        )
        return list(rows.scalars())
