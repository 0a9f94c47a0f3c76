"""EmailQueue with a fake producer and fake topic settings: records larger than the topic takes
are 413 before anything is sent, a body limit that does not fit is one ERROR and not ready, a
refusal that breaks the producer replaces it, and no log line names a recipient."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from aiokafka.errors import (
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    UnknownTopicOrPartitionError,
)

from services.api.email_queue import EmailQueue, EmailTooLarge, KafkaUnavailable, Queued
from shared.events import ProducerRecord, accepted_event
from shared.schema import EmailRecord
from shared.settings import Settings
from tests.unit.api.fakes import app_with_fakes
from tests.unit.api.key_store import MemoryKeyStore
from tests.unit.api.producers import Producers
from tests.unit.api.test_app import email

BCC = ["hidden-one@example.com", "Hidden Two <hidden-two@example.com>"]


class AcknowledgingProducer:
    """Acknowledges each record at the next offset of partition 0, or raises what it is told."""

    def __init__(self, refusals: list[Exception] | None = None) -> None:
        self.sent: list[bytes] = []
        self.refusals = refusals or []
        self.stopped = False
        self.client = SimpleNamespace(fetch_all_metadata=self._metadata)

    async def start(self) -> None: ...

    async def stop(self) -> None:
        self.stopped = True

    async def send_and_wait(self, topic: str, value: bytes, **kwargs: object) -> object:
        if self.refusals:
            raise self.refusals.pop(0)
        self.sent.append(value)
        return SimpleNamespace(topic=topic, partition=0, offset=len(self.sent) - 1)

    async def _metadata(self) -> object:
        return SimpleNamespace(topics=lambda: {"email.send"})


TopicConfigs = Callable[[str, str], Awaitable[dict[str, str]]]


def topic_taking(max_message_bytes: int | Exception) -> tuple[TopicConfigs, list[int]]:
    """A topic settings reader whose max.message.bytes can change, and the list that holds it."""
    current: list[int] = []
    if isinstance(max_message_bytes, int):
        current.append(max_message_bytes)

    async def read(bootstrap_servers: str, topic: str) -> dict[str, str]:
        if isinstance(max_message_bytes, Exception):
            raise max_message_bytes
        return {"max.message.bytes": str(current[-1])}

    return read, current


async def started(queue: EmailQueue) -> EmailQueue:
    await queue.start()
    await asyncio.sleep(0.01)  # the fake producer and topic answer at once
    return queue


def record(**fields: Any) -> EmailRecord:
    return EmailRecord.model_validate(
        {**email(**fields), "message_id": "m-1", "created_at": "2026-11-25T09:30:00Z"}
    )


@pytest.fixture
def producer() -> AcknowledgingProducer:
    return AcknowledgingProducer()


async def test_a_record_over_the_topics_limit_is_refused_before_it_is_sent(
    producer: AcknowledgingProducer,
) -> None:
    settings = Settings(_env_file=None, api_max_body_bytes=1024)
    read, _ = topic_taking(4096)
    queue = await started(EmailQueue(settings, lambda: producer, read))

    with pytest.raises(EmailTooLarge) as refused:
        await queue.enqueue(record(text="x" * 5000))
    await queue.enqueue(record(text="x" * 3000))
    await queue.stop()

    assert "topic email.send takes records of at most 4096 bytes" in str(refused.value)
    assert "(its max.message.bytes)" in str(refused.value)
    assert len(producer.sent) == 1, "only the email that fits reached the producer"


async def test_too_large_for_the_topic_is_413_counted_as_too_large(
    producer: AcknowledgingProducer,
) -> None:
    settings = Settings(_env_file=None, api_max_body_bytes=64 * 1024)
    read, _ = topic_taking(16 * 1024)
    queue = EmailQueue(settings, lambda: producer, read)
    app = app_with_fakes(settings, queue, MemoryKeyStore())
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api") as client,
    ):
        await asyncio.sleep(0.01)  # the lifespan started the queue
        response = await client.post("/emails", json=email(text="x" * 20_000))
        metrics = (await client.get("/metrics")).text

    assert response.status_code == 413
    assert "too large for the Kafka topic email.send" in response.json()["detail"]
    assert "16384 bytes (its max.message.bytes)" in response.json()["detail"]
    assert 'email_api_emails_refused_total{reason="too_large"}' in metrics
    assert producer.sent == []


async def test_a_body_limit_the_topic_cannot_take_is_one_error_and_not_ready_until_fixed(
    producer: AcknowledgingProducer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(_env_file=None, api_max_body_bytes=512 * 1024)
    read, max_message_bytes = topic_taking(64 * 1024)
    with caplog.at_level(logging.INFO, logger="api.kafka"):
        queue = await started(EmailQueue(settings, lambda: producer, read))
        reasons = [await queue.not_ready_reason() for _ in range(3)]
        max_message_bytes.append(1024 * 1024)  # kafka-configs.sh --alter raised it
        fixed = await queue.not_ready_reason()
        await queue.stop()

    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    [error] = errors
    assert reasons == [error] * 3
    assert "API_MAX_BODY_BYTES=524288 does not fit in a Kafka record" in error
    assert "topic email.send takes records of at most 65536 bytes (its max.message.bytes)" in error
    assert "lower API_MAX_BODY_BYTES to 64512" in error
    assert "raise the topic's max.message.bytes to 525312" in error
    assert fixed is None


async def test_a_limit_that_cannot_be_read_leaves_the_api_ready(
    producer: AcknowledgingProducer, caplog: pytest.LogCaptureFixture
) -> None:
    read, _ = topic_taking(TimeoutError())
    with caplog.at_level(logging.WARNING, logger="api.kafka"):
        queue = await started(EmailQueue(Settings(_env_file=None), lambda: producer, read))
        reason = await queue.not_ready_reason()
        queued = await queue.enqueue(record())
        await queue.stop()

    assert reason is None
    assert queued.offset == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "one warning, not one per /readyz"
    assert "cannot read max.message.bytes of topic email.send" in warnings[0]


async def test_a_missing_topic_is_read_again_once_it_exists(
    producer: AcknowledgingProducer,
) -> None:
    settings = Settings(_env_file=None, api_max_body_bytes=512 * 1024)
    answers: list[Exception | int] = [UnknownTopicOrPartitionError(), 64 * 1024]

    async def read(bootstrap_servers: str, topic: str) -> dict[str, str]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return {"max.message.bytes": str(answer)}

    queue = await started(EmailQueue(settings, lambda: producer, read))
    reason = await queue.not_ready_reason()
    await queue.stop()

    assert reason is not None
    assert "API_MAX_BODY_BYTES=524288 does not fit" in reason


@pytest.mark.parametrize(
    ("refusal", "answer"),
    [
        (MessageSizeTooLargeError(), EmailTooLarge),
        (OutOfOrderSequenceNumber(), KafkaUnavailable),
    ],
    ids=["message_size_too_large", "out_of_order_sequence_number"],
)
async def test_a_refusal_that_breaks_the_idempotent_producer_replaces_it(
    refusal: Exception, answer: type[Exception]
) -> None:
    """aiokafka's idempotent producer answers OutOfOrderSequenceNumber to every send after the
    broker refused a batch as too large (tests/integration/api shows it on a real broker)."""
    producers = Producers(lambda number: AcknowledgingProducer([refusal] if number == 1 else []))
    read, _ = topic_taking(1024 * 1024)
    queue = await started(EmailQueue(Settings(_env_file=None), producers, read))

    with pytest.raises(answer):
        await queue.enqueue(record())
    await asyncio.sleep(0.05)  # the fresh producer connects
    queued = await queue.enqueue(record())
    await queue.stop()

    broken, fresh = producers.made
    assert broken.stopped
    assert fresh.sent
    assert queued.offset == 0


async def test_no_log_line_names_a_recipient(
    producer: AcknowledgingProducer, caplog: pytest.LogCaptureFixture
) -> None:
    read, _ = topic_taking(1024 * 1024)
    with caplog.at_level(logging.DEBUG):
        queue = await started(EmailQueue(Settings(_env_file=None), lambda: producer, read))
        await queue.enqueue(record(to=["ana@example.com"], cc=["bob@example.com"], bcc=BCC))
        await queue.stop()

    lines = [r.getMessage() for r in caplog.records]
    [queued] = [line for line in lines if line.startswith("queued")]
    assert queued.endswith("for 4 recipient(s): 1 to, 1 cc, 2 bcc")
    for address in ["hidden-one", "hidden-two", "Hidden Two", "ana@", "bob@"]:
        assert not any(address in line for line in lines), address


class HoldingProducer(AcknowledgingProducer):
    """Acknowledges each record of `held_topic` only once `release` is set."""

    def __init__(self, held_topic: str) -> None:
        super().__init__()
        self.held_topic = held_topic
        self.release = asyncio.Event()
        self.topics: list[str] = []

    async def send_and_wait(self, topic: str, value: bytes, **kwargs: object) -> object:
        self.topics.append(topic)
        if topic == self.held_topic:
            await self.release.wait()
        return await super().send_and_wait(topic, value, **kwargs)


def accepted_event_of(email_record: EmailRecord) -> ProducerRecord:
    return accepted_event(email_record, Queued("email.send", 0, 0)).to_kafka()


async def test_an_event_is_produced_to_the_events_topic_without_waiting_for_kafka() -> None:
    producer = HoldingProducer("email.events")
    queue = await started(
        EmailQueue(Settings(_env_file=None), lambda: producer, topic_taking(4096)[0])
    )

    queue.publish_event(accepted_event_of(record()))  # returns at once: nothing is awaited
    await asyncio.sleep(0.01)
    assert producer.topics == ["email.events"]
    assert producer.sent == [], "not acknowledged yet"
    stopping = asyncio.create_task(queue.stop())
    await asyncio.sleep(0.01)
    assert not stopping.done(), "a stop waits for the events in flight"
    producer.release.set()
    await stopping

    assert producer.sent == [accepted_event_of(record()).value]
    assert producer.stopped


async def test_an_event_kafka_refuses_is_one_warning_not_one_per_email(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusals: list[Exception] = [UnknownTopicOrPartitionError() for _ in range(3)]
    producer = AcknowledgingProducer(refusals)
    queue = await started(
        EmailQueue(Settings(_env_file=None), lambda: producer, topic_taking(4096)[0])
    )

    with caplog.at_level(logging.INFO, logger="api.kafka"):
        for _ in range(4):
            queue.publish_event(accepted_event_of(record()))
            await asyncio.sleep(0.01)
    await queue.stop()

    lines = [r.getMessage() for r in caplog.records if "email.events" in r.getMessage()]
    assert len(lines) == 2
    assert lines[0].startswith("could not produce an event to email.events (Kafka refused it:")
    assert "the worker publishes the same event when it reads the email" in lines[0]
    assert lines[1] == "producing events to email.events again"
    assert len(producer.sent) == 1
