"""A dead letter is the email.send record, unchanged, with headers saying where it came from and
why it failed: the record itself, or for a retry topic's record the email.send record inside."""

from __future__ import annotations

from typing import Any

from aiokafka.structs import RecordMetadata, TopicPartition

from services.worker.dead_letters import DeadLetters
from shared.events import Position
from tests.unit.worker.fakes import email_record, kafka_record, retry_topic_record


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_and_wait(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> RecordMetadata:
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": headers})
        return RecordMetadata(topic, 1, TopicPartition(topic, 1), 17, -1, 0, -1)


async def test_a_dead_letter_keeps_the_record_and_says_where_and_why() -> None:
    producer = FakeProducer()
    record = kafka_record(41, "m-1", partition=2)
    record.headers = [("schema_version", b"1")]
    record.key = b"m-1"

    dead_letters = DeadLetters(producer, "email.send.dlq")
    metadata = await dead_letters.publish(record, "550 no such user", attempts=3)

    [sent] = producer.sent
    assert (sent["topic"], sent["key"], sent["value"]) == ("email.send.dlq", b"m-1", record.value)
    headers = dict(sent["headers"])
    assert headers["schema_version"] == b"1"
    assert headers["dlq.original.topic"] == b"email.send"
    assert headers["dlq.original.partition"] == b"2"
    assert headers["dlq.original.offset"] == b"41"
    assert headers["dlq.error"] == b"550 no such user"
    assert headers["dlq.attempts"] == b"3"
    assert b"T" in headers["dlq.failed.at"]
    assert (metadata.topic, metadata.partition, metadata.offset) == ("email.send.dlq", 1, 17)


async def test_a_retry_records_dead_letter_is_its_email_send_record_from_where_it_came() -> None:
    producer = FakeProducer()
    email = email_record("m-1")
    origin = Position(topic="email.send", partition=2, offset=41)
    record = retry_topic_record(9, email, ["ana@example.com"], partition=2, origin=origin)

    await DeadLetters(producer, "email.send.dlq").publish(
        record, "expired: ana@example.com (451 4.7.1 greylisted)", 1, (email.to_kafka()[1], origin)
    )

    [sent] = producer.sent
    assert (sent["key"], sent["value"]) == (b"m-1", email.to_kafka()[1])
    headers = dict(sent["headers"])
    assert "due_at" not in headers, "the retry record's headers stay behind"
    assert headers["dlq.original.topic"] == b"email.send"
    assert headers["dlq.original.partition"] == b"2"
    assert headers["dlq.original.offset"] == b"41"
    assert headers["dlq.error"].startswith(b"expired: ")
