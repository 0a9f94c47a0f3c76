"""The console in a real browser: the seed's story told live, Kafka going away and coming
back, and email text that is markup shown as text. A screenshot of each step is saved in the
test's temporary directory."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from playwright.async_api import Page, expect

from deploy.local.kafka import KafkaBroker
from tests.browser.console_page import CONSUMED_SUM, LANES
from tests.browser.emails import HOSTILE_SUBJECT, send_emails
from tests.private_stack import PrivateStack

UPDATE_SECONDS = 20.0  # generous: a worker's start and the group's rebalance come first


async def open_console(page: Page, stack: PrivateStack) -> None:
    await page.goto(stack.console_url)
    await expect(page.get_by_test_id("kafka-status")).to_have_text("live", timeout=10_000)
    await expect(page.get_by_test_id("partition-lane")).to_have_count(3)


async def until_consumed(page: Page, expected: int) -> None:
    """Until the CURRENT-OFFSET markers add up to `expected` records read and committed."""
    await page.wait_for_function(
        f"expected => ({CONSUMED_SUM})() === expected", arg=expected, timeout=UPDATE_SECONDS * 1000
    )


async def test_the_console_shows_offsets_move_pause_and_resume(
    page: Page, console_stack: PrivateStack, tmp_path: Path
) -> None:
    stack = console_stack
    await open_console(page, stack)
    consumed_before = int(await page.evaluate(CONSUMED_SUM))
    # The one broker is up and leads every partition, the only replica, in sync.
    [broker] = await page.get_by_test_id("broker").all()
    await expect(broker).to_have_attribute("data-status", "up")
    node_id = await broker.get_attribute("data-node-id")
    assert {(lane["leader"], lane["isr"]) for lane in await page.evaluate(LANES)} == {
        (node_id, node_id)
    }
    await expect(page.get_by_test_id("replication")).to_have_text(
        "every partition has all its replicas in sync"
    )
    generation = page.get_by_test_id("group-generation")
    await expect(generation).to_have_text(re.compile(r"^\d+$"))
    generation_before = int(await generation.text_content() or "")
    await page.screenshot(path=tmp_path / "1-opened.png", full_page=True)

    await send_emails(stack, 6)
    await until_consumed(page, consumed_before + 6)
    await expect(page.get_by_test_id("total-lag")).to_have_text("0")
    lanes = await page.evaluate(LANES)
    committed = [lane for lane in lanes if lane["current"] != ""]
    assert all(lane["current"] == lane["end"] for lane in committed), lanes
    # Each ▼ sits on its lane's CURRENT-OFFSET slot: the empty one after the last record.
    assert all(lane["marker_on"] == lane["current"] for lane in lanes), lanes
    await page.screenshot(path=tmp_path / "2-six-delivered.png", full_page=True)

    await stack.stop(stack.stack.worker())
    await send_emails(stack, 3)
    total_lag = page.get_by_test_id("total-lag")
    await expect(total_lag).to_have_text("3", timeout=UPDATE_SECONDS * 1000)
    await expect(page.get_by_test_id("group-state")).to_have_text("Empty")
    assert int(await page.evaluate(CONSUMED_SUM)) == consumed_before + 6  # the pointer stopped
    stopped_at = {
        lane["partition"]: int(lane["current"] or 0)
        for lane in await page.evaluate(LANES)
        if int(lane["end"]) > int(lane["current"] or 0)
    }
    await page.screenshot(path=tmp_path / "3-worker-stopped-lag-3.png", full_page=True)

    await stack.start(stack.stack.worker())
    resumed = page.locator('[data-testid=timeline-event][data-kind="resumed"]')
    # Every partition that waited resumes exactly where its CURRENT-OFFSET stood.
    for partition, offset in stopped_at.items():
        await expect(
            resumed.filter(
                has_text=f"{stack.settings.email_topic}-{partition} resumed at offset {offset} "
            )
        ).to_have_count(1, timeout=UPDATE_SECONDS * 1000)
    await expect(total_lag).to_have_text("0", timeout=UPDATE_SECONDS * 1000)
    await until_consumed(page, consumed_before + 9)
    await expect(page.get_by_test_id("member-row")).to_have_count(1)
    await expect(page.get_by_test_id("member-instance-id")).to_contain_text("dynamic")
    # Its stop and its start each rebalanced the group: a generation each.
    await page.wait_for_function(
        "least => Number(document.querySelector('[data-testid=group-generation]').textContent)"
        " >= least",
        arg=generation_before + 2,
        timeout=UPDATE_SECONDS * 1000,
    )
    await page.screenshot(path=tmp_path / "4-resumed-lag-0.png", full_page=True)


async def test_the_console_shows_a_subject_as_text_and_runs_none_of_it(
    page: Page, console_stack: PrivateStack, tmp_path: Path
) -> None:
    await open_console(page, console_stack)
    title = await page.title()

    await send_emails(console_stack, 1, subject=HOSTILE_SUBJECT)
    subject = page.get_by_test_id("recent-subject").filter(has_text=HOSTILE_SUBJECT)
    await expect(subject).to_have_count(1, timeout=UPDATE_SECONDS * 1000)
    await page.screenshot(path=tmp_path / "hostile-subject-console.png", full_page=True)

    assert await subject.text_content() == HOSTILE_SUBJECT
    assert await page.locator("#recent img").count() == 0
    await asyncio.sleep(1)  # an onerror handler, had it been markup, would have run by now
    assert await page.title() == title


async def test_kafka_down_is_said_plainly_and_the_page_recovers_by_itself(
    page: Page, console_stack: PrivateStack, browser_broker: KafkaBroker, tmp_path: Path
) -> None:
    await open_console(page, console_stack)
    status = page.get_by_test_id("kafka-status")

    await asyncio.to_thread(browser_broker.stop)
    try:
        await expect(status).to_contain_text("Kafka is not answering", timeout=15_000)
        await expect(page.get_by_test_id("data-age")).to_contain_text("s old")
        await expect(page.get_by_test_id("data-age")).to_contain_text("not live")
        await page.screenshot(path=tmp_path / "kafka-down.png", full_page=True)
    finally:
        await asyncio.to_thread(browser_broker.start)

    await expect(status).to_have_text("live", timeout=30_000)
    await expect(page.get_by_test_id("data-age")).to_have_text("")
    kafka_back = page.locator('[data-testid=timeline-event][data-kind="kafka_back"]')
    await expect(kafka_back.first).to_contain_text("Kafka answers again")
    await page.screenshot(path=tmp_path / "kafka-back.png", full_page=True)


async def test_a_long_lag_keeps_the_pointer_on_the_page(
    page: Page, console_stack: PrivateStack, tmp_path: Path
) -> None:
    stack = console_stack
    await open_console(page, stack)
    await stack.stop(stack.stack.worker())
    try:
        await send_emails(stack, 120)  # ~40 a partition: more than a lane draws
        await expect(page.get_by_test_id("total-lag")).to_have_text("120", timeout=20_000)
        lanes = await page.evaluate(LANES)
        await page.screenshot(path=tmp_path / "long-lag.png", full_page=True)
    finally:
        await stack.start(stack.stack.worker())

    assert all(lane["marker_on"] == (lane["current"] or "") for lane in lanes), lanes
    assert await page.locator(".gap").count() >= 1  # the records between are counted, not drawn
