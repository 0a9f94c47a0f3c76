"""The API's edge toward Kafka: produce one email record and wait for Kafka's acknowledgement.

Kafka may be down when the API starts or go away later; the API stays up, answers 503 while
Kafka cannot acknowledge, and connects by itself when Kafka is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.api import metrics
from shared.kafka import start_when_kafka_answers
from shared.schema import SCHEMA_VERSION, EmailRecord
from shared.settings import Settings

log = logging.getLogger("api.kafka")


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge the record in time. It may still be in the log: the producer
    may have sent it and lost only the answer, or send it later from its buffer."""


@dataclass(frozen=True)
class Queued:
    topic: str
    partition: int
    offset: int


class EmailQueue:
    def __init__(self, settings: Settings, new_producer: Callable[[], AIOKafkaProducer]) -> None:
        self._settings = settings
        self._topic = settings.email_topic
        self._timeout_seconds = settings.api_produce_timeout_seconds
        self._new_producer = new_producer  # aiokafka clients are made inside the event loop
        self._producer: AIOKafkaProducer | None = None
        self._connected = False
        self._stopping = asyncio.Event()
        self._connecting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._producer = self._new_producer()
        self._connecting = asyncio.create_task(self._connect(self._producer))

    async def stop(self) -> None:
        self._stopping.set()
        if self._connecting is not None:
            await self._connecting
        if self._producer is not None:
            await self._stop_producer(self._producer)  # sends what is still buffered first

    async def _connect(self, producer: AIOKafkaProducer) -> None:
        bootstrap = self._settings.kafka_bootstrap_servers
        if await start_when_kafka_answers(producer, bootstrap, self._stopping):
            log.info("connected to Kafka at %s", bootstrap)
            self._connected = True

    def _replace(self, stuck: AIOKafkaProducer) -> None:
        """After a broker restart, aiokafka's idempotent producer can stay stuck: every send
        times out although Kafka is back. A fresh producer (with a new producer id) is not."""
        if self._producer is not stuck or self._stopping.is_set():
            return  # another request already replaced it
        log.warning("Kafka did not acknowledge in time; replacing the producer")
        self._connected = False
        self._producer = self._new_producer()
        self._connecting = asyncio.create_task(self._reconnect(stuck, self._producer))

    async def _reconnect(self, stuck: AIOKafkaProducer, fresh: AIOKafkaProducer) -> None:
        # Side by side: the stuck producer may take the whole timeout to stop, and the API
        # answers 503 until the fresh one is connected.
        await asyncio.gather(self._stop_producer(stuck), self._connect(fresh))

    async def _stop_producer(self, producer: AIOKafkaProducer) -> None:
        try:
            async with asyncio.timeout(self._timeout_seconds):
                await producer.stop()
        except (TimeoutError, KafkaError) as error:
            log.warning(
                "a producer did not stop cleanly (%r); its unsent records were answered 503", error
            )

    async def enqueue(self, record: EmailRecord) -> Queued:
        if self._producer is None or not self._connected:
            raise KafkaUnavailable(
                f"not connected to Kafka at {self._settings.kafka_bootstrap_servers} yet"
            )
        producer = self._producer
        key, value = record.to_kafka()
        headers = [("schema_version", str(SCHEMA_VERSION).encode())]
        try:
            async with asyncio.timeout(self._timeout_seconds):
                with metrics.PRODUCE_DURATION.time():
                    metadata = await producer.send_and_wait(
                        self._topic, value, key=key, headers=headers
                    )
        except TimeoutError:
            self._replace(producer)
            raise KafkaUnavailable(
                f"Kafka did not acknowledge within {self._timeout_seconds:g} s"
            ) from None
        except KafkaError as error:
            raise KafkaUnavailable(f"Kafka refused the record: {error}") from None
        log.info(
            "queued %s as %s-%d offset %d (to %s)",
            record.message_id, metadata.topic, metadata.partition, metadata.offset,
            ", ".join(record.recipients),
        )  # fmt: skip
        return Queued(metadata.topic, metadata.partition, metadata.offset)

    async def not_ready_reason(self) -> str | None:
        """None when Kafka answers and the topic exists; otherwise what is wrong."""
        if self._producer is None or not self._connected:
            return f"not connected to Kafka at {self._settings.kafka_bootstrap_servers}"
        try:
            async with asyncio.timeout(2):
                cluster = await self._producer.client.fetch_all_metadata()
        except (TimeoutError, KafkaError) as error:
            return f"Kafka does not answer: {error or type(error).__name__}"
        if self._topic not in cluster.topics():
            return f"topic {self._topic} does not exist (run make topics)"
        return None
