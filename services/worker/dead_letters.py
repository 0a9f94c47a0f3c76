"""The worker's edge toward the dead-letter topic: a record that cannot be delivered is copied
there unchanged, with headers saying where it came from and why it failed."""

from __future__ import annotations

from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

MAX_ERROR_BYTES = 2000


class DeadLetters:
    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def publish(
        self, record: ConsumerRecord[bytes, bytes], error: str, attempts: int
    ) -> None:
        """Returns once Kafka acknowledged the dead letter (acks=all); raises if it did not."""
        headers = [
            *record.headers,
            ("dlq.original.topic", record.topic.encode()),
            ("dlq.original.partition", str(record.partition).encode()),
            ("dlq.original.offset", str(record.offset).encode()),
            ("dlq.error", error.encode()[:MAX_ERROR_BYTES]),
            ("dlq.attempts", str(attempts).encode()),
            ("dlq.failed.at", datetime.now(UTC).isoformat().encode()),
        ]
        await self._producer.send_and_wait(
            self._topic, record.value, key=record.key, headers=headers
        )
