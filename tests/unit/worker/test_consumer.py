"""The consumer's life with a fake consumer and fake edges: the commit rule over the loop, the
rebalance listener, and at the end the drain, the commit and leaving the group."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import ConsumerRecord, TopicPartition
from aiosmtplib import SMTPRecipientRefused, SMTPRecipientsRefused, SMTPResponse

from services.worker.assignment import Assignment
from services.worker.consumer import RebalanceListener, consume
from services.worker.faults import ConfigurationFaults
from services.worker.membership import GroupMembership
from services.worker.mime import OutgoingEmail
from services.worker.offsets import PartitionOffsets
from services.worker.outcome import RecordOutcome
from services.worker.partition import PartitionWorker
from services.worker.processor import EmailProcessor, Mailer
from services.worker.retry import RetryPolicy
from tests.unit.worker.fakes import FakeDeadLetters, FakeMailer, InMemoryDedupeStore, kafka_record

TOPIC = "email.send"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


class FakeConsumer:
    """Hands out queued batches from getmany and records what is committed and paused."""

    def __init__(self, answers: bool = True) -> None:
        self.answers = answers  # False: Kafka does not answer, start() fails
        self.events: list[str] = []  # start, commit, stop, in order
        self.listener: RebalanceListener | None = None
        self.batches: asyncio.Queue[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]] = (
            asyncio.Queue()
        )
        self.commits: list[dict[TopicPartition, int]] = []
        self.paused_partitions: set[TopicPartition] = set()
        self.assigned: set[TopicPartition] = set()
        self.highwaters: dict[TopicPartition, int] = {}  # of the last fetch response

    async def start(self) -> None:
        if not self.answers:
            raise KafkaConnectionError("Unable to bootstrap from kafka:9092")
        self.events.append("start")

    async def stop(self) -> None:
        self.events.append("stop")

    def subscribe(self, topics: list[str], listener: RebalanceListener) -> None:
        self.listener = listener

    async def getmany(
        self, timeout_ms: int
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        try:
            return await asyncio.wait_for(self.batches.get(), timeout_ms / 1000)
        except TimeoutError:
            return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.events.append("commit")
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


def assignment(
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


async def consuming(
    consumer: FakeConsumer,
    owned: Assignment,
    stopping: asyncio.Event,
    membership: GroupMembership | None = None,
) -> tuple[asyncio.Task[None], RebalanceListener]:
    """The consume loop, running, once it has subscribed with its rebalance listener."""
    running = asyncio.create_task(
        consume(consumer, "kafka:9092", TOPIC, owned, membership or GroupMembership(), stopping)
    )
    await eventually(lambda: consumer.listener is not None)
    assert consumer.listener is not None
    return running, consumer.listener


async def test_finished_records_are_committed_after_the_batch_and_on_shutdown() -> None:
    consumer, mailer, stopping = FakeConsumer(), FakeMailer(), asyncio.Event()
    running, listener = await consuming(consumer, assignment(consumer, mailer), stopping)
    await listener.on_partitions_assigned({P0, P1})

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
    running, listener = await consuming(consumer, assignment(consumer, mailer), stopping)
    await listener.on_partitions_assigned({P0, P1})

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
    owned = assignment(consumer, mailer)
    running, listener = await consuming(consumer, owned, stopping)
    await listener.on_partitions_assigned({P0})
    consumer.batches.put_nowait({P0: [kafka_record(4, "p0-4", 0), kafka_record(5, "held", 0)]})
    await eventually(lambda: mailer.attempts == 2)

    await listener.on_partitions_revoked({P0})

    assert consumer.commits[-1] == {P0: 5}
    assert owned.partitions == {}
    stopping.set()
    await asyncio.wait_for(running, 2)


async def test_a_held_partition_with_a_backlog_is_paused_until_it_drains() -> None:
    consumer, mailer, stopping = FakeConsumer(), HoldingMailer(), asyncio.Event()
    running, listener = await consuming(consumer, assignment(consumer, mailer, 2), stopping)
    await listener.on_partitions_assigned({P0})

    consumer.batches.put_nowait(
        {P0: [kafka_record(n, "held" if n == 0 else f"p0-{n}", 0) for n in range(6)]}
    )
    await eventually(lambda: P0 in consumer.paused())
    stopping.set()
    await asyncio.wait_for(running, 2)


async def test_a_rebalance_is_timed_from_revocation_to_the_new_assignment() -> None:
    consumer, membership = FakeConsumer(), GroupMembership()
    listener = RebalanceListener(TOPIC, assignment(consumer, FakeMailer()), membership)
    await listener.on_partitions_assigned({P0, P1})  # the first join: nothing was revoked
    first_join = (membership.joined, membership.rebalances)

    await listener.on_partitions_revoked({P0, P1})
    joined_while_rebalancing = membership.joined
    await asyncio.sleep(0.05)  # the group's join and sync
    await listener.on_partitions_assigned({P1})

    assert first_join == (True, 0)
    assert not joined_while_rebalancing
    assert membership.joined
    assert membership.rebalances == 1
    assert membership.last_rebalance_seconds is not None
    assert membership.last_rebalance_seconds >= 0.05
    await listener.on_partitions_revoked({P1})


async def test_partition_offsets_are_the_owned_partitions_committed_and_log_end_offsets() -> None:
    consumer, mailer, stopping = FakeConsumer(), FakeMailer(), asyncio.Event()
    owned = assignment(consumer, mailer)
    running, listener = await consuming(consumer, owned, stopping)
    consumer.assigned = {P0, P1}
    await listener.on_partitions_assigned({P0, P1})
    consumer.batches.put_nowait({P0: [kafka_record(n, f"p0-{n}", 0) for n in range(3)]})
    await eventually(lambda: consumer.committed_offsets() == {P0: 3})
    consumer.highwaters = {P0: 5}

    owning_both = owned.partition_offsets()
    await listener.on_partitions_revoked({P1})
    consumer.assigned = {P0}
    after_revocation = owned.partition_offsets()
    consumer.assigned = set()  # the consumer lost its assignment before the listener ran
    unassigned = owned.partition_offsets()
    stopping.set()
    await asyncio.wait_for(running, 2)

    assert owning_both == [
        PartitionOffsets(P0, committed_offset=3, log_end_offset=5),
        PartitionOffsets(P1, committed_offset=None, log_end_offset=None),
    ]
    assert [offsets.lag for offsets in owning_both] == [2, None]
    assert after_revocation == [PartitionOffsets(P0, committed_offset=3, log_end_offset=5)]
    assert unassigned == []


async def test_at_the_end_the_processed_position_is_committed_then_the_group_left() -> None:
    consumer, mailer, stopping = FakeConsumer(), HoldingMailer(), asyncio.Event()
    running, listener = await consuming(consumer, assignment(consumer, mailer), stopping)
    await listener.on_partitions_assigned({P0})
    consumer.batches.put_nowait({P0: [kafka_record(0, "p0-0", 0), kafka_record(1, "held", 0)]})
    await eventually(lambda: mailer.attempts == 2)

    stopping.set()
    await asyncio.wait_for(running, 2)

    assert consumer.committed_offsets() == {P0: 1}
    assert consumer.events[0] == "start"
    assert consumer.events[-1] == "stop", "the group is left after the last commit"


async def test_asked_to_stop_before_kafka_answers_the_consumer_is_stopped_all_the_same() -> None:
    consumer, stopping = FakeConsumer(answers=False), asyncio.Event()
    owned = assignment(consumer, FakeMailer())
    running = asyncio.create_task(
        consume(consumer, "kafka:9092", TOPIC, owned, GroupMembership(), stopping)
    )
    await asyncio.sleep(0.05)

    stopping.set()
    await asyncio.wait_for(running, 2)

    assert consumer.listener is None, "never subscribed"
    assert consumer.events == ["stop"]


class BrokenProcessor(EmailProcessor):
    """A bug: processing raises what no retry is for."""

    async def process(
        self, record: ConsumerRecord[bytes, bytes], smtp: Mailer, stopping: asyncio.Event
    ) -> RecordOutcome:
        raise RuntimeError("a bug")


async def test_a_failed_lane_ends_the_loop_and_the_consumer_still_leaves_the_group() -> None:
    consumer, mailer, stopping = FakeConsumer(), FakeMailer(), asyncio.Event()
    broken = BrokenProcessor(
        InMemoryDedupeStore(), FakeDeadLetters(), RetryPolicy(0, 60, 60), "pipeline.test",
        ConfigurationFaults(60, 60),
    )  # fmt: skip
    owned = assignment(consumer, mailer, processor=broken)
    running, listener = await consuming(consumer, owned, stopping)
    await listener.on_partitions_assigned({P0})

    consumer.batches.put_nowait({P0: [kafka_record(0, "p0-0", 0)]})

    with pytest.raises(RuntimeError):
        await asyncio.wait_for(running, 2)
    assert consumer.events[-1] == "stop"
    assert consumer.committed_offsets() == {}, "nothing finished, nothing committed"
