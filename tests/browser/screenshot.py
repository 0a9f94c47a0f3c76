"""`make screenshot`: a PNG of the console after a short scripted run of the seed's story on a
private stack (send 6, stop the worker, send 3, start it: it resumes at the committed offset).

    python -m tests.browser.screenshot [--output services/console/console.png]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from datetime import UTC, datetime
from pathlib import Path

from playwright.async_api import async_playwright, expect

from deploy.local.chromium import CHROMIUM_ARGS, find_chromium
from deploy.local.settings import load_local_settings
from shared.event_loop import run
from shared.settings import PROJECT_ROOT
from tests.browser.emails import send_emails
from tests.private_stack import PrivateStack, private_broker

DEFAULT_OUTPUT = PROJECT_ROOT / "services" / "console" / "console.png"


async def scripted_run(stack: PrivateStack, chromium: Path, output: Path) -> None:
    await stack.up(console=True)
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(stack.console_url)
            lag = page.get_by_test_id("total-lag")
            await send_emails(stack, 6, subject="Hello from Kafka")
            await expect(lag).to_have_text("0", timeout=20_000)
            await stack.stop(stack.stack.worker())
            await send_emails(stack, 3, subject="Sent while the worker was stopped")
            await expect(lag).to_have_text("3", timeout=20_000)
            await asyncio.sleep(3)  # long enough for the console to call it a pause
            await stack.start(stack.stack.worker())
            resumed = page.locator('[data-testid=timeline-event][data-kind="resumed"]')
            await expect(resumed.first).to_be_visible(timeout=20_000)
            await expect(lag).to_have_text("0", timeout=20_000)
            await page.screenshot(path=output, full_page=True)
            await browser.close()
    finally:
        await stack.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    arguments = parser.parse_args()
    settings = load_local_settings()
    chromium = find_chromium(settings.chromium_path)
    run_dir = settings.run_dir / "screenshot" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    broker = private_broker(run_dir, settings.kafka_libs_dir)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop what started, as Ctrl+C
    broker.start()
    try:
        # The broker is the screenshot's own: the topic and group can have the seed's names.
        stack = PrivateStack(
            "screenshot",
            run_dir / "stack",
            broker.settings.kafka_bootstrap_servers,
            EMAIL_TOPIC=settings.email_topic,
            DLQ_TOPIC=settings.dlq_topic,
            EVENTS_TOPIC=settings.events_topic,
            CONSUMER_GROUP=settings.consumer_group,
        )
        run(scripted_run(stack, chromium, arguments.output))
    finally:
        broker.stop()
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
