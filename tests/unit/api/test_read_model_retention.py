"""The read model keeps an event as long as the events topic keeps it, plus a day, and the
pruning loop skips a round it cannot do, with one warning, and stops at once."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from aiokafka.errors import KafkaConnectionError

from services.api import read_model_retention
from services.api.read_model_retention import keep_seconds, prune_until_stopped
from services.api.status import EventPosition
from services.api.status_store import EventRow
from tests.unit.api.email_events import MESSAGE_ID, accepted, sent
from tests.unit.api.memory_status_store import MemoryStatusStore

WEEK_MS = 7 * 24 * 3600 * 1000
DAY = 24 * 3600.0


@pytest.mark.parametrize(
    ("retention_ms", "keep"),
    [
        (str(WEEK_MS), 8 * DAY),
        ("3600000", 3600 + DAY),
        ("-1", None),  # the topic keeps its events for ever: so does the read model
        (None, None),
        ("not a number", None),
    ],
)
def test_an_event_is_kept_as_long_as_the_topic_keeps_it_and_a_day(
    retention_ms: str | None, keep: float | None
) -> None:
    assert keep_seconds(retention_ms) == keep


@pytest.fixture(autouse=True)
def at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read_model_retention, "FIRST_PRUNE_AFTER_SECONDS", 0.01)


async def test_events_older_than_the_topic_keeps_are_pruned() -> None:
    store = MemoryStatusStore()
    await store.add(
        [EventRow.of(accepted("ana@example.com"), b"{}", EventPosition(partition=0, offset=0))]
    )
    old_event = next(iter(store.rows))
    store.rows[old_event] = (store.rows[old_event][0], time.time() - 9 * DAY)
    await store.add(
        [EventRow.of(sent("ana@example.com"), b"{}", EventPosition(partition=0, offset=1))]
    )
    stopping = asyncio.Event()

    async def one_week(bootstrap_servers: str, topic: str) -> dict[str, str]:
        return {"retention.ms": str(WEEK_MS)}

    pruning = asyncio.create_task(
        prune_until_stopped(store, one_week, "localhost:9092", "email.events", stopping)
    )
    await asyncio.sleep(0.05)
    stopping.set()
    await asyncio.wait_for(pruning, 1)

    assert [row.type for row in await store.events_of(MESSAGE_ID)] == ["sent"]


async def test_a_round_kafka_cannot_answer_is_a_warning_and_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStatusStore()
    stopping = asyncio.Event()

    async def away(bootstrap_servers: str, topic: str) -> dict[str, str]:
        raise KafkaConnectionError("no broker")

    with caplog.at_level(logging.WARNING, logger="api.status"):
        pruning = asyncio.create_task(
            prune_until_stopped(store, away, "localhost:9092", "email.events", stopping)
        )
        await asyncio.sleep(0.05)
        stopping.set()
        await asyncio.wait_for(pruning, 1)

    [line] = [record.getMessage() for record in caplog.records]
    assert line.startswith("could not prune the read model (KafkaConnectionError")
    assert line.endswith("trying again in an hour")
