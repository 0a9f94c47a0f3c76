"""The API's status consumer: reads the events topic as the consumer group email-status-group,
applies each batch to the read model in one transaction, then commits the batch's offsets. So
the group's CURRENT-OFFSET is how far the read model has applied the events (docs/api.md).

A crash between the two applies the batch again, which changes nothing: the store keeps each
event once by id. An event it cannot read is logged with its place and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from services.api.read_model_retention import TopicConfigsReader, prune_until_stopped
from services.api.status import EventPosition
from services.api.status_store import EventRow, StatusStore, StatusStoreUnavailable
from shared.events import UnreadableEvent, parse_event
from shared.kafka import start_when_kafka_answers
from shared.settings import Settings

log = logging.getLogger("api.status")

# getmany returns as soon as records arrive; this bounds only how long an idle loop takes to
# notice a stop.
POLL_TIMEOUT_MS: Final = 200
MAX_BATCH_RECORDS: Final = 500
# While the store is away: the first wait, doubled each time up to the last.
FIRST_RETRY_SECONDS: Final = 0.2
LONGEST_RETRY_SECONDS: Final = 5.0

Batches = Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]


class StatusProjector:
    """Runs the status consumer from `start` to `stop`, whether Kafka and the store are there
    or not: it connects when Kafka answers, and waits for the store with back-off."""

    def __init__(
        self,
        settings: Settings,
        new_consumer: Callable[[], AIOKafkaConsumer],
        store: StatusStore,
        read_topic_configs: TopicConfigsReader,
    ) -> None:
        self._settings = settings
        self._topic = settings.events_topic
        self._group = settings.status_consumer_group
        self._new_consumer = new_consumer  # aiokafka clients are made inside the event loop
        self._store = store
        self._read_topic_configs = read_topic_configs
        self._stopping = asyncio.Event()
        self._running: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Consume, and keep the read model within what the topic keeps."""
        pruning = prune_until_stopped(
            self._store,
            self._read_topic_configs,
            self._settings.kafka_bootstrap_servers,
            self._topic,
            self._stopping,
        )
        self._running = [asyncio.create_task(self._run()), asyncio.create_task(pruning)]

    async def stop(self) -> None:
        """Stop at the end of the batch being applied, without committing one not applied."""
        self._stopping.set()
        await asyncio.gather(*self._running)

    async def _run(self) -> None:
        consumer = self._new_consumer()
        bootstrap = self._settings.kafka_bootstrap_servers
        try:
            if not await start_when_kafka_answers(consumer, bootstrap, self._stopping):
                return
            consumer.subscribe([self._topic], listener=LoggedAssignment(self._topic, self._group))
            while not self._stopping.is_set():
                try:
                    await self.project(consumer)
                except Exception:  # a fault of Kafka's or a bug: the API keeps answering
                    log.exception("the status consumer failed; starting it again in 1 s")
                    await self._sleep(1.0)
        finally:
            await consumer.stop()  # leaves the group: another API process takes its partitions

    async def project(self, consumer: AIOKafkaConsumer) -> None:
        """getmany, apply the batch to the store in one transaction, commit its offsets."""
        while not self._stopping.is_set():
            batches = await consumer.getmany(
                timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_BATCH_RECORDS
            )
            if not batches:
                continue
            if not await self._apply(rows_of(batches)):
                return  # stopping: the batch stays uncommitted, read again at the next start
            await self._commit(consumer, next_offsets(batches))

    async def _apply(self, rows: list[EventRow]) -> bool:
        """Keep the rows, retrying while the store is away; False if stopped meanwhile."""
        wait = FIRST_RETRY_SECONDS
        failing_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._store.add(rows)
            except StatusStoreUnavailable as error:
                if failing_since is None:
                    failing_since = loop.time()
                    log.warning(
                        "cannot apply %d event(s) to the read model (%s); retrying, and not "
                        "committing %s's offsets meanwhile",
                        len(rows), error, self._group,
                    )  # fmt: skip
                if await self._sleep(wait):
                    return False
                wait = min(2 * wait, LONGEST_RETRY_SECONDS)
                continue
            if failing_since is not None:
                log.info(
                    "the read model is back after %.1f s; applied %d event(s)",
                    loop.time() - failing_since, len(rows),
                )  # fmt: skip
            return True

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        try:
            await consumer.commit(offsets)
        except KafkaError as error:
            # A rebalance moved the partitions (or a long store outage outlasted
            # max_poll_interval_ms): their next owner applies the batch again, harmlessly.
            log.warning(
                "could not commit %s's offsets (%r); they are read again", self._group, error
            )

    async def _sleep(self, seconds: float) -> bool:
        """Wait `seconds`, or less if stopped meanwhile; whether stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        return self._stopping.is_set()


def rows_of(batches: Batches) -> list[EventRow]:
    """The batch's events as the read model keeps them; one it cannot read is logged and
    skipped (its offset is committed with the rest: reading it again would not help)."""
    rows = []
    for records in batches.values():
        for record in records:
            try:
                event = parse_event(record.value)
            except UnreadableEvent as error:
                log.warning(
                    "skipped the unreadable event at %s-%d@%d: %s",
                    record.topic, record.partition, record.offset, error,
                )  # fmt: skip
                continue
            assert record.value is not None  # parse_event refuses an event without one
            position = EventPosition(partition=record.partition, offset=record.offset)
            rows.append(EventRow.of(event, record.value, position))
    return rows


def next_offsets(batches: Batches) -> dict[TopicPartition, int]:
    """What to commit: for each partition, the offset after the batch's last record."""
    return {partition: records[-1].offset + 1 for partition, records in batches.items() if records}


class LoggedAssignment(ConsumerRebalanceListener):  # type: ignore[misc]
    """Says which partitions of the events topic this API process applies, as they change."""

    def __init__(self, topic: str, group: str) -> None:
        self._topic = topic
        self._group = group

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Nothing to finish: a batch is committed as soon as it is applied."""

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        partitions = sorted(partition.partition for partition in assigned)
        log.info(
            "%s: this API process applies partitions %s of %s to the read model",
            self._group, partitions, self._topic,
        )  # fmt: skip
