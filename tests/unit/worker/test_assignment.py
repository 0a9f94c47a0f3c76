"""The partitions a worker owns: records handed out to each one's PartitionWorker, a backlogged
partition paused, and their offsets (committed, log end, lag) as /metrics shows them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka.structs import TopicPartition

from services.worker.assignment import Assignment
from services.worker.configuration_faults import ConfigurationFaults
from services.worker.offsets import PartitionOffsets
from services.worker.partition import PartitionWorker
from services.worker.processor import AttemptCounts, EmailProcessor
from services.worker.retry import RetryPolicy
from services.worker.store_outage import StoreOutage
from tests.unit.worker.fakes import (
    FakeConsumer,
    FakeDeadLetters,
    FakeMailer,
    HoldingMailer,
    InMemoryDedupeStore,
    kafka_record,
)

TOPIC = "email.send"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


def owned_partitions(
    consumer: FakeConsumer,
    mailer: FakeMailer,
    max_backlog: int = 100,
    processor: EmailProcessor | None = None,
) -> Assignment:
    processor = processor or EmailProcessor(
        store=InMemoryDedupeStore(),
        dead_letters=FakeDeadLetters(),
        retry=RetryPolicy(max_attempts=0, initial_seconds=60, max_seconds=60),
        message_id_domain="pipeline.test",
        configuration_faults=ConfigurationFaults(60, 60),
        counts=AttemptCounts(),
        store_outage=StoreOutage(),
    )
    return Assignment(
        consumer,
        lambda partition: PartitionWorker(
            partition, processor, [mailer], max_ahead=max_backlog, stop_grace_seconds=5
        ),
        max_backlog=max_backlog,
    )


async def eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(2):
        while not condition():  # noqa: ASYNC110 - polling the loop's state is the point
            await asyncio.sleep(0.01)


async def test_a_held_partition_with_a_backlog_is_paused_until_it_drains() -> None:
    consumer, mailer = FakeConsumer(), HoldingMailer()
    retried_at_once = EmailProcessor(
        store=InMemoryDedupeStore(),
        dead_letters=FakeDeadLetters(),
        retry=RetryPolicy(max_attempts=0, initial_seconds=0.01, max_seconds=0.01),
        message_id_domain="pipeline.test",
        configuration_faults=ConfigurationFaults(60, 60),
        counts=AttemptCounts(),
        store_outage=StoreOutage(),
    )
    owned = owned_partitions(consumer, mailer, max_backlog=2, processor=retried_at_once)
    owned.start([P0])

    owned.hand_out({P0: [kafka_record(n, "held" if n == 0 else f"p0-{n}", 0) for n in range(6)]})
    await eventually(lambda: mailer.attempts >= 1)
    owned.pause_partitions_with_a_backlog()
    paused_while_held = P0 in consumer.paused()
    mailer.release()
    await eventually(lambda: owned.partitions[P0].next_offset_to_commit == 6)
    owned.pause_partitions_with_a_backlog()

    assert paused_while_held
    assert P0 not in consumer.paused()  # drained: fetched again
    await asyncio.wait_for(owned.stop_all(), 2)


async def test_partition_offsets_are_the_owned_partitions_committed_and_log_end_offsets() -> None:
    consumer, mailer = FakeConsumer(), FakeMailer()
    owned = owned_partitions(consumer, mailer)
    consumer.assigned = {P0, P1}
    owned.start([P0, P1])
    await owned.read_committed_offsets([P0, P1])
    owned.hand_out({P0: [kafka_record(n, f"p0-{n}", 0) for n in range(3)]})
    await eventually(lambda: owned.partitions[P0].next_offset_to_commit == 3)
    await owned.commit_finished()
    consumer.highwaters = {P0: 5}

    owning_both = owned.partition_offsets()
    await owned.stop([P1])
    consumer.assigned = {P0}
    after_revocation = owned.partition_offsets()
    consumer.assigned = set()  # the consumer lost its assignment before the listener ran
    unassigned = owned.partition_offsets()
    await owned.stop_all()

    assert owning_both == [
        PartitionOffsets(P0, committed_offset=3, log_end_offset=5),
        PartitionOffsets(P1, committed_offset=None, log_end_offset=None),
    ]
    assert [offsets.lag for offsets in owning_both] == [2, None]
    assert after_revocation == [PartitionOffsets(P0, committed_offset=3, log_end_offset=5)]
    assert unassigned == []


async def test_records_of_a_partition_no_longer_owned_are_not_handed_out() -> None:
    # Revoked while getmany waited: its next owner reads them again from the committed offset.
    consumer, mailer = FakeConsumer(), FakeMailer()
    owned = owned_partitions(consumer, mailer)
    owned.start([P0])

    owned.hand_out({P0: [kafka_record(0, "p0-0", 0)], P1: [kafka_record(0, "p1-0", 1)]})
    await eventually(lambda: owned.partitions[P0].next_offset_to_commit == 1)
    await owned.stop_all()

    assert [message["Subject"] for message, _, _ in mailer.sent] == ["p0-0"]
    assert consumer.committed_offsets() == {P0: 1}
