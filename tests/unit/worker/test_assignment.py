"""The partitions a worker owns: records handed out to each one's PartitionWorker, a backlogged
partition paused, a retry topic's partition paused until its head is due, and their offsets
(committed, log end, lag) as /metrics shows them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from aiokafka.structs import ConsumerRecord, TopicPartition

from services.worker.assignment import Assignment, Assignments
from services.worker.offsets import PartitionOffsets
from services.worker.partition import PartitionWorker
from services.worker.processor import EmailProcessor
from services.worker.retry import RetryPolicy
from tests.unit.worker.fakes import (
    NOW,
    FakeConsumer,
    FakeMailer,
    HoldingMailer,
    email_processor,
    email_record,
    kafka_record,
    retry_topic_record,
)

TOPIC = "email.send"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
R0 = TopicPartition("email.send.retry-1m", 0)


def owned_partitions(
    consumer: FakeConsumer,
    mailer: FakeMailer,
    max_backlog: int = 100,
    processor: EmailProcessor | None = None,
    *,
    waits_until_due: bool = False,
    clock: Callable[[], datetime] = lambda: NOW,
) -> Assignment:
    processor = processor or email_processor(retry=RetryPolicy(initial_seconds=60, max_seconds=60))
    return Assignment(
        consumer,
        lambda partition: PartitionWorker(
            partition, processor, [mailer], max_ahead=max_backlog, stop_grace_seconds=5
        ),
        max_backlog=max_backlog,
        waits_until_due=waits_until_due,
        clock=clock,
    )


async def eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(2):
        while not condition():  # noqa: ASYNC110 - polling the loop's state is the point
            await asyncio.sleep(0.01)


async def test_a_held_partition_with_a_backlog_is_paused_until_it_drains() -> None:
    consumer, mailer = FakeConsumer(), HoldingMailer()
    retried_at_once = email_processor(retry=RetryPolicy(initial_seconds=0.01, max_seconds=0.01))
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


def retry_due(offset: int, seconds: float, subject: str | None = None) -> ConsumerRecord[
    bytes, bytes
]:  # fmt: skip
    """A record of email.send.retry-1m for ana, due `seconds` after NOW."""
    email = email_record(subject or f"r-{offset}")
    return retry_topic_record(
        offset, email, ["ana@example.com"], due_at=NOW + timedelta(seconds=seconds)
    )


async def test_a_retry_partition_hands_out_what_is_due_and_waits_paused_for_its_head() -> None:
    consumer, mailer = FakeConsumer(), FakeMailer()
    consumer.assigned = {R0}
    owned = owned_partitions(consumer, mailer, waits_until_due=True)
    owned.start([R0])
    started = asyncio.get_running_loop().time()

    owned.hand_out({R0: [retry_due(0, -30), retry_due(1, 0), retry_due(2, 0.2), retry_due(3, 0)]})
    await eventually(lambda: owned.partitions[R0].next_offset_to_commit == 2)
    paused_at_first = R0 in consumer.paused()
    await eventually(lambda: R0 not in consumer.paused())
    resumed_after = asyncio.get_running_loop().time() - started
    await owned.stop_all()

    assert [message["Subject"] for message, _, _ in mailer.sent] == ["r-0", "r-1"]
    assert paused_at_first
    assert consumer.seeks == [(R0, 2)], "fetched again from the first record not due"
    assert consumer.resumed == [R0]
    assert resumed_after >= 0.2, "never early"


async def test_the_head_is_handed_out_once_due_when_fetched_again() -> None:
    consumer, mailer, clock = FakeConsumer(), FakeMailer(), [NOW]
    consumer.assigned = {R0}
    owned = owned_partitions(consumer, mailer, waits_until_due=True, clock=lambda: clock[0])
    owned.start([R0])
    owned.hand_out({R0: [retry_due(0, 60), retry_due(1, 60)]})
    await asyncio.sleep(0.01)
    handed_before = list(mailer.sent)

    clock[0] = NOW + timedelta(seconds=60)
    owned.hand_out({R0: [retry_due(0, 60), retry_due(1, 60)]})  # read again from offset 0
    await eventually(lambda: owned.partitions[R0].next_offset_to_commit == 2)
    await owned.stop_all()

    assert handed_before == []
    assert [message["Subject"] for message, _, _ in mailer.sent] == ["r-0", "r-1"]


async def test_a_partition_waiting_for_its_due_time_is_never_resumed_for_a_small_backlog() -> None:
    consumer, mailer = FakeConsumer(), FakeMailer()
    consumer.assigned = {R0}
    owned = owned_partitions(consumer, mailer, max_backlog=10, waits_until_due=True)
    owned.start([R0])

    owned.hand_out({R0: [retry_due(0, 60)]})
    owned.pause_partitions_with_a_backlog()  # its backlog is empty: the backlog rule would resume
    await asyncio.sleep(0.02)

    assert R0 in consumer.paused()
    assert consumer.resumed == []
    await owned.stop_all()


async def test_revoking_a_waiting_partition_cancels_its_resumption() -> None:
    consumer, mailer = FakeConsumer(), FakeMailer()
    consumer.assigned = {R0}
    owned = owned_partitions(consumer, mailer, waits_until_due=True)
    owned.start([R0])
    owned.hand_out({R0: [retry_due(0, 0.1)]})
    assert R0 in consumer.paused()

    await owned.stop([R0])
    await asyncio.sleep(0.2)

    assert consumer.resumed == [], "no timer left behind"
    assert owned.partitions == {}


async def test_email_send_partitions_never_wait_for_due_times() -> None:
    consumer, mailer = FakeConsumer(), FakeMailer()
    consumer.assigned = {P0}
    owned = owned_partitions(consumer, mailer)
    owned.start([P0])

    owned.hand_out({P0: [kafka_record(0, "p0-0", 0)]})
    await eventually(lambda: owned.partitions[P0].next_offset_to_commit == 1)
    await owned.stop_all()

    assert consumer.seeks == []
    assert consumer.paused() == set()


async def test_assignments_show_the_partitions_and_offsets_of_both_consumers() -> None:
    main_consumer, retry_consumer, mailer = FakeConsumer(), FakeConsumer(), FakeMailer()
    main_consumer.assigned, retry_consumer.assigned = {P0}, {R0}
    main = owned_partitions(main_consumer, mailer)
    retries = owned_partitions(retry_consumer, mailer, waits_until_due=True)
    main.start([P0])
    retries.start([R0])
    main_consumer.highwaters, retry_consumer.highwaters = {P0: 9}, {R0: 4}

    both = Assignments(main, retries)

    assert (list(both.partitions), list(both.retry_partitions)) == ([P0], [R0])
    assert both.partition_offsets() == [
        PartitionOffsets(P0, committed_offset=None, log_end_offset=9),
        PartitionOffsets(R0, committed_offset=None, log_end_offset=4),
    ]
    await main.stop_all()
    await retries.stop_all()
