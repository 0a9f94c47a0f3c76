"""The console's cost, measured: the backlog drain with the console up and 50 pages open,
its Kafka requests per second with 1 page and with 50, and how long a delivery takes to move
its CURRENT-OFFSET marker on a page in Chromium."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from playwright.async_api import async_playwright

from deploy.local.chromium import CHROMIUM_ARGS, find_chromium
from deploy.local.settings import LocalSettings
from tests.bench.stages import (
    Bench,
    drain_once,
    email_record,
    email_request,
    first_to_last_stored,
    preload,
)
from tests.browser.console_page import CONSUMED_SUM
from tests.private_stack import PrivateStack, read_sink

PAGES = 50
RATE_WINDOW_SECONDS = 6.0  # the console's own request rate is over its last 5 s


@asynccontextmanager
async def open_pages(console_url: str, count: int) -> AsyncIterator[list[int]]:
    """`count` pages' live streams, each decoding every snapshot as the page's script does;
    yields how many snapshots each has had. (The pages' own drawing is the browser's cost,
    on the viewer's machine, not the stack's.)"""
    received = [0] * count

    async def page(number: int, client: httpx.AsyncClient) -> None:
        async with client.stream("GET", f"{console_url}/api/events") as events:
            async for line in events.aiter_lines():
                if line.startswith("data: "):
                    json.loads(line.removeprefix("data: "))
                    received[number] += 1

    async with httpx.AsyncClient(timeout=None) as client:
        pages = [asyncio.create_task(page(number, client)) for number in range(count)]
        try:
            yield received
        finally:
            for task in pages:
                task.cancel()
            await asyncio.gather(*pages, return_exceptions=True)


async def console_state(stack: PrivateStack) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{stack.console_url}/api/snapshot")
    return dict(response.raise_for_status().json()["console"])


async def until_pages_open(stack: PrivateStack, count: int) -> None:
    deadline = time.monotonic() + 30
    while (await console_state(stack))["pages_open"] != count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} pages did not connect to the console within 30 s")
        await asyncio.sleep(0.2)


async def kafka_requests_per_second(stack: PrivateStack, pages: int) -> float:
    await until_pages_open(stack, pages)
    await asyncio.sleep(RATE_WINDOW_SECONDS)
    return float((await console_state(stack))["kafka_requests_per_second"])


async def drain_watched(bench: Bench, attempt: int) -> tuple[float, dict[int, float]]:
    """The backlog drain stage, with the console and 50 pages watching: its rate, and (on the
    first attempt) the console's Kafka requests/s by pages open."""
    stack = bench.stack(f"console-{attempt}")
    sink, worker, console = stack.stack.sink(), stack.stack.worker(), stack.stack.console()
    await stack.up_topics()
    await stack.start(sink)
    await stack.start(stack.stack.api())  # idle, but the console reads its /metrics each tick
    await stack.start(console)
    requests: dict[int, float] = {}
    try:
        count = bench.sizes.emails
        await preload(stack, [email_record(n, bench.run_id) for n in range(count)])
        if attempt == 1:
            async with open_pages(stack.console_url, 1):
                requests[1] = await kafka_requests_per_second(stack, 1)
        async with open_pages(stack.console_url, PAGES) as received:
            await until_pages_open(stack, PAGES)
            await stack.start(worker)
            await bench.until_stored(stack, count, seconds=count / 50 + 60)
            if attempt == 1:
                requests[PAGES] = await kafka_requests_per_second(stack, PAGES)
            if min(received) == 0:
                raise RuntimeError("a page had no snapshot while the worker drained")
        bench.note_peak_rss(stack, [console, worker, sink])
        return (count - 1) / await first_to_last_stored(stack), requests
    finally:
        await stack.down()


async def page_update_latency(bench: Bench, deliveries: int) -> list[float]:
    """Seconds from the sink storing an email to its marker moving on a page in Chromium."""
    stack = bench.stack("console-page")
    await stack.up(console=True)
    chromium = find_chromium(LocalSettings().chromium_path)
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = await browser.new_page()
            await page.goto(stack.console_url)
            await page.get_by_test_id("partition-lane").first.wait_for()
            moved_at: dict[str, float] = {}
            async with httpx.AsyncClient(timeout=15) as client:
                for number in range(deliveries):
                    consumed = int(await page.evaluate(CONSUMED_SUM))
                    response = await client.post(
                        f"{stack.api_url}/emails", json=email_request(number, bench.run_id)
                    )
                    moved = await page.wait_for_function(
                        f"expected => ({CONSUMED_SUM})() >= expected && Date.now()",
                        arg=consumed + 1,
                        timeout=30_000,
                    )
                    moved_at[response.json()["id"]] = float(await moved.json_value()) / 1000
            await browser.close()
        stored = (await read_sink(stack)).arrivals
        return [moved_at[email_id] - stored[email_id][0] for email_id in moved_at]
    finally:
        await stack.down()


async def console_watching(bench: Bench) -> dict[str, Any]:
    """Plain and watched drains taken in turns, best of two each: a drain is CPU-bound on
    these 2 cores, and runs minutes apart differ by more than the console's cost."""
    plain_rates: list[float] = []
    watched_rates: list[float] = []
    requests: dict[int, float] = {}
    for attempt in (1, 2):
        plain_rates.append(await drain_once(bench, f"console-plain-{attempt}"))
        rate, counted = await drain_watched(bench, attempt)
        watched_rates.append(rate)
        requests |= counted
    latencies = await page_update_latency(bench, deliveries=3 if bench.sizes.emails < 1000 else 20)
    return {
        "drain_emails_per_second": max(watched_rates),
        "drain_emails_per_second_each_run": watched_rates,
        "plain_drain_emails_per_second": max(plain_rates),
        "plain_drain_emails_per_second_each_run": plain_rates,
        "pages": PAGES,
        "kafka_requests_per_second_by_pages": requests,
        "page_update_p50_s": statistics.median(latencies),
        "page_update_max_s": max(latencies),
        "page_update_s": latencies,
    }
