"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

roomkey runs under a real uvicorn on a loopback port with both simulators and its workers
(executor, message worker, reconciliation, webhooks) on one manual ``SimClock``. The browser
logs in, watches a Lockme booking appear and its door window fire (the lock's confirmation
drawn beside the plan, without reloading), opens a door by hand and sees the lock confirm it,
and is refused as a read-only user. Screenshots of the main pages go to ``test-artifacts/``
(and the documentation's to ``docs/img/``).

Skipped with a reason only when ``/usr/bin/chromium`` is missing and ``CI`` is not ``true``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine
from web_harness import (
    ADMIN,
    DAY,
    LOCK,
    LOQED_ID,
    SPARE_LOQED_ID,
    START,
    VIEWER,
    WebStack,
    make_stack,
)

from roomkey.service.crypto import SecretBox
from roomkey.web import WebSettings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
DOCS_IMG = REPO / "docs" / "img"
WAIT_MS = 20_000

if not os.path.exists(CHROMIUM):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing in CI (scripts/check.sh installs it)", pytrace=False)
    pytest.skip(
        f"{CHROMIUM} not installed (apt-get install chromium); browser tests need it",
        allow_module_level=True,
    )

from playwright.async_api import Browser, Page, async_playwright, expect  # noqa: E402


@dataclass
class Live:
    stack: WebStack
    base: str
    browser: Browser

    async def tick(self, seconds: float, *, step: float = 1.0) -> None:
        """Move simulated time on in steps, giving workers and webhooks real time to run."""
        done = 0.0
        while done < seconds:
            await self.stack.clock.advance(step)
            done += step
            await asyncio.sleep(0.05)

    async def until(self, check: Any, *, sim_step: float = 1.0, tries: int = 60) -> None:
        """Advance time until ``check()`` (an async predicate) holds."""
        for _ in range(tries):
            if await check():
                return
            await self.tick(sim_step, step=sim_step)
        raise AssertionError("condition not reached")

    async def page(self) -> Page:
        context = await self.browser.new_context(viewport={"width": 1400, "height": 900})
        return await context.new_page()

    async def login(self, who: tuple[str, str]) -> Page:
        page = await self.page()
        await page.goto(f"{self.base}/")
        await expect(page).to_have_url(f"{self.base}/login?next=/")
        await page.fill("input[name=username]", who[0])
        await page.fill("input[name=password]", who[1])
        await page.click("button[type=submit]")
        await expect(page.get_by_test_id("whoami")).to_contain_text(who[0])
        return page


def shoot(name: str, *, docs: bool = False) -> list[Path]:
    ARTIFACTS.mkdir(exist_ok=True)
    paths = [ARTIFACTS / f"{name}.png"]
    # The documentation's copies are refreshed only on request, so a test run leaves the
    # work tree clean: ROOMKEY_UPDATE_DOCS_IMG=1 .venv/bin/pytest tests/web/test_browser.py
    if docs and os.environ.get("ROOMKEY_UPDATE_DOCS_IMG") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        paths.append(DOCS_IMG / f"{name}.png")
    return paths


async def screenshot(page: Page, name: str, *, docs: bool = False) -> None:
    first, *rest = shoot(name, docs=docs)
    await page.screenshot(path=str(first), full_page=True)
    for other in rest:
        shutil.copyfile(first, other)


@pytest.fixture
async def live(engine: AsyncEngine, secret_box: SecretBox, tmp_path: Path) -> AsyncIterator[Live]:
    settings = WebSettings(live_poll_seconds=0.25)
    stack = await make_stack(
        engine, secret_box, tmp_path, settings=settings, load_workers=True, webhook_worker=True
    )
    server = uvicorn.Server(
        uvicorn.Config(stack.app, host="127.0.0.1", port=0, lifespan="on", log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started or serving.done():
            break
        await asyncio.sleep(0.05)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield Live(stack, f"http://127.0.0.1:{port}", browser)
        finally:
            await browser.close()
            server.should_exit = True
            await serving
            await stack.close()


async def test_booking_appears_and_its_door_window_fires(live: Live) -> None:
    stack = live.stack
    login = await live.page()
    await login.goto(f"{live.base}/login")
    await screenshot(login, "login", docs=True)
    page = await live.login(ADMIN)
    room = page.get_by_test_id(f"room-{stack.room_id}")
    await expect(room).to_be_visible()
    await expect(room.locator(".bar.booking")).to_have_count(0)

    # A customer books 09:00–10:00 in the Lockme simulator: the webhook reaches roomkey, the
    # worker mirrors and plans it, and the open page redraws itself (no reload).
    rid = stack.lockme.book(stack.room_id, DAY, "09:00:00", source="panel", status=1)
    stack.lockme.book(stack.room_id, DAY, "12:00:00", source="web", status=0)  # unpaid cart
    await stack.clock.run_due()
    booking = room.locator(f'.bar.booking.paid[title*="booking {rid} "]')
    await expect(booking).to_be_visible(timeout=WAIT_MS)
    await expect(room.locator(".bar.window")).to_have_count(1, timeout=WAIT_MS)
    await expect(room.locator('[data-testid="action"]')).to_have_count(2)
    await expect(room.locator(".bar.command")).to_have_count(0)

    # Battery readings for the lock card's trend (one low enough to raise an alert).
    for pct in (81, 77, 74, 70, 66):
        await stack.loqed.battery_report(LOQED_ID, percentage=pct)
        await live.tick(60, step=30)
    await stack.loqed.battery_report(SPARE_LOQED_ID, percentage=12)
    await live.tick(5)

    # 08:50 is start − 10 min lead: the unlock fires and the lock confirms it.
    await stack.clock.advance(START + 49 * 60 - stack.clock.time())

    async def unlocked() -> bool:
        return await room.locator(".bar.command.state-confirmed").count() > 0

    await live.until(unlocked, sim_step=2.0, tries=120)
    await expect(room.locator(".bar.command.state-confirmed")).to_have_count(1, timeout=WAIT_MS)
    await expect(room.locator(".mark.action.status-done")).to_have_count(1, timeout=WAIT_MS)
    await expect(room.locator(".mark.event").first).to_be_visible()
    await screenshot(page, "today", docs=True)

    await page.goto(f"{live.base}/locks")
    card = page.get_by_test_id(f"lock-{LOCK}")
    await expect(card.get_by_test_id("bolt")).to_have_text("day_lock")
    await expect(card.locator("svg.spark")).to_be_visible()
    await expect(page.get_by_test_id("lock-door-2").locator("ul.alerts")).to_contain_text("battery")
    await screenshot(page, "locks", docs=True)

    await page.goto(f"{live.base}/events?booking={rid}")
    await expect(page.get_by_test_id("event-row").first).to_be_visible()
    await expect(page.locator("table.log")).to_contain_text("Lockme add")
    await expect(page.locator("table.log")).to_contain_text("plan day_lock")
    async with page.expect_download() as download_info:
        await page.get_by_test_id("csv").click()
    download = await download_info.value
    csv_path = ARTIFACTS / "events.csv"
    ARTIFACTS.mkdir(exist_ok=True)
    await download.save_as(str(csv_path))
    assert f",{rid}," in csv_path.read_text()
    await page.goto(f"{live.base}/events")
    await screenshot(page, "events", docs=True)

    await page.goto(f"{live.base}/alerts")
    await expect(page.get_by_test_id("alert-row").first).to_contain_text("low battery")
    await screenshot(page, "alerts", docs=True)


async def test_open_by_hand_and_see_the_lock_confirm(live: Live) -> None:
    stack = live.stack
    page = await live.login(ADMIN)
    await page.get_by_test_id(f"open-{stack.room_id}").click()
    await expect(page.locator("h1")).to_contain_text("Open the door")
    await screenshot(page, "confirm-open", docs=True)
    await page.get_by_test_id("confirm").click()
    state = page.get_by_test_id("command-state")
    await expect(state).to_have_count(1)
    assert await state.inner_text() in {"pending", "sending", "sent", "accepted"}

    async def confirmed() -> bool:
        return (await state.inner_text()) == "confirmed"

    await live.until(confirmed, sim_step=1.0, tries=60)
    await expect(state).to_have_text("confirmed", timeout=WAIT_MS)
    await expect(page.get_by_test_id("command-row")).to_contain_text("user:alice")
    await screenshot(page, "command-confirmed", docs=True)
    opens = [c for c in stack.loqed.received(LOQED_ID) if "open" in str(c).lower()]
    assert len(opens) == 1  # exactly one OPEN reached the lock


async def test_read_only_user_is_refused(live: Live) -> None:
    stack = live.stack
    page = await live.login(VIEWER)
    await expect(page.get_by_test_id("whoami")).to_contain_text("read-only")
    await expect(page.get_by_test_id(f"open-{stack.room_id}")).to_have_count(0)
    response = await page.goto(f"{live.base}/rooms/{stack.room_id}/door/open")
    assert response is not None
    assert response.status == 403
    await expect(page.get_by_test_id("error")).to_contain_text("Your role may not do this")
    await screenshot(page, "read-only-refused", docs=True)
    # Forging the POST from the page (with the viewer's own CSRF token) is refused too.
    status = await page.evaluate(
        """async (url) => {
            const home = await fetch('/');
            const token = (await home.text()).match(/name="csrf_token" value="([^"]+)"/)[1];
            const body = new URLSearchParams({csrf_token: token, confirm: 'yes'});
            const r = await fetch(url, {method: 'POST', body});
            return r.status;
        }""",
        f"/rooms/{stack.room_id}/door/open",
    )
    assert status == 403
    assert stack.loqed.received(LOQED_ID) == []


async def test_room_settings_preview_and_webhooks_pages(live: Live) -> None:
    stack = live.stack
    stack.lockme.book(stack.room_id, "2027-02-02", "18:00:00", source="panel", status=1)
    stack.lockme.book(stack.room_id, "2027-02-02", "19:00:00", source="panel", status=1)
    await stack.clock.run_due()
    page = await live.login(ADMIN)
    await page.goto(f"{live.base}/rooms/{stack.room_id}/settings")
    await page.fill("input[name=unlock_lead_minutes]", "30")
    await page.fill("input[name=merge_gap_minutes]", "0")
    await page.check("input[name='lock:door-2']")

    async def planned() -> bool:
        async with stack.service.session_factory() as session:
            from sqlalchemy import func, select

            from roomkey.service.db.models import Reservation

            count = (await session.execute(select(func.count(Reservation.id)))).scalar_one()
        return bool(count == 2)

    await live.until(planned, sim_step=0.5, tries=40)
    await page.get_by_test_id("preview-button").click()
    preview = page.get_by_test_id("preview")
    await expect(preview).to_contain_text("door-2")
    await expect(preview.locator("li.added").first).to_be_visible()
    await screenshot(page, "room-settings-preview", docs=True)
    await page.get_by_test_id("save").click()
    await expect(page.get_by_test_id(f"room-row-{stack.room_id}")).to_contain_text("door-2")

    await page.goto(f"{live.base}/webhooks")
    await page.fill("input[name=url]", "http://127.0.0.1:9/roomkey-hook")
    await page.fill("input[name=description]", "venue chat bot")
    await page.click("form.settings button[type=submit]")
    await expect(page.get_by_test_id("secret")).to_contain_text("whsec_")
    await page.goto(f"{live.base}/webhooks")
    await screenshot(page, "webhooks", docs=True)
