"""A partition's records: taken in offset order by its lanes, never two copies of one email at
once, and next_offset_to_commit only past a contiguous run of finished ones."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka.structs import TopicPartition
from aiosmtplib import SMTPRecipientRefused, SMTPRecipientsRefused, SMTPResponse

from services.worker.configuration_faults import ConfigurationFaults
from services.worker.mime import OutgoingEmail
from services.worker.partition import PartitionWorker
from services.worker.processor import AttemptCounts, EmailProcessor
from services.worker.retry import RetryPolicy
from services.worker.store_outage import StoreOutage
from tests.unit.worker.fakes import FakeDeadLetters, FakeMailer, InMemoryDedupeStore, kafka_record

PARTITION = TopicPartition("email.send", 1)


def partition_worker(
    mailer: FakeMailer,
    retry_seconds: float = 0.001,
    lanes: int = 1,
    max_ahead: int = 100,
    grace_seconds: float = 5.0,
) -> PartitionWorker:
    processor = EmailProcessor(
        store=InMemoryDedupeStore(),
        dead_letters=FakeDeadLetters(),
        retry=RetryPolicy(max_attempts=0, initial_seconds=retry_seconds, max_seconds=retry_seconds),
        message_id_domain="pipeline.test",
        configuration_faults=ConfigurationFaults(retry_seconds, retry_seconds),
        counts=AttemptCounts(),
        store_outage=StoreOutage(),
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


async def test_the_commit_position_waits_for_a_record_being_retried() -> None:
    held = SMTPRecipientsRefused([SMTPRecipientRefused(451, "later", "ana@example.com")])
    mailer = FakeMailer([{}, held, held, held])
    worker = partition_worker(mailer, retry_seconds=60)

    worker.enqueue(
        [kafka_record(0, "m-0", 1), kafka_record(1, "m-1", 1), kafka_record(2, "m-2", 1)]
    )
    await wait_for(lambda: mailer.attempts == 2)

    assert worker.next_offset_to_commit == 1, "offset 1 is not finished: never commit past it"
    await asyncio.wait_for(worker.stop(), timeout=1)
    assert worker.next_offset_to_commit == 1
    assert len(mailer.sent) == 1


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

    async def send(self, email: OutgoingEmail, recipients: list[str]) -> dict[str, SMTPResponse]:
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
    held = SMTPRecipientsRefused([SMTPRecipientRefused(451, "later", "ana@example.com")])
    mailer = FakeMailer([held, {}, {}, held, held])
    worker = partition_worker(mailer, retry_seconds=60, lanes=2)

    worker.enqueue([kafka_record(offset, f"m-{offset}", 1) for offset in range(3)])
    await wait_for(lambda: len(mailer.sent) == 2)

    assert worker.next_offset_to_commit == 0, "offset 0 is being retried: never commit past it"
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
    held = SMTPRecipientsRefused([SMTPRecipientRefused(451, "later", "ana@example.com")])
    mailer = FakeMailer([held, *[{}] * 5, *[held] * 50])
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


class SlowServer(FakeMailer):
    """Holds each transaction `seconds`, before the final "." or after it (its reply)."""

    def __init__(self, seconds: float, after_final_dot: bool) -> None:
        super().__init__()
        self.seconds = seconds
        self.after_final_dot = after_final_dot
        self.in_transaction = asyncio.Event()

    async def send(self, email: OutgoingEmail, recipients: list[str]) -> dict[str, SMTPResponse]:
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
    assert worker.next_offset_to_commit == 1, "the reply came: finished, and committed"
