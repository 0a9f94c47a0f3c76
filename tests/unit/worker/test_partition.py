"""A partition's records: taken in offset order by its lanes, never two copies of one email at
once, finished only once Kafka has acknowledged what each published, and next_offset_to_commit
only past a contiguous run of finished ones."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import TopicPartition
from aiosmtplib import SMTPRecipientRefused, SMTPRecipientsRefused

from services.worker.mime import OutgoingEmail
from services.worker.partition import PartitionWorker
from services.worker.retry import RetryPolicy
from services.worker.smtp import Transaction
from tests.unit.worker.fakes import (
    HELD,
    FakeMailer,
    FakeProducer,
    HoldingMailer,
    email_processor,
    kafka_record,
)

PARTITION = TopicPartition("email.send", 1)


def partition_worker(
    mailer: FakeMailer,
    retry_seconds: float = 0.001,
    lanes: int = 1,
    max_ahead: int = 100,
    grace_seconds: float = 5.0,
    producer: FakeProducer | None = None,
) -> PartitionWorker:
    processor = email_processor(
        producer=producer,
        retry=RetryPolicy(initial_seconds=retry_seconds, max_seconds=retry_seconds),
    )
    return PartitionWorker(
        PARTITION, processor, [mailer] * lanes, max_ahead, stop_grace_seconds=grace_seconds
    )


async def wait_for(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(2):
        while not condition():  # noqa: ASYNC110 - polling the worker's state is the point
            await asyncio.sleep(0.005)


async def test_records_are_delivered_in_offset_order() -> None:
    mailer = FakeMailer()
    worker = partition_worker(mailer)

    worker.enqueue([kafka_record(offset, f"m-{offset}", 1) for offset in range(4, 9)])
    await wait_for(lambda: worker.next_offset_to_commit == 9)
    await worker.stop()

    assert [message["Subject"] for message, _, _ in mailer.sent] == [f"m-{n}" for n in range(4, 9)]


async def test_the_commit_position_waits_for_a_record_held_while_the_relay_is_away() -> None:
    mailer = FakeMailer([{}, HELD, HELD, HELD])
    worker = partition_worker(mailer, retry_seconds=60)

    worker.enqueue(
        [kafka_record(0, "m-0", 1), kafka_record(1, "m-1", 1), kafka_record(2, "m-2", 1)]
    )
    await wait_for(lambda: mailer.attempts == 2 and worker.next_offset_to_commit is not None)

    assert worker.next_offset_to_commit == 1, "offset 1 is not finished: never commit past it"
    await asyncio.wait_for(worker.stop(), timeout=1)
    assert worker.next_offset_to_commit == 1
    assert len(mailer.sent) == 1


async def test_a_deferred_email_no_longer_holds_the_commit() -> None:
    greylisted = SMTPRecipientsRefused([SMTPRecipientRefused(451, "greylisted", "ana@example.com")])
    mailer, producer = FakeMailer([greylisted]), FakeProducer()
    worker = partition_worker(mailer, producer=producer)

    worker.enqueue([kafka_record(offset, f"m-{offset}", 1) for offset in range(3)])
    await wait_for(lambda: worker.next_offset_to_commit == 3)
    await worker.stop()

    assert [topic for topic, *_ in producer.sent].count("email.send.retry-1m") == 1
    assert [message["Subject"] for message, _, _ in mailer.sent] == ["m-1", "m-2"]


async def test_an_offset_is_queued_once_even_if_fetched_again() -> None:
    mailer = FakeMailer()
    worker = partition_worker(mailer)

    worker.enqueue([kafka_record(0, "m-0", 1), kafka_record(1, "m-1", 1)])
    # The same offset again, fetched twice; its content does not matter, its offset does.
    worker.enqueue([kafka_record(1, "m-1-again", 1), kafka_record(2, "m-2", 1)])
    await wait_for(lambda: worker.next_offset_to_commit == 3)
    await worker.stop()

    assert [message["Subject"] for message, _, _ in mailer.sent] == ["m-0", "m-1", "m-2"]


async def test_stop_when_idle_returns_at_once() -> None:
    worker = partition_worker(FakeMailer())

    await asyncio.wait_for(worker.stop(), timeout=1)

    assert worker.next_offset_to_commit is None


class GatedMailer(FakeMailer):
    """Holds every send until `gate` opens, and counts how many were in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.in_flight = self.most_in_flight = 0

    async def send(self, email: OutgoingEmail, recipients: list[str]) -> Transaction:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.gate.wait()
            return await super().send(email, recipients)
        finally:
            self.in_flight -= 1


async def test_each_lane_has_an_email_of_the_partition_in_flight() -> None:
    mailer = GatedMailer()
    worker = partition_worker(mailer, lanes=3)

    worker.enqueue([kafka_record(offset, f"m-{offset}", 1) for offset in range(6)])
    await wait_for(lambda: mailer.in_flight == 3)
    mailer.gate.set()
    await wait_for(lambda: worker.next_offset_to_commit == 6)
    await worker.stop()

    assert mailer.most_in_flight == 3
    assert sorted(message["Subject"] for message, _, _ in mailer.sent) == [
        f"m-{n}" for n in range(6)
    ]


async def test_later_records_finish_but_the_commit_waits_at_the_unfinished_one() -> None:
    mailer = FakeMailer([HELD, {}, {}, HELD, HELD])
    worker = partition_worker(mailer, retry_seconds=60, lanes=2)

    worker.enqueue([kafka_record(offset, f"m-{offset}", 1) for offset in range(3)])
    await wait_for(lambda: len(mailer.sent) == 2 and worker.next_offset_to_commit is not None)

    assert worker.next_offset_to_commit == 0, "offset 0 waits for the relay: never commit past it"
    await asyncio.wait_for(worker.stop(), timeout=1)
    assert worker.next_offset_to_commit == 0
    assert sorted(message["Subject"] for message, _, _ in mailer.sent) == ["m-1", "m-2"]


async def test_two_copies_of_one_email_are_never_in_flight_together() -> None:
    # A client's retry with the same Idempotency-Key: the same message id, so the same key and
    # partition. The copy waits for the first, then finds it in the dedupe store.
    mailer = GatedMailer()
    worker = partition_worker(mailer, lanes=2)

    worker.enqueue([kafka_record(0, "same", 1), kafka_record(1, "same", 1)])
    await wait_for(lambda: mailer.in_flight == 1)
    await asyncio.sleep(0.01)
    mailer.gate.set()
    await wait_for(lambda: worker.next_offset_to_commit == 2)
    await worker.stop()

    assert mailer.most_in_flight == 1
    assert len(mailer.sent) == 1


async def test_the_lanes_run_at_most_max_ahead_records_past_an_unfinished_one() -> None:
    mailer = FakeMailer([HELD, *[{}] * 5, *[HELD] * 50])
    worker = partition_worker(mailer, retry_seconds=60, lanes=2, max_ahead=3)

    worker.enqueue([kafka_record(offset, f"m-{offset}", 1) for offset in range(6)])
    await wait_for(lambda: len(mailer.sent) == 2)
    await asyncio.sleep(0.05)

    assert sorted(message["Subject"] for message, _, _ in mailer.sent) == ["m-1", "m-2"]
    assert worker.backlog == 3, "offsets 3 to 5 wait until offset 0 is finished"
    await asyncio.wait_for(worker.stop(), timeout=1)


async def test_lanes_waiting_together_take_no_more_than_max_ahead_records() -> None:
    mailer = GatedMailer()
    worker = partition_worker(mailer, lanes=4, max_ahead=2)
    await asyncio.sleep(0.01)  # every lane waits for a record, with room ahead for two

    worker.enqueue([kafka_record(offset, f"m-{offset}", 1) for offset in range(6)])
    await wait_for(lambda: mailer.in_flight >= 2)
    await asyncio.sleep(0.01)
    in_flight_while_held = mailer.in_flight
    mailer.gate.set()
    await wait_for(lambda: worker.next_offset_to_commit == 6)
    await worker.stop()

    assert in_flight_while_held == 2
    assert mailer.most_in_flight == 2


async def test_a_record_is_finished_only_once_kafka_acknowledged_what_it_published() -> None:
    mailer, producer = FakeMailer(), FakeProducer()
    producer.acknowledge.clear()
    worker = partition_worker(mailer, producer=producer)

    worker.enqueue([kafka_record(offset, f"m-{offset}", 1) for offset in range(3)])
    await wait_for(lambda: len(mailer.sent) == 3)
    await asyncio.sleep(0.02)
    committable_while_unacknowledged = worker.next_offset_to_commit
    producer.acknowledge.set()
    await wait_for(lambda: worker.next_offset_to_commit == 3)
    await worker.stop()

    assert len(mailer.sent) == 3, "the lane went on while Kafka had not acknowledged"
    assert committable_while_unacknowledged is None


async def test_events_kafka_did_not_acknowledge_are_produced_again_before_the_record_finishes() -> (
    None
):
    producer = FakeProducer(failures=[KafkaTimeoutError()])
    worker = partition_worker(FakeMailer(), producer=producer)

    worker.enqueue([kafka_record(0, "m-0", 1)])
    await wait_for(lambda: worker.next_offset_to_commit == 1)
    await worker.stop()

    accepted_and_sent = [value for topic, value, _, _ in producer.sent if topic == "email.events"]
    assert len(accepted_and_sent) == 4
    assert accepted_and_sent[:2] == accepted_and_sent[2:], "the same bytes again"


async def test_records_waiting_for_their_acknowledgements_count_against_max_ahead() -> None:
    mailer, producer = FakeMailer(), FakeProducer()
    producer.acknowledge.clear()
    worker = partition_worker(mailer, lanes=2, max_ahead=3, producer=producer)

    worker.enqueue([kafka_record(offset, f"m-{offset}", 1) for offset in range(6)])
    await wait_for(lambda: len(mailer.sent) == 3)
    await asyncio.sleep(0.05)
    sent_while_unacknowledged = len(mailer.sent)
    producer.acknowledge.set()
    await wait_for(lambda: worker.next_offset_to_commit == 6)
    await worker.stop()

    assert sent_while_unacknowledged == 3


async def test_a_stop_gives_up_on_unacknowledged_records_and_leaves_them_uncommitted() -> None:
    mailer, producer = FakeMailer(), FakeProducer()
    worker = partition_worker(mailer, grace_seconds=0.05, producer=producer)
    worker.enqueue([kafka_record(0, "m-0", 1)])
    await wait_for(lambda: worker.next_offset_to_commit == 1)
    producer.acknowledge.clear()
    worker.enqueue([kafka_record(1, "m-1", 1), kafka_record(2, "m-2", 1)])
    await wait_for(lambda: len(mailer.sent) == 3)

    await asyncio.wait_for(worker.stop(), timeout=1)

    assert worker.next_offset_to_commit == 1, "read again by the next owner, and published again"
    worker.check()  # a cancelled wait for acknowledgements is no failure


class SlowServer(FakeMailer):
    """Holds each transaction `seconds`, before the final "." or after it (its reply)."""

    def __init__(self, seconds: float, after_final_dot: bool) -> None:
        super().__init__()
        self.seconds = seconds
        self.after_final_dot = after_final_dot
        self.in_transaction = asyncio.Event()

    async def send(self, email: OutgoingEmail, recipients: list[str]) -> Transaction:
        self.in_transaction.set()
        self.awaiting_final_reply = self.after_final_dot
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.awaiting_final_reply = False
        return await super().send(email, recipients)


async def test_a_stop_abandons_a_transaction_the_server_cannot_have_yet() -> None:
    server = SlowServer(seconds=60, after_final_dot=False)
    worker = partition_worker(server, grace_seconds=0.05)
    worker.enqueue([kafka_record(0, "m-0", 1)])
    await asyncio.wait_for(server.in_transaction.wait(), timeout=1)

    await asyncio.wait_for(worker.stop(), timeout=1)

    assert server.sent == []
    assert worker.next_offset_to_commit is None, "unfinished: read again by the next owner"


async def test_a_stop_waits_for_the_reply_to_a_final_dot_beyond_its_grace() -> None:
    server = SlowServer(seconds=0.3, after_final_dot=True)
    worker = partition_worker(server, grace_seconds=0.05)
    worker.enqueue([kafka_record(0, "m-0", 1)])
    await asyncio.wait_for(server.in_transaction.wait(), timeout=1)

    await asyncio.wait_for(worker.stop(), timeout=2)

    assert len(server.sent) == 1
    assert worker.next_offset_to_commit == 1, "the reply came and Kafka took its events"


async def test_a_record_held_in_its_lane_is_released_when_the_relay_answers() -> None:
    mailer = HoldingMailer()
    worker = partition_worker(mailer, retry_seconds=0.01)

    worker.enqueue([kafka_record(0, "held", 1), kafka_record(1, "m-1", 1)])
    await wait_for(lambda: mailer.attempts >= 2)
    held_at = worker.next_offset_to_commit
    mailer.release()
    await wait_for(lambda: worker.next_offset_to_commit == 2)
    await worker.stop()

    assert held_at is None
    assert [message["Subject"] for message, _, _ in mailer.sent] == ["held", "m-1"]
