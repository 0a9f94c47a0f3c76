"""The worker's edge toward the dead-letter topic: a record that cannot be delivered is copied
there unchanged, with headers saying where it came from and why it failed."""

from __future__ import annotations

from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, RecordMetadata

from shared.events import Located, Position

MAX_ERROR_BYTES = 2000


class DeadLetters:
    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def publish(
        self,
        record: ConsumerRecord[bytes, bytes],
        error: str,
        attempts: int,
        original: tuple[bytes, Position] | None = None,
    ) -> RecordMetadata:
        """Returns where the dead letter went once Kafka acknowledged it (acks=all); raises if
        it did not. `original`: the email.send record's value and place, when `record` is a
        retry topic's (a dead letter is always an email.send record, to be sent again as is)."""
        value, headers = record.value, list(record.headers)
        source: Located = record
        if original is not None:
            value, source = original
            headers = []  # a retry record's headers describe the retry, not the email
        headers += [
            ("dlq.original.topic", source.topic.encode()),
            ("dlq.original.partition", str(source.partition).encode()),
            ("dlq.original.offset", str(source.offset).encode()),
            ("dlq.error", error.encode()[:MAX_ERROR_BYTES]),
            ("dlq.attempts", str(attempts).encode()),
            ("dlq.failed.at", datetime.now(UTC).isoformat().encode()),
        ]
        metadata: RecordMetadata = await self._producer.send_and_wait(
            self._topic, value, key=record.key, headers=headers
        )
        return metadata
