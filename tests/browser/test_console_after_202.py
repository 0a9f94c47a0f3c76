"""The console's panels of an email's life after the 202, in a real browser: the records waiting
in the retry topics and when they are due, the events consumer's offsets and lag, and an
email's journey typed in by its id. The console runs alone on a private broker's topics, with a
stand-in for the API (an HTTP server in the test) answering `GET /emails/{id}`; the records and
the groups' CURRENT-OFFSETs are written by the test. A screenshot of each is saved in the
test's temporary directory."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from playwright.async_api import Page, expect

from deploy.local.kafka import KafkaBroker
from shared.http_server import embedded_server, listen
from tests.browser.emails import HOSTILE_SUBJECT
from tests.conftest import free_port
from tests.private_stack import PrivateStack

UPDATE_SECONDS = 15.0
MESSAGE_ID = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
NAME = "browser-after-202"
EVENTS_TOPIC = f"email.events.{NAME}"
RETRY_1M, RETRY_5M = f"email.send.{NAME}.retry-1m", f"email.send.{NAME}.retry-5m"


REPLY_450 = {"code": 450, "enhanced": "4.2.0", "text": "try again later"}
REPLY_250 = {"code": 250, "enhanced": "2.0.0", "text": "OK queued"}
RECIPIENT = "deferred+1@simulator.example.com"


def happened(
    at: str,
    kind: str,
    reply: dict[str, Any] | None,
    attempt: int | None,
    record: tuple[str, int, int],
    event_offset: int,
) -> dict[str, Any]:
    """One entry of the history: what happened, from which record, told by which event."""
    topic, partition, offset = record
    return {
        "at": at,
        "type": kind,
        "recipient": None if kind == "accepted" else RECIPIENT,
        "reply": reply,
        "attempt": attempt,
        "record": {"topic": topic, "partition": partition, "offset": offset},
        "event": {"partition": partition, "offset": event_offset},
    }


def journey_of(message_id: str) -> dict[str, Any]:
    """`GET /emails/{id}` as the API answers it, for a deferral retried and delivered."""
    main = f"email.send.{NAME}"
    return {
        "id": message_id,
        "status": "delivered",
        "from": "shop@example.com",
        "subject": HOSTILE_SUBJECT,
        "tags": [],
        "created_at": "2026-11-25T09:30:00Z",
        "recipients": [
            {
                "address": RECIPIENT,
                "kind": "to",
                "state": "sent",
                "last_reply": REPLY_250,
                "attempts": 2,
                "next_try_at": None,
            }
        ],
        "history": [
            happened("2026-11-25T09:30:00Z", "accepted", None, None, (main, 1, 41), 97),
            happened("2026-11-25T09:30:00.2Z", "deferred", REPLY_450, 0, (main, 1, 41), 98),
            happened("2026-11-25T09:31:00.1Z", "sent", REPLY_250, 1, (RETRY_1M, 1, 7), 99),
        ],
    }


def stand_in_api() -> FastAPI:
    api = FastAPI()

    @api.get("/emails/{message_id}")
    async def email(message_id: str) -> JSONResponse:
        if message_id != MESSAGE_ID:
            return JSONResponse({"detail": f"no email with id {message_id}"}, 404)
        return JSONResponse(journey_of(message_id))

    @api.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse("email_api_emails_accepted_total 0\n")

    return api


@pytest.fixture(scope="module")
async def api_url() -> AsyncIterator[str]:
    port = free_port()
    server = embedded_server(stand_in_api(), "127.0.0.1", port)
    serving = asyncio.create_task(server.serve(sockets=[listen("API", "127.0.0.1", port)]))
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await serving


@pytest.fixture(scope="module")
async def console_alone(
    browser_broker: KafkaBroker, api_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[PrivateStack]:
    """The console on topics and groups of its own; no worker, API or sink."""
    stack = PrivateStack(
        NAME,
        tmp_path_factory.mktemp("browser-after-202"),
        browser_broker.settings.kafka_bootstrap_servers,
        WORKER_RETRY_SCHEDULE="1m,5m",
        RETRY_CONSUMER_GROUP=f"email-retry-group.{NAME}",
        STATUS_CONSUMER_GROUP=f"email-status-group.{NAME}",
        CONSOLE_API_URL=api_url,
    )
    await stack.up_topics()
    try:
        await stack.start(stack.stack.console())
        yield stack
    finally:
        await stack.down()


async def produce(
    stack: PrivateStack, topic: str, partition: int, headers: list[tuple[str, bytes]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", key=b"m", partition=partition, headers=headers)
    finally:
        await producer.stop()


async def commit(stack: PrivateStack, group: str, topic: str, partition: int, offset: int) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.settings.kafka_bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()


def due_in(seconds: int) -> list[tuple[str, bytes]]:
    due_at = datetime.now(UTC) + timedelta(seconds=seconds)
    return [("schema_version", b"1"), ("due_at", due_at.isoformat(timespec="seconds").encode())]


async def open_console(page: Page, stack: PrivateStack) -> None:
    await page.goto(stack.console_url)
    await expect(page.get_by_test_id("kafka-status")).to_have_text("live", timeout=10_000)


async def test_the_retries_show_what_waits_and_when_it_is_due(
    page: Page, console_alone: PrivateStack, tmp_path: Path
) -> None:
    stack = console_alone
    await produce(stack, RETRY_1M, 0, due_in(60))
    await produce(stack, RETRY_1M, 0, due_in(90))
    await produce(stack, RETRY_5M, 2, due_in(300))
    await open_console(page, stack)

    pending = page.get_by_test_id("retry-pending")
    await expect(pending).to_have_text("3", timeout=UPDATE_SECONDS * 1000)
    next_due = page.get_by_test_id("retry-next-due")
    await expect(next_due).to_have_text(re.compile(r"^next due in ([3-5]\d|60) s$"))
    waiting = page.locator(f"[data-testid=retry-partition][data-topic='{RETRY_1M}']").first
    await expect(waiting).to_have_attribute("data-pending", "2")
    await expect(waiting.get_by_test_id("retry-due")).to_have_text(
        re.compile(r"^in ([3-5]\d|60) s, in ([6-8]\d|90) s$")
    )
    await page.screenshot(path=tmp_path / "retries-waiting.png", full_page=True)

    # The retry consumer took the first record: one fewer waits, and the next is due later.
    await commit(stack, stack.settings.retry_consumer_group, RETRY_1M, 0, 1)

    await expect(pending).to_have_text("2", timeout=UPDATE_SECONDS * 1000)
    later = r"in ([5-8]\d|90) s$"
    await expect(next_due).to_have_text(re.compile(f"^next due {later}"))
    await expect(waiting.get_by_test_id("retry-due")).to_have_text(re.compile(f"^{later}"))
    await page.screenshot(path=tmp_path / "retries-one-taken.png", full_page=True)


async def test_the_events_consumer_shows_its_offsets_and_lag(
    page: Page, console_alone: PrivateStack, tmp_path: Path
) -> None:
    stack = console_alone
    for partition in (0, 0, 0, 0, 2):
        await produce(stack, EVENTS_TOPIC, partition, [("schema_version", b"1")])
    await commit(stack, stack.settings.status_consumer_group, EVENTS_TOPIC, 0, 3)
    await open_console(page, stack)

    lanes = page.get_by_test_id("events-lane")
    await expect(lanes).to_have_count(3)
    first = page.locator("[data-testid=events-lane][data-partition='0']")
    await expect(first).to_have_attribute("data-current-offset", "3", timeout=UPDATE_SECONDS * 1000)
    await expect(first).to_have_attribute("data-log-end-offset", "4")
    await expect(first.get_by_test_id("lane-lag")).to_have_text("1")
    # A partition with nothing committed counts whole, as for the worker's group.
    await expect(page.get_by_test_id("events-total-lag")).to_have_text("2")
    await expect(page.get_by_test_id("events-group-state")).to_have_text("Empty")
    await expect(page.get_by_test_id("partition-lane")).to_have_count(3)  # email.send's, apart
    await page.screenshot(path=tmp_path / "events-consumer.png", full_page=True)


async def test_an_emails_journey_shows_its_status_recipients_and_positions_as_text(
    page: Page, console_alone: PrivateStack, tmp_path: Path
) -> None:
    await open_console(page, console_alone)
    title = await page.title()

    await page.get_by_test_id("journey-id").fill(MESSAGE_ID)
    await page.get_by_test_id("journey-show").click()

    await expect(page.get_by_test_id("journey-status")).to_have_text("delivered")
    await expect(page.get_by_test_id("journey-recipient-state")).to_have_text(["sent"])
    events = page.get_by_test_id("journey-event")
    await expect(events).to_have_count(3)
    await expect(page.get_by_test_id("journey-record")).to_have_text(
        [f"email.send.{NAME}-1@41", f"email.send.{NAME}-1@41", f"{RETRY_1M}-1@7"]
    )
    await expect(page.get_by_test_id("journey-event-position")).to_have_text(
        [f"{EVENTS_TOPIC}-1@97", f"{EVENTS_TOPIC}-1@98", f"{EVENTS_TOPIC}-1@99"]
    )
    await expect(events.nth(1)).to_contain_text("450 4.2.0 try again later")
    # The subject is markup, and shows as the characters it has.
    await expect(page.locator("#journey-summary")).to_contain_text(HOSTILE_SUBJECT)
    assert await page.locator("#journey img").count() == 0
    await page.screenshot(path=tmp_path / "journey.png", full_page=True)

    await page.get_by_test_id("journey-id").fill("no-such-id")
    await page.get_by_test_id("journey-show").click()

    await expect(page.get_by_test_id("journey-error")).to_have_text(
        "404: no email with id no-such-id"
    )
    await expect(page.get_by_test_id("journey")).to_be_hidden()

    await page.get_by_test_id("journey-id").fill("not an id")
    await page.get_by_test_id("journey-show").click()

    await expect(page.get_by_test_id("journey-error")).to_contain_text("is not a message id")
    assert await page.title() == title
