"""The sink's web inbox in a real browser: live list, message view, search and clear; email
text that is markup shown as text, and an HTML body that runs no script and loads nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from playwright.async_api import Page, Route, expect

from tests.browser.emails import HOSTILE_SUBJECT, send_emails
from tests.private_stack import PrivateStack

DELIVERY_SECONDS = 20.0
HOSTILE_HTML = (
    "<p>Hello <b>there</b></p>"
    "<script>parent.document.title = 'pwned by script'; document.title = 'pwned';</script>"
    '<img src="http://203.0.113.7/track.png" onerror="document.title=\'pwned by onerror\'">'
)


async def test_the_inbox_shows_a_hostile_email_as_text_and_runs_none_of_it(
    page: Page, console_stack: PrivateStack, tmp_path: Path
) -> None:
    # What reaches the network: a request the page's policies block never gets to a route
    # (Chromium may still report it as a "request" event, blocked), and one that did would be
    # aborted here rather than sent.
    fetched_hosts: set[str] = set()
    sink_host = urlsplit(console_stack.sink_url).netloc

    async def fetch(route: Route) -> None:
        host = urlsplit(route.request.url).netloc
        fetched_hosts.add(host)
        await (route.continue_() if host == sink_host else route.abort())

    await page.route("**/*", fetch)
    async with httpx.AsyncClient(timeout=15) as client:
        # Only this test's email in the inbox (the console's tests send one like it).
        (await client.delete(f"{console_stack.sink_url}/api/v1/messages")).raise_for_status()
        await page.goto(console_stack.sink_url)
        title = await page.title()
        response = await client.post(
            f"{console_stack.api_url}/emails",
            json={
                "from": "demo@example.com",
                "to": ["you@example.com"],
                "subject": HOSTILE_SUBJECT,
                "text": "plain part",
                "html": HOSTILE_HTML,
            },
        )
        assert response.status_code == 202, response.text
    row = page.get_by_test_id("message-row").filter(has_text=HOSTILE_SUBJECT)
    await expect(row).to_have_count(1, timeout=DELIVERY_SECONDS * 1000)
    assert await row.get_by_test_id("message-subject").text_content() == HOSTILE_SUBJECT
    await page.screenshot(path=tmp_path / "hostile-subject-inbox.png", full_page=True)

    await row.click()
    view = page.get_by_test_id("message-view")
    await expect(view.get_by_test_id("message-view-subject")).to_have_text(HOSTILE_SUBJECT)
    await expect(view.get_by_test_id("message-text")).to_contain_text("plain part")
    await expect(view.get_by_test_id("message-headers")).to_contain_text("X-Accepted-At")
    html_view = page.frame_locator("[data-testid=message-html]")
    await expect(html_view.locator("b")).to_have_text("there")
    await asyncio.sleep(1)  # a script or an onerror, had either run, would have by now
    await page.screenshot(path=tmp_path / "hostile-html-inbox.png", full_page=True)

    assert await page.title() == title
    [frame] = [frame for frame in page.frames if frame != page.main_frame]
    assert "pwned" not in await frame.title()  # neither the script nor the onerror ran inside
    assert await page.locator("img").count() == 0  # none in the page itself, only in the frame
    assert fetched_hosts == {sink_host}


async def test_the_inbox_lists_live_searches_and_clears(
    page: Page, console_stack: PrivateStack, tmp_path: Path
) -> None:
    await page.goto(console_stack.sink_url)
    await send_emails(console_stack, 2, subject="findable parcel")
    rows = page.get_by_test_id("message-row")
    await expect(rows.filter(has_text="findable parcel")).to_have_count(
        2, timeout=DELIVERY_SECONDS * 1000
    )  # arrived without a reload

    await page.get_by_test_id("search-input").fill('subject:"findable parcel #2"')
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("findable parcel #2")
    await page.screenshot(path=tmp_path / "search.png", full_page=True)

    await page.get_by_test_id("search-input").fill("")
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_test_id("clear-button").click()
    await expect(rows).to_have_count(0)
    await expect(page.get_by_test_id("empty-inbox")).to_be_visible()
    assert await console_stack.stored_count() == 0
