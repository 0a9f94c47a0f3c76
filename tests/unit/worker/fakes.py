"""Fakes for the worker's edges (SMTP, Kafka's consumer and producer, the dead-letter topic, the
dedupe store, the suppression list) and of what its health app reads, and a processor wired to
them, for unit tests only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import ConsumerRecord, RecordMetadata, TopicPartition
from aiosmtplib import SMTPResponse

from services.worker.configuration_faults import ConfigurationFaults
from services.worker.consumer import RebalanceListener
from services.worker.dedupe.contract import DedupeStore, DeliveryState, Outcome, RecipientRow
from services.worker.membership import GroupMembership
from services.worker.mime import OutgoingEmail
from services.worker.offsets import PartitionOffsets
from services.worker.outbox import Outbox
from services.worker.outcome import RecordOutcome
from services.worker.processor import AttemptCounts, EmailProcessor, Mailer, Pace
from services.worker.recipient_outcomes import RetryPlan
from services.worker.retry import RetryPolicy
from services.worker.send_limiter import SendLimiter
from services.worker.smtp import Transaction
from services.worker.smtp_failures import RelayUnavailable
from services.worker.store_outage import StoreOutage
from shared.events import Position, Reply
from shared.retry_topics import RetryRecord, parse_schedule
from shared.schema import EmailRecord
from shared.suppressions import Suppression, SuppressionPage

QUEUED = SMTPResponse(250, "2.0.0 Ok: queued as 4F2A")


class FakeMailer:
    """Answers each send with the next scripted result: an exception to raise, or refusals
    (the server takes the email for the others, with QUEUED)."""

    def __init__(self, script: Iterable[BaseException | dict[str, SMTPResponse]] = ()) -> None:
        self.awaiting_final_reply = False
        self.script = list(script)
        self.sent: list[tuple[EmailMessage, str, list[str]]] = []  # parsed back, as received
        self.attempts = 0
        self.tried: list[list[str]] = []  # the recipients of every try, taken or not

    async def send(self, email: OutgoingEmail, recipients: list[str]) -> Transaction:
        self.attempts += 1
        self.tried.append(list(recipients))
        result = self.script.pop(0) if self.script else {}
        if isinstance(result, BaseException):
            raise result
        message = message_from_bytes(email.data, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.sent.append((message, email.sender, recipients))
        return Transaction(QUEUED, result)

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
        self.subscription: list[str] | str | None = None  # the topics, or the pattern
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.resumed: list[TopicPartition] = []  # every resume, in order

    async def start(self) -> None:
        if not self.answers:
            raise KafkaConnectionError("Unable to bootstrap from kafka:9092")
        self.events.append("start")

    async def stop(self) -> None:
        self.events.append("stop")

    def subscribe(
        self,
        topics: list[str] | None = None,
        pattern: str | None = None,
        listener: RebalanceListener | None = None,
    ) -> None:
        assert (topics is None) != (pattern is None), "topics or a pattern, as aiokafka asks"
        self.subscription = pattern if topics is None else topics
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
        self.resumed.append(partition)
        self.paused_partitions.discard(partition)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        assert partition in self.assigned, "No current assignment for partition"  # as aiokafka's
        self.seeks.append((partition, offset))


HELD = RelayUnavailable("relay.test:25: ConnectionRefusedError: [Errno 111] Connect call failed")


class HoldingMailer(FakeMailer):
    """Cannot reach the relay for every email with 'held' in its subject, until released: the
    email waits in its lane (and holds its partition's commit), as while a relay is away."""

    holding = True

    def release(self) -> None:
        self.holding = False

    async def send(self, email: OutgoingEmail, recipients: list[str]) -> Transaction:
        if self.holding and b"held" in email.data:
            self.attempts += 1
            raise HELD
        return await super().send(email, recipients)


class FakeDeadLetters:
    def __init__(self, failures: Iterable[BaseException] = ()) -> None:
        self.failures = list(failures)
        self.published: list[tuple[ConsumerRecord[bytes, bytes], str, int]] = []
        self.values: list[bytes | None] = []  # what went to the topic: the email.send record

    async def publish(
        self,
        record: ConsumerRecord[bytes, bytes],
        error: str,
        attempts: int,
        original: tuple[bytes, Position] | None = None,
    ) -> RecordMetadata:
        if self.failures:
            raise self.failures.pop(0)
        self.published.append((record, error, attempts))
        self.values.append(record.value if original is None else original[0])
        offset = len(self.published) - 1
        return RecordMetadata(
            "email.send.dlq", 0, TopicPartition("email.send.dlq", 0), offset, -1, 0, -1
        )


class FakeProducer:
    """aiokafka's send: each record queued at once, acknowledged when `acknowledge` is set
    (at once by default), or failed with the next of `failures`; a send itself raises the next
    of `refusals` (a full buffer, a closed producer) and queues nothing."""

    def __init__(
        self, failures: Iterable[BaseException] = (), refusals: Iterable[BaseException] = ()
    ) -> None:
        self.failures = list(failures)
        self.refusals = list(refusals)
        self.acknowledge = asyncio.Event()
        self.acknowledge.set()
        self.sent: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]] = []

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[None]:
        if self.refusals:
            raise self.refusals.pop(0)
        self.sent.append((topic, value, key, list(headers or [])))
        failure = self.failures.pop(0) if self.failures else None
        return asyncio.ensure_future(self._ack(failure))

    async def _ack(self, failure: BaseException | None) -> None:
        await self.acknowledge.wait()
        if failure is not None:
            raise failure

    def events(self) -> list[dict[str, object]]:
        """The events produced, in order, parsed."""
        return [json.loads(value) for topic, value, _, _ in self.sent if topic == "email.events"]

    def retry_records(self) -> list[tuple[str, dict[str, object]]]:
        return [
            (topic, json.loads(value)) for topic, value, _, _ in self.sent if ".retry-" in topic
        ]


class InMemoryDedupeStore:
    """The dedupe store's contract (services/worker/dedupe/contract.py), in a dict."""

    def __init__(self) -> None:
        self.finished: dict[str, Outcome] = {}
        self.rows: dict[str, dict[str, RecipientRow]] = {}
        self.dead_lettered: dict[str, bytes | None] = {}
        self.writes = 0

    async def state_of(self, message_id: str) -> DeliveryState | None:
        if not any(message_id in kept for kept in (self.finished, self.rows, self.dead_lettered)):
            return None
        return DeliveryState(
            self.finished.get(message_id),
            dict(self.rows.get(message_id, {})),
            self.dead_lettered.get(message_id),
        )

    async def record(
        self, message_id: str, rows: Sequence[RecipientRow], stage: int, source: str
    ) -> DeliveryState:
        self.writes += 1
        kept = self.rows.setdefault(message_id, {})
        for row in rows:
            old = kept.get(row.recipient)
            if old is None or (old.state == "deferred" and old.attempt == stage):
                kept[row.recipient] = row
        state = await self.state_of(message_id)
        assert state is not None
        return state

    async def record_dead_lettered(
        self, message_id: str, event: bytes | None, source: str
    ) -> DeliveryState:
        self.dead_lettered.setdefault(message_id, event)
        state = await self.state_of(message_id)
        assert state is not None
        return state


class InMemorySuppressions:
    def __init__(self, suppressed: dict[str, str] | None = None) -> None:
        self.kept = {
            address: Suppression(address, reply, "earlier", datetime(2026, 11, 24, tzinfo=UTC))
            for address, reply in (suppressed or {}).items()
        }

    async def suppressed(self, addresses: Iterable[str]) -> dict[str, Suppression]:
        return {a: self.kept[a.lower()] for a in addresses if a.lower() in self.kept}

    async def suppress(self, address: str, reply: str, message_id: str) -> None:
        self.kept.setdefault(
            address.lower(), Suppression(address.lower(), reply, message_id, datetime.now(UTC))
        )

    async def page(self, after: str | None, limit: int) -> SuppressionPage:
        raise NotImplementedError

    async def lift(self, address: str) -> bool:
        return self.kept.pop(address.lower(), None) is not None

    async def close(self) -> None:
        pass


class FakeOwnedPartitions:
    """What the health app reads of the partitions a worker owns (assignment.Assignment)."""

    def __init__(self) -> None:
        self.partitions: dict[TopicPartition, object] = {}
        self.retry_partitions: dict[TopicPartition, object] = {}
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
    offset: int,
    value: bytes | None,
    partition: int = 0,
    key: bytes | None = None,
    topic: str = "email.send",
    headers: list[tuple[str, bytes]] | None = None,
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=headers or [],
    )


def kafka_record(offset: int, message_id: str, partition: int = 0) -> ConsumerRecord[bytes, bytes]:
    """A record as the API writes it: keyed by its message id."""
    key, value = email_record(message_id).to_kafka()
    return consumer_record(offset, value, partition, key)


# The processor's clock unless a test sets one: five seconds after email_record's created_at,
# so that a deferral never meets the age limit, whatever the day the tests run.
NOW = datetime(2026, 11, 25, 9, 30, 5, tzinfo=UTC)
# The schedule of the tests' retry topics: email.send.retry-1m, then email.send.retry-5m.
RETRY_PLAN = RetryPlan(parse_schedule("1m,5m"), timedelta(hours=24), "email.send")
NO_WAIT = RetryPolicy(initial_seconds=0.001, max_seconds=0.001)


class PublishingProcessor(EmailProcessor):
    """Returns once what the record published is acknowledged, the retry record (produced
    after the events) included, as PartitionWorker waits before it finishes the record."""

    async def process(
        self, record: ConsumerRecord[bytes, bytes], smtp: Mailer, stopping: asyncio.Event
    ) -> RecordOutcome:
        outcome = await super().process(record, smtp, stopping)
        if outcome.published is not None:
            await self.published(record, outcome.published, stopping)
        return outcome


def email_processor(
    store: DedupeStore | None = None,
    *,
    suppressions: InMemorySuppressions | None = None,
    producer: FakeProducer | None = None,
    dead_letters: FakeDeadLetters | None = None,
    retry: RetryPolicy = NO_WAIT,
    faults: ConfigurationFaults | None = None,
    counts: AttemptCounts | None = None,
    store_outage: StoreOutage | None = None,
    plan: RetryPlan = RETRY_PLAN,
    clock: Callable[[], datetime] = lambda: NOW,
    kind: type[EmailProcessor] = EmailProcessor,
    pace: Pace | None = None,
    domain: str = "pipeline.test",
) -> EmailProcessor:
    """A processor whose every edge is a fake: those given, to script or inspect, or new ones."""
    faults = faults or ConfigurationFaults(retry.initial_seconds, retry.max_seconds)
    return kind(
        store=store or InMemoryDedupeStore(),
        suppressions=suppressions or InMemorySuppressions(),
        outbox=Outbox(producer or FakeProducer(), backoff=retry.delay),
        dead_letters=dead_letters or FakeDeadLetters(),
        retry=retry,
        retry_plan=plan,
        events_topic="email.events",
        message_id_domain=domain,
        configuration_faults=faults,
        counts=counts or AttemptCounts(),
        store_outage=store_outage or StoreOutage(),
        pace=pace or SendLimiter(None),
        clock=clock,
    )


def retry_topic_record(
    offset: int,
    email: EmailRecord,
    owed: list[str],
    *,
    attempt: int = 1,
    due_at: datetime | None = None,
    topic: str = "email.send.retry-1m",
    partition: int = 0,
    origin: Position | None = None,
) -> ConsumerRecord[bytes, bytes]:
    """A record of a retry topic, as a worker's deferral writes it: due at `due_at` (by
    default a minute after the email's acceptance), for `owed`, after a 451."""
    due_at = due_at or email.created_at + timedelta(minutes=1)
    key, value, headers = RetryRecord(
        message_id=email.message_id,
        attempt=attempt,
        due_at=due_at,
        deferred_at=due_at - timedelta(minutes=1),
        owed=owed,
        last_reply=Reply.of(451, "4.7.1 greylisted"),
        origin=origin or Position(topic="email.send", partition=partition, offset=0),
        email=email,
    ).to_kafka()
    return consumer_record(offset, value, partition, key, topic, headers)


def message_id_of(email: OutgoingEmail) -> str:
    """The record's message id, from the Message-ID header `<id@domain>` the worker wrote."""
    return email.message_id.strip("<>").rpartition("@")[0]
