"""The consumer's life with a fake consumer and fake edges: the commit rule over the loop, the
rebalance listener, and at the end the drain, the commit and leaving the group."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition

from services.worker.assignment import Assignment
from services.worker.consumer import RebalanceListener, consume
from services.worker.membership import GroupMembership
from services.worker.mime import OutgoingEmail
from services.worker.outcome import RecordOutcome
from services.worker.processor import EmailProcessor, Mailer
from services.worker.smtp import Transaction
from tests.unit.worker.fakes import (
    NOW,
    FakeConsumer,
    FakeMailer,
    HoldingMailer,
    email_processor,
    email_record,
    kafka_record,
    message_id_of,
    retry_topic_record,
)
from tests.unit.worker.test_assignment import eventually, owned_partitions

TOPIC = "email.send"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


async def consuming(
    consumer: FakeConsumer, owned: Assignment, stopping: asyncio.Event
) -> tuple[asyncio.Task[None], RebalanceListener]:
    """The consume loop, running, once it has subscribed with its rebalance listener."""
    running = asyncio.create_task(
        consume(consumer, "kafka:9092", TOPIC, owned, GroupMembership(), stopping)
    )
    await eventually(lambda: consumer.listener is not None)
    assert consumer.listener is not None
    return running, consumer.listener


async def test_finished_records_are_committed_after_the_batch_and_on_shutdown() -> None:
    consumer, mailer, stopping = FakeConsumer(), FakeMailer(), asyncio.Event()
    running, listener = await consuming(consumer, owned_partitions(consumer, mailer), stopping)
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
    running, listener = await consuming(consumer, owned_partitions(consumer, mailer), stopping)
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
    owned = owned_partitions(consumer, mailer)
    running, listener = await consuming(consumer, owned, stopping)
    await listener.on_partitions_assigned({P0})
    consumer.batches.put_nowait({P0: [kafka_record(4, "p0-4", 0), kafka_record(5, "held", 0)]})
    await eventually(lambda: mailer.attempts == 2)

    await listener.on_partitions_revoked({P0})

    assert consumer.commits[-1] == {P0: 5}
    assert owned.partitions == {}
    stopping.set()
    await asyncio.wait_for(running, 2)


class LoggingConsumer(FakeConsumer):
    """Also writes down, in its events, each committed offset it is asked for."""

    async def committed(self, partition: TopicPartition) -> int | None:
        self.events.append(f"read committed {partition.partition}")
        return await super().committed(partition)


class ReleasedMailer(FakeMailer):
    """Holds each send until released, then writes down, in `events`, that it is done."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events
        self.sending = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, email: OutgoingEmail, recipients: list[str]) -> Transaction:
        self.sending.set()
        await self.release.wait()
        sent = await super().send(email, recipients)
        self.events.append(f"sent {message_id_of(email)}")
        return sent


async def test_the_listener_drains_then_commits_and_resumes_once_the_commits_are_read() -> None:
    consumer = LoggingConsumer()
    times = iter([100.0, 103.5, 200.0])

    def clock() -> float:
        consumer.events.append("clock")
        return next(times)

    membership, mailer = GroupMembership(clock), ReleasedMailer(consumer.events)
    owned = owned_partitions(consumer, mailer)
    listener = RebalanceListener(TOPIC, owned, membership)
    await listener.on_partitions_assigned({P0})  # the first join: nothing was revoked
    owned.hand_out({P0: [kafka_record(0, "m-0", 0)]})
    await asyncio.wait_for(mailer.sending.wait(), 1)
    consumer.events.clear()

    revoking = asyncio.create_task(listener.on_partitions_revoked({P0}))
    await eventually(lambda: consumer.events == ["clock"])
    joined_while_draining = membership.joined
    mailer.release.set()
    await asyncio.wait_for(revoking, 2)
    await listener.on_partitions_assigned({P1})

    assert consumer.events == ["clock", "sent m-0", "commit", "read committed 1", "clock"]
    assert consumer.commits[-1] == {P0: 1}, "the email in flight finished, then was committed"
    assert not joined_while_draining
    assert (membership.joined, membership.rebalances) == (True, 1)
    assert membership.last_rebalance_seconds == 3.5
    assert list(owned.partitions) == [P1]
    await listener.on_partitions_revoked({P1})


async def test_at_the_end_the_processed_position_is_committed_then_the_group_left() -> None:
    consumer, mailer, stopping = FakeConsumer(), HoldingMailer(), asyncio.Event()
    running, listener = await consuming(consumer, owned_partitions(consumer, mailer), stopping)
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
    owned = owned_partitions(consumer, FakeMailer())
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
    broken = email_processor(kind=BrokenProcessor)
    owned = owned_partitions(consumer, mailer, processor=broken)
    running, listener = await consuming(consumer, owned, stopping)
    await listener.on_partitions_assigned({P0})

    consumer.batches.put_nowait({P0: [kafka_record(0, "p0-0", 0)]})

    with pytest.raises(RuntimeError):
        await asyncio.wait_for(running, 2)
    assert consumer.events[-1] == "stop"
    assert consumer.committed_offsets() == {}, "nothing finished, nothing committed"


async def test_the_retry_topics_are_consumed_by_pattern_with_their_due_times() -> None:
    """Every topic matching the pattern, so that those of an earlier schedule still drain."""
    consumer, mailer, stopping = FakeConsumer(), FakeMailer(), asyncio.Event()
    retry_5m = TopicPartition("email.send.retry-5m", 0)
    consumer.assigned = {retry_5m}
    owned = owned_partitions(consumer, mailer, waits_until_due=True)
    running = asyncio.create_task(
        consume(
            consumer, "kafka:9092", "email.send.retry-*", owned, GroupMembership(), stopping,
            pattern=r"^email\.send\.retry-",
        )
    )  # fmt: skip
    await eventually(lambda: consumer.listener is not None)
    assert consumer.listener is not None
    await consumer.listener.on_partitions_assigned({retry_5m})
    retry = retry_topic_record(
        0, email_record("m-1"), ["ana@example.com"], due_at=NOW, topic="email.send.retry-5m"
    )

    consumer.batches.put_nowait({retry_5m: [retry]})
    await eventually(lambda: consumer.committed_offsets() == {retry_5m: 1})
    stopping.set()
    await asyncio.wait_for(running, 2)

    assert consumer.subscription == r"^email\.send\.retry-"
    assert [recipients for _, _, recipients in mailer.sent] == [["ana@example.com"]]


async def test_email_send_is_consumed_by_its_name() -> None:
    consumer, stopping = FakeConsumer(), asyncio.Event()
    running, _ = await consuming(consumer, owned_partitions(consumer, FakeMailer()), stopping)

    stopping.set()
    await asyncio.wait_for(running, 2)

    assert consumer.subscription == [TOPIC]
