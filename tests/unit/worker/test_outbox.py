"""The worker's edge toward email.events and the retry topics: messages handed to the producer
at once, their acknowledgements awaited apart, and produced again, the same bytes, while Kafka
does not acknowledge them; a stop ends the wait."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.errors import KafkaTimeoutError, NotEnoughReplicasError

from services.worker.outbox import Message, Outbox
from services.worker.retry import Stopped
from shared.events import ProducerRecord
from tests.unit.worker.fakes import FakeProducer

MESSAGES = [
    Message("email.send.retry-1m", ProducerRecord(b"m-1", b'{"attempt":1}', [("due_at", b"x")])),
    Message("email.events", ProducerRecord(b"m-1", b'{"type":"sent"}', [("type", b"sent")])),
]
SENT = [
    ("email.send.retry-1m", b'{"attempt":1}', b"m-1", [("due_at", b"x")]),
    ("email.events", b'{"type":"sent"}', b"m-1", [("type", b"sent")]),
]


async def test_messages_are_handed_to_the_producer_without_waiting_for_kafka() -> None:
    producer = FakeProducer()
    producer.acknowledge.clear()
    outbox = Outbox(producer, backoff=lambda attempt: 0.001)

    acks = await asyncio.wait_for(outbox.enqueue(MESSAGES), timeout=1)

    assert producer.sent == SENT, "in order, with their keys and headers"
    await asyncio.sleep(0.01)
    waiting = asyncio.ensure_future(acks)
    assert not waiting.done()
    producer.acknowledge.set()
    await asyncio.wait_for(waiting, timeout=1)


async def test_acknowledged_returns_once_kafka_has_acknowledged_every_message() -> None:
    producer = FakeProducer()
    producer.acknowledge.clear()
    outbox = Outbox(producer, backoff=lambda attempt: 0.001)
    acks = await outbox.enqueue(MESSAGES)
    acknowledged = asyncio.create_task(
        outbox.acknowledged(MESSAGES, acks, "email.send-0 offset 3", asyncio.Event())
    )
    await asyncio.sleep(0.01)
    assert not acknowledged.done()

    producer.acknowledge.set()

    await asyncio.wait_for(acknowledged, timeout=1)
    assert producer.sent == SENT, "produced once"


async def test_messages_kafka_did_not_acknowledge_are_produced_again_the_same(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = FakeProducer(failures=[NotEnoughReplicasError(), KafkaTimeoutError()])
    outbox = Outbox(producer, backoff=lambda attempt: 0.001)
    acks = await outbox.enqueue(MESSAGES)

    with caplog.at_level(logging.WARNING, logger="worker"):
        await asyncio.wait_for(
            outbox.acknowledged(MESSAGES, acks, "email.send-0 offset 3", asyncio.Event()), 1
        )

    assert producer.sent == SENT + SENT, "every message again, the same bytes"
    assert caplog.messages[0].startswith(
        "email.send-0 offset 3: Kafka did not acknowledge 2 event(s)"
    )
    assert len(caplog.messages) == 1


async def test_a_stop_while_waiting_to_produce_again_raises_stopped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = FakeProducer(failures=[KafkaTimeoutError()] * 10)
    outbox = Outbox(producer, backoff=lambda attempt: 60.0)
    stopping = asyncio.Event()
    acks = await outbox.enqueue(MESSAGES)
    acknowledged = asyncio.create_task(
        outbox.acknowledged(MESSAGES, acks, "email.send-0 offset 3", stopping)
    )
    await asyncio.sleep(0.02)

    with caplog.at_level(logging.INFO, logger="worker"):
        stopping.set()
        with pytest.raises(Stopped):
            await asyncio.wait_for(acknowledged, timeout=1)

    assert producer.sent == SENT, "not produced again after the stop"
    assert "email.send-0 offset 3: stopped before its events were acknowledged" in caplog.text


async def test_a_try_that_published_nothing_is_acknowledged_at_once() -> None:
    outbox = Outbox(FakeProducer(), backoff=lambda attempt: 0.001)

    acks = await outbox.enqueue([])

    await asyncio.wait_for(outbox.acknowledged([], acks, "here", asyncio.Event()), 1)
