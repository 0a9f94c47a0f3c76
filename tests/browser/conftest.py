"""Browser tests: Debian's Chromium, driven by Playwright, against a private stack with the
console on a broker of its own (a test stops and starts that broker)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from playwright.async_api import Browser, Page, async_playwright

from deploy.local.chromium import CHROMIUM_ARGS, find_chromium
from deploy.local.kafka import KafkaBroker
from deploy.local.settings import LocalSettings
from tests.private_stack import PrivateStack, private_broker


@pytest.fixture(scope="session")
def browser_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = private_broker(
        tmp_path_factory.mktemp("browser-kafka"), LocalSettings().kafka_libs_dir
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
async def console_stack(
    browser_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[PrivateStack]:
    stack = PrivateStack(
        "browser",
        tmp_path_factory.mktemp("browser-stack"),
        browser_broker.settings.kafka_bootstrap_servers,
    )
    await stack.up(console=True)
    try:
        yield stack
    finally:
        await stack.down()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    executable = find_chromium(LocalSettings().chromium_path)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    yield page
    await context.close()
