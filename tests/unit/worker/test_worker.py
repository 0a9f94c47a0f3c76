"""The consume loop's commit rule and rebalance listener, with a fake consumer and fake edges."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka.structs import ConsumerRecord, TopicPartition
from aiosmtplib import SMTPRecipientRefused, SMTPRecipientsRefused, SMTPResponse

from services.worker.faults import ConfigurationFaults
from services.worker.mime import OutgoingEmail
from services.worker.offsets import PartitionOffsets
from services.worker.partition import PartitionWorker
from services.worker.processor import EmailProcessor
from services.worker.retry import RetryPolicy
from services.worker.worker import EmailWorker
from tests.unit.worker.fakes import FakeDeadLetters, FakeMailer, InMemoryDedupeStore, kafka_record

TOPIC = "email.send"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


class FakeConsumer:
    """Hands out queued batches from getmany and records what is committed and paused."""

    def __init__(self) -> None:
        self.batches: asyncio.Queue[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]] = (
            asyncio.Queue()
        )
        self.commits: list[dict[TopicPartition, int]] = []
        self.paused_partitions: set[TopicPartition] = set()
        self.assigned: set[TopicPartition] = set()
        self.highwaters: dict[TopicPartition, int] = {}  # of the last fetch response

    def subscribe(self, topics: list[str], listener: object) -> None:
        self.listener = listener

    async def getmany(
        self, timeout_ms: int
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        try:
            return await asyncio.wait_for(self.batches.get(), timeout_ms / 1000)
        except TimeoutError:
            return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def committed_offsets(self) -> dict[TopicPartition, int]:
        merged: dict[TopicPartition, int] = {}
        for commit in self.commits:
            merged |= commit
        return merged

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 0)

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 0)

    async def committed(self, partition: TopicPartition) -> int | None:
        return self.committed_offsets().get(partition)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def highwater(self, partition: TopicPartition) -> int | None:
        assert partition in self.assigned, "Partition is not assigned"  # as aiokafka's
        return self.highwaters.get(partition)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_partitions)

    def pause(self, partition: TopicPartition) -> None:
        self.paused_partitions.add(partition)

    def resume(self, partition: TopicPartition) -> None:
        self.paused_partitions.discard(partition)


HELD = SMTPRecipientsRefused([SMTPRecipientRefused(451, "greylisted", "held@example.com")])


class HoldingMailer(FakeMailer):
    """Refuses every email with 'held' in its subject with a 4xx, for ever."""

    async def send(self, email: OutgoingEmail, recipients: list[str]) -> dict[str, SMTPResponse]:
        if b"held" in email.data:
            self.attempts += 1
            raise HELD
        return await super().send(email, recipients)


def email_worker(consumer: FakeConsumer, mailer: FakeMailer, max_backlog: int = 100) -> EmailWorker:
    processor = EmailProcessor(
        store=InMemoryDedupeStore(),
        dead_letters=FakeDeadLetters(),
        retry=RetryPolicy(max_attempts=0, initial_seconds=60, max_seconds=60),
        message_id_domain="pipeline.test",
        configuration_faults=ConfigurationFaults(60, 60),
    )
    return EmailWorker(
        consumer,
        TOPIC,
        lambda partition: PartitionWorker(
            partition, processor, [mailer], max_ahead=max_backlog, stop_grace_seconds=5
        ),
        max_backlog=max_backlog,
    )


async def eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(2):
        while not condition():  # noqa: ASYNC110 - polling the loop's state is the point
            await asyncio.sleep(0.01)


async def test_finished_records_are_committed_after_the_batch_and_on_shutdown() -> None:
    consumer, mailer, stopping = FakeConsumer(), FakeMailer(), asyncio.Event()
    worker = email_worker(consumer, mailer)
    running = asyncio.create_task(worker.run(stopping))
    await worker.on_partitions_assigned({P0, P1})

    consumer.batches.put_nowait(
        {P0: [kafka_record(n, f"p0-{n}", 0) for n in range(3)], P1: [kafka_record(7, "p1-7", 1)]}
    )
    await eventually(lambda: consumer.committed_offsets() == {P0: 3, P1: 8})
    stopping.set()
    await asyncio.wait_for(running, 2)

    assert len(mailer.sent) == 4
    assert consumer.committed_offsets() == {P0: 3, P1: 8}


async def test_never_commits_past_a_held_record_and_other_partitions_go_on() -> None:
    consumer, mailer, stopping = FakeConsumer(), HoldingMailer(), asyncio.Event()
    worker = email_worker(consumer, mailer)
    running = asyncio.create_task(worker.run(stopping))
    await worker.on_partitions_assigned({P0, P1})

    consumer.batches.put_nowait(
        {
            P0: [
                kafka_record(0, "p0-0", 0),
                kafka_record(1, "held", 0),
                kafka_record(2, "p0-2", 0),
            ],
            P1: [kafka_record(0, "p1-0", 1), kafka_record(1, "p1-1", 1)],
        }
    )
    await eventually(lambda: consumer.committed_offsets() == {P0: 1, P1: 2})
    stopping.set()
    await asyncio.wait_for(running, 2)

    assert consumer.committed_offsets() == {P0: 1, P1: 2}, "offset 1 of P0 is unfinished"
    assert [message["Subject"] for message, _, _ in mailer.sent] == ["p0-0", "p1-0", "p1-1"]


async def test_revocation_commits_exactly_the_processed_position() -> None:
    consumer, mailer, stopping = FakeConsumer(), HoldingMailer(), asyncio.Event()
    worker = email_worker(consumer, mailer)
    running = asyncio.create_task(worker.run(stopping))
    await worker.on_partitions_assigned({P0})
    consumer.batches.put_nowait({P0: [kafka_record(4, "p0-4", 0), kafka_record(5, "held", 0)]})
    await eventually(lambda: mailer.attempts == 2)

    await worker.on_partitions_revoked({P0})

    assert consumer.commits[-1] == {P0: 5}
    assert worker.partitions == {}
    stopping.set()
    await asyncio.wait_for(running, 2)


async def test_a_held_partition_with_a_backlog_is_paused_until_it_drains() -> None:
    consumer, mailer, stopping = FakeConsumer(), HoldingMailer(), asyncio.Event()
    worker = email_worker(consumer, mailer, max_backlog=2)
    running = asyncio.create_task(worker.run(stopping))
    await worker.on_partitions_assigned({P0})

    consumer.batches.put_nowait(
        {P0: [kafka_record(n, "held" if n == 0 else f"p0-{n}", 0) for n in range(6)]}
    )
    await eventually(lambda: P0 in consumer.paused())
    stopping.set()
    await asyncio.wait_for(running, 2)


async def test_a_rebalance_is_timed_from_revocation_to_the_new_assignment() -> None:
    consumer, mailer = FakeConsumer(), FakeMailer()
    worker = email_worker(consumer, mailer)
    await worker.on_partitions_assigned({P0, P1})  # the first join: nothing was revoked

    await worker.on_partitions_revoked({P0, P1})
    await asyncio.sleep(0.05)  # the group's join and sync
    await worker.on_partitions_assigned({P1})

    assert worker.rebalances == 1
    assert worker.last_rebalance_seconds is not None
    assert worker.last_rebalance_seconds >= 0.05
    await worker.on_partitions_revoked({P1})


async def test_partition_offsets_are_the_owned_partitions_committed_and_log_end_offsets() -> None:
    consumer, mailer, stopping = FakeConsumer(), FakeMailer(), asyncio.Event()
    worker = email_worker(consumer, mailer)
    running = asyncio.create_task(worker.run(stopping))
    consumer.assigned = {P0, P1}
    await worker.on_partitions_assigned({P0, P1})
    consumer.batches.put_nowait({P0: [kafka_record(n, f"p0-{n}", 0) for n in range(3)]})
    await eventually(lambda: consumer.committed_offsets() == {P0: 3})
    consumer.highwaters = {P0: 5}

    owning_both = worker.partition_offsets()
    await worker.on_partitions_revoked({P1})
    consumer.assigned = {P0}
    after_revocation = worker.partition_offsets()
    consumer.assigned = set()  # the consumer lost its assignment before the listener ran
    unassigned = worker.partition_offsets()
    stopping.set()
    await asyncio.wait_for(running, 2)

    assert owning_both == [
        PartitionOffsets(P0, committed_offset=3, log_end_offset=5),
        PartitionOffsets(P1, committed_offset=None, log_end_offset=None),
    ]
    assert [offsets.lag for offsets in owning_both] == [2, None]
    assert after_revocation == [PartitionOffsets(P0, committed_offset=3, log_end_offset=5)]
    assert unassigned == []
