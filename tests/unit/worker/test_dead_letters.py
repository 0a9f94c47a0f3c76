"""A dead letter is the original record, unchanged, with headers saying where and why."""

from __future__ import annotations

from typing import Any

from services.worker.dead_letters import DeadLetters
from tests.unit.worker.fakes import kafka_record


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_and_wait(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": headers})


async def test_a_dead_letter_keeps_the_record_and_says_where_and_why() -> None:
    producer = FakeProducer()
    record = kafka_record(41, "m-1", partition=2)
    record.headers = [("schema_version", b"1")]
    record.key = b"m-1"

    dead_letters = DeadLetters(producer, "email.send.dlq")
    await dead_letters.publish(record, "550 no such user", attempts=3)

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
