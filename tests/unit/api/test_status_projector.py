"""The status consumer with a fake consumer and the memory read model: each batch applied in one
transaction and then committed, the offset after its last record; an unreadable event logged
with its place and skipped; a store outage retried without committing; a clean stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError
from aiokafka.structs import ConsumerRecord

from services.api import status_projector
from services.api.status import EventPosition
from services.api.status_projector import StatusProjector, next_offsets, rows_of
from shared.events import Event
from shared.settings import Settings
from tests.unit.api.email_events import MESSAGE_ID, accepted, deferred, sent
from tests.unit.api.memory_status_store import MemoryStatusStore

ANA = "ana@example.com"
TOPIC = "email.events"


def event_record(
    offset: int, value: bytes | None, partition: int = 1
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=TOPIC,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=MESSAGE_ID.encode(),
        value=value,
        checksum=None,
        serialized_key_size=len(MESSAGE_ID),
        serialized_value_size=len(value or b""),
        headers=[],
    )


def of(offset: int, event: Event, partition: int = 1) -> ConsumerRecord[bytes, bytes]:
    return event_record(offset, event.to_kafka().value, partition)


Batch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


def batch(*records: ConsumerRecord[bytes, bytes]) -> Batch:
    found: Batch = {}
    for record in records:
        found.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
    return found


class FakeConsumer:
    """Hands out the batches it is given, one per getmany, then none; keeps what is committed."""

    def __init__(self, *batches: Batch, refusals: list[Exception] | None = None) -> None:
        self.batches = list(batches)
        self.committed: list[dict[TopicPartition, int]] = []
        self.commit_refusals = refusals or []
        self.start_refusals: list[Exception] = []
        self.subscribed: list[str] = []
        self.started = self.stopped = False
        self.drained = asyncio.Event()

    async def start(self) -> None:
        if self.start_refusals:
            raise self.start_refusals.pop(0)
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.subscribed = topics

    async def getmany(self, timeout_ms: int, max_records: int) -> Batch:
        if self.batches:
            return self.batches.pop(0)
        self.drained.set()
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.commit_refusals:
            raise self.commit_refusals.pop(0)
        self.committed.append(offsets)


async def retention_of(bootstrap_servers: str, topic: str) -> dict[str, str]:
    return {"retention.ms": "604800000"}


@pytest.fixture
def store() -> MemoryStatusStore:
    return MemoryStatusStore()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_projector, "FIRST_RETRY_SECONDS", 0.01)
    monkeypatch.setattr(status_projector, "POLL_TIMEOUT_MS", 10)


@pytest.fixture
async def running() -> AsyncIterator[list[StatusProjector]]:
    projectors: list[StatusProjector] = []
    yield projectors
    for projector in projectors:
        await projector.stop()


async def run(
    consumer: FakeConsumer, store: MemoryStatusStore, running: list[StatusProjector]
) -> StatusProjector:
    projector = StatusProjector(Settings(_env_file=None), lambda: consumer, store, retention_of)
    await projector.start()
    running.append(projector)
    return projector


async def test_a_batch_is_applied_then_committed_after_its_last_record(
    store: MemoryStatusStore, running: list[StatusProjector]
) -> None:
    consumer = FakeConsumer(
        batch(of(4, accepted(ANA)), of(5, deferred(ANA)), of(9, sent(ANA, 1, 61), partition=2))
    )

    await run(consumer, store, running)
    await asyncio.wait_for(consumer.drained.wait(), 1)

    assert consumer.subscribed == [TOPIC]
    assert consumer.committed == [{TopicPartition(TOPIC, 1): 6, TopicPartition(TOPIC, 2): 10}]
    kept = await store.events_of(MESSAGE_ID)
    assert [(k.type, k.position) for k in kept] == [
        ("accepted", EventPosition(partition=1, offset=4)),
        ("deferred", EventPosition(partition=1, offset=5)),
        ("sent", EventPosition(partition=2, offset=9)),
    ]
    assert store.batches == 1, "one transaction for the batch"


async def test_an_unreadable_event_is_logged_with_its_place_and_skipped(
    store: MemoryStatusStore,
    running: list[StatusProjector],
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = FakeConsumer(batch(event_record(3, b"not json"), of(4, accepted(ANA))))

    with caplog.at_level(logging.WARNING, logger="api.status"):
        await run(consumer, store, running)
        await asyncio.wait_for(consumer.drained.wait(), 1)

    assert consumer.committed == [{TopicPartition(TOPIC, 1): 5}]
    assert [k.type for k in await store.events_of(MESSAGE_ID)] == ["accepted"]
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith(
        "skipped the unreadable event at email.events-1@3: the event is not JSON"
    )


async def test_a_batch_of_unreadable_events_is_committed_all_the_same(
    store: MemoryStatusStore, running: list[StatusProjector]
) -> None:
    consumer = FakeConsumer(batch(event_record(3, None)))

    await run(consumer, store, running)
    await asyncio.wait_for(consumer.drained.wait(), 1)

    assert consumer.committed == [{TopicPartition(TOPIC, 1): 4}]


async def test_while_the_store_is_away_nothing_is_committed_and_the_batch_is_retried(
    store: MemoryStatusStore,
    running: list[StatusProjector],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store.unavailable = True
    consumer = FakeConsumer(batch(of(4, accepted(ANA))))

    with caplog.at_level(logging.INFO, logger="api.status"):
        await run(consumer, store, running)
        await asyncio.sleep(0.1)
        assert consumer.committed == []
        store.unavailable = False
        await asyncio.wait_for(consumer.drained.wait(), 1)

    assert consumer.committed == [{TopicPartition(TOPIC, 1): 5}]
    assert len(await store.events_of(MESSAGE_ID)) == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, "one warning for the outage, one line when it ends"
    assert lines[0].startswith("cannot apply 1 event(s) to the read model (the test's read model")
    assert "not committing email-status-group's offsets meanwhile" in lines[0]
    assert lines[1].startswith("the read model is back after ")


async def test_a_stop_during_a_store_outage_commits_nothing(
    store: MemoryStatusStore, running: list[StatusProjector]
) -> None:
    store.unavailable = True
    consumer = FakeConsumer(batch(of(4, accepted(ANA))))
    projector = await run(consumer, store, running)
    await asyncio.sleep(0.05)

    await asyncio.wait_for(projector.stop(), 1)

    assert consumer.committed == []
    assert consumer.stopped


async def test_a_commit_refused_after_a_rebalance_is_a_warning_and_the_loop_goes_on(
    store: MemoryStatusStore,
    running: list[StatusProjector],
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = FakeConsumer(
        batch(of(4, accepted(ANA))),
        batch(of(5, sent(ANA))),
        refusals=[CommitFailedError("the group rebalanced")],
    )

    with caplog.at_level(logging.WARNING, logger="api.status"):
        await run(consumer, store, running)
        await asyncio.wait_for(consumer.drained.wait(), 1)

    assert consumer.committed == [{TopicPartition(TOPIC, 1): 6}]
    assert [k.type for k in await store.events_of(MESSAGE_ID)] == ["accepted", "sent"]
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("could not commit email-status-group's offsets (CommitFailedError")


async def test_it_waits_for_kafka_and_stops_cleanly_if_kafka_never_answers(
    store: MemoryStatusStore, running: list[StatusProjector]
) -> None:
    consumer = FakeConsumer()
    consumer.start_refusals = [KafkaConnectionError() for _ in range(100)]
    projector = await run(consumer, store, running)
    await asyncio.sleep(0.05)

    await asyncio.wait_for(projector.stop(), 2)

    assert not consumer.started
    assert consumer.stopped


def test_the_offsets_to_commit_follow_each_partitions_last_record() -> None:
    found = batch(of(4, accepted(ANA)), of(7, sent(ANA)), of(0, deferred(ANA), partition=0))

    assert next_offsets(found) == {TopicPartition(TOPIC, 1): 8, TopicPartition(TOPIC, 0): 1}


def test_rows_keep_the_events_bytes_and_their_place() -> None:
    event = sent(ANA)

    [row] = rows_of(batch(of(7, event, partition=2)))

    assert row.body.encode() == event.to_kafka().value
    assert row.position == EventPosition(partition=2, offset=7)
    assert (row.event_id, row.recipient, row.type) == (event.event_id, ANA, "sent")
