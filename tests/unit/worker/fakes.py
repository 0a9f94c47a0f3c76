"""Fakes for the worker's edges (SMTP, Kafka's consumer, the dead-letter topic, the dedupe store)
and of what its health app reads, for unit tests only."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import ConsumerRecord, TopicPartition
from aiosmtplib import SMTPRecipientRefused, SMTPRecipientsRefused, SMTPResponse

from services.worker.consumer import RebalanceListener
from services.worker.dedupe import DeliveryState, Outcome
from services.worker.membership import GroupMembership
from services.worker.mime import OutgoingEmail
from services.worker.offsets import PartitionOffsets
from shared.schema import EmailRecord


class FakeMailer:
    """Answers each send with the next scripted result: an exception to raise, or refusals."""

    def __init__(self, script: Iterable[BaseException | dict[str, SMTPResponse]] = ()) -> None:
        self.awaiting_final_reply = False
        self.script = list(script)
        self.sent: list[tuple[EmailMessage, str, list[str]]] = []  # parsed back, as received
        self.attempts = 0

    async def send(self, email: OutgoingEmail, recipients: list[str]) -> dict[str, SMTPResponse]:
        self.attempts += 1
        result = self.script.pop(0) if self.script else {}
        if isinstance(result, BaseException):
            raise result
        message = message_from_bytes(email.data, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.sent.append((message, email.sender, recipients))
        return result

    async def close(self) -> None:
        pass


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
    """Refuses every email with 'held' in its subject with a 4xx, until released."""

    holding = True

    def release(self) -> None:
        self.holding = False

    async def send(self, email: OutgoingEmail, recipients: list[str]) -> dict[str, SMTPResponse]:
        if self.holding and b"held" in email.data:
            self.attempts += 1
            raise HELD
        return await super().send(email, recipients)


class FakeDeadLetters:
    def __init__(self, failures: Iterable[BaseException] = ()) -> None:
        self.failures = list(failures)
        self.published: list[tuple[ConsumerRecord[bytes, bytes], str, int]] = []

    async def publish(
        self, record: ConsumerRecord[bytes, bytes], error: str, attempts: int
    ) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.published.append((record, error, attempts))


class InMemoryDedupeStore:
    def __init__(self) -> None:
        self.outcomes: dict[str, Outcome] = {}
        self.accepted: dict[str, set[str]] = {}  # of emails not finished yet, and finished ones

    async def state_of(self, message_id: str) -> DeliveryState | None:
        if message_id not in self.outcomes and message_id not in self.accepted:
            return None
        accepted = frozenset(self.accepted.get(message_id, ()))
        return DeliveryState(self.outcomes.get(message_id), accepted)

    async def record_accepted(
        self, message_id: str, recipients: Collection[str], source: str
    ) -> None:
        if message_id not in self.outcomes:
            self.accepted.setdefault(message_id, set()).update(recipients)

    async def record(self, message_id: str, outcome: Outcome, source: str) -> None:
        self.outcomes.setdefault(message_id, outcome)


class FakeOwnedPartitions:
    """What the health app reads of the partitions a worker owns (assignment.Assignment)."""

    def __init__(self) -> None:
        self.partitions: dict[TopicPartition, object] = {}
        self.offsets: list[PartitionOffsets] = []

    def partition_offsets(self) -> list[PartitionOffsets]:
        return self.offsets


def member_of_the_group() -> GroupMembership:
    membership = GroupMembership()
    membership.joined = True
    return membership


def email_record(message_id: str, **fields: object) -> EmailRecord:
    values: dict[str, object] = {
        "message_id": message_id,
        "created_at": datetime(2026, 11, 25, 9, 30, tzinfo=UTC),
        "from": "demo@example.com",
        "to": ["ana@example.com"],
        "subject": message_id,
        "text": "hello",
    }
    return EmailRecord.model_validate({**values, **fields})


def consumer_record(
    offset: int, value: bytes | None, partition: int = 0, key: bytes | None = None
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="email.send",
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=[],
    )


def kafka_record(offset: int, message_id: str, partition: int = 0) -> ConsumerRecord[bytes, bytes]:
    """A record as the API writes it: keyed by its message id."""
    key, value = email_record(message_id).to_kafka()
    return consumer_record(offset, value, partition, key)
