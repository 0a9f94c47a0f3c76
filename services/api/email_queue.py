"""The API's edge toward Kafka: produce one email record and wait for Kafka's acknowledgement;
produce its `accepted` event without waiting.

Kafka may be down when the API starts or go away later; the API stays up, answers 503 while
Kafka cannot acknowledge, and connects by itself when Kafka is back. A record larger than the
topic takes is refused before it is sent (413): Kafka would refuse it, and that would also
break the producer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    UnknownTopicOrPartitionError,
)

from services.api import metrics
from shared.events import ProducerRecord
from shared.kafka import start_when_kafka_answers
from shared.schema import SCHEMA_VERSION, EmailRecord
from shared.settings import Settings

log = logging.getLogger("api.kafka")

# (bootstrap servers, topic) -> the topic's settings as the broker applies them:
# shared.kafka.topic_configs.
TopicConfigsReader = Callable[[str, str], Awaitable[Mapping[str, str]]]

# aiokafka's default max_request_size, which shared.kafka.create_producer keeps: the producer
# itself refuses a larger record. tests/unit/api/test_record_size.py fails if aiokafka changes it.
PRODUCER_MAX_REQUEST_BYTES: Final = 1_048_576

# How much larger a record is than the HTTP body it came from, at most. The record adds the
# envelope (message_id, created_at, schema_version), spells out the fields a body may leave
# out (to, cc, bcc, reply_to, headers, tags: `[]` and `{}`), and comes with its key, the
# schema_version header and Kafka's framing: 326 bytes for the smallest body, which
# tests/unit/api/test_record_size.py measures. The body's own fields never grow: the API writes
# JSON without spaces, and what a client escaped (\u00e9) it writes as UTF-8, never longer. A
# kilobyte leaves room for an envelope field to come.
ENVELOPE_MARGIN_BYTES: Final = 1024

# Kafka's record format v2, which the broker's size check counts: a 61-byte batch header, then
# per record its length, attributes, timestamp and offset deltas, key and value lengths and
# header count (varints: at most 5 bytes each, 10 for the timestamp's), and per header two
# lengths.
BATCH_HEADER_BYTES: Final = 61
RECORD_FRAMING_BYTES: Final = 5 + 1 + 10 + 5 + 5 + 5 + 5
HEADER_FRAMING_BYTES: Final = 5 + 5


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge the record in time. It may still be in the log: the producer
    may have sent it and lost only the answer, or send it later from its buffer."""


class EmailTooLarge(Exception):
    """The email's record is larger than the topic or the producer takes. It is not in the
    log, and sending it again cannot help."""


@dataclass(frozen=True)
class Queued:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class RecordLimit:
    """The largest record that can reach the topic, and the two settings that make it."""

    topic: str
    # The topic's max.message.bytes as the broker applies it; None until it is read.
    topic_max_message_bytes: int | None
    producer_max_request_bytes: int = PRODUCER_MAX_REQUEST_BYTES

    @property
    def max_record_bytes(self) -> int:
        if self.topic_max_message_bytes is None:
            return self.producer_max_request_bytes
        return min(self.topic_max_message_bytes, self.producer_max_request_bytes)

    def __str__(self) -> str:
        if self.max_record_bytes == self.topic_max_message_bytes:
            return (
                f"topic {self.topic} takes records of at most {self.topic_max_message_bytes} "
                "bytes (its max.message.bytes)"
            )
        return (
            f"the API's Kafka producer sends records of at most "
            f"{self.producer_max_request_bytes} bytes (its max_request_size)"
        )


def record_size_bytes(key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]) -> int:
    """At most the size of a batch of this one record: what the broker compares with the
    topic's max.message.bytes, and aiokafka with its max_request_size."""
    header_bytes = sum(
        HEADER_FRAMING_BYTES + len(name.encode()) + len(data) for name, data in headers
    )
    return BATCH_HEADER_BYTES + RECORD_FRAMING_BYTES + len(key) + len(value) + header_bytes


def too_large(record_bytes: int, limit: RecordLimit) -> str:
    return (
        f"the email is too large for the Kafka topic {limit.topic}: its record is "
        f"{record_bytes} bytes, and {limit}. Send a smaller email"
    )


def body_limit_problem(max_body_bytes: int, limit: RecordLimit) -> str | None:
    """Why a body of API_MAX_BODY_BYTES may be accepted over HTTP and still not fit in a
    record, with the fix; None when every body the API takes fits."""
    needed_bytes = max_body_bytes + ENVELOPE_MARGIN_BYTES
    if needed_bytes <= limit.max_record_bytes:
        return None
    fixes = [f"lower API_MAX_BODY_BYTES to {limit.max_record_bytes - ENVELOPE_MARGIN_BYTES}"]
    if needed_bytes <= limit.producer_max_request_bytes:
        fixes.append(
            f"raise the topic's max.message.bytes to {needed_bytes} (kafka-configs.sh "
            f"--alter --entity-type topics --entity-name {limit.topic} "
            f"--add-config max.message.bytes={needed_bytes})"
        )
    return (
        f"API_MAX_BODY_BYTES={max_body_bytes} does not fit in a Kafka record: {limit}, and a "
        f"record is up to {ENVELOPE_MARGIN_BYTES} bytes larger than its body. Emails larger "
        f"than the topic takes are answered 413. To take every body the API accepts, "
        f"{' or '.join(fixes)}"
    )


class EmailQueue:
    def __init__(
        self,
        settings: Settings,
        new_producer: Callable[[], AIOKafkaProducer],
        read_topic_configs: TopicConfigsReader,
    ) -> None:
        self._settings = settings
        self._topic = settings.email_topic
        self._timeout_seconds = settings.api_produce_timeout_seconds
        self._new_producer = new_producer  # aiokafka clients are made inside the event loop
        self._read_topic_configs = read_topic_configs
        self._producer: AIOKafkaProducer | None = None
        self._connected = False
        self._stopping = asyncio.Event()
        self._connecting: asyncio.Task[None] | None = None
        self._record_limit = RecordLimit(self._topic, topic_max_message_bytes=None)
        self._body_limit_problem: str | None = None
        self._limit_read_error: str | None = None
        self._events_topic = settings.events_topic
        self._publishing: set[asyncio.Task[None]] = set()  # events not yet acknowledged
        self._publish_error: str | None = None

    async def start(self) -> None:
        self._producer = self._new_producer()
        self._connecting = asyncio.create_task(self._connect(self._producer))

    async def stop(self) -> None:
        self._stopping.set()
        if self._connecting is not None:
            await self._connecting
        if self._publishing:
            await asyncio.gather(*self._publishing)
        if self._producer is not None:
            await self._stop_producer(self._producer)  # sends what is still buffered first

    async def _connect(self, producer: AIOKafkaProducer) -> None:
        bootstrap = self._settings.kafka_bootstrap_servers
        if await start_when_kafka_answers(producer, bootstrap, self._stopping):
            log.info("connected to Kafka at %s", bootstrap)
            # Before the first send: a record the topic cannot take must not reach the broker.
            await self._read_record_limit()
            self._connected = True

    async def _read_record_limit(self) -> None:
        """Read the topic's max.message.bytes, and check that API_MAX_BODY_BYTES fits in it.

        A body limit that does not fit is one ERROR line and a reason for /readyz, not a reason
        to refuse to start: the check needs Kafka, which may come up long after the API; most
        emails are far below both limits and still go through (a larger one gets 413); and
        raising the topic's limit needs no restart: /readyz reads it again until it fits.
        """
        try:
            async with asyncio.timeout(self._timeout_seconds):
                configs = await self._read_topic_configs(
                    self._settings.kafka_bootstrap_servers, self._topic
                )
            limit = RecordLimit(self._topic, int(configs["max.message.bytes"]))
        except UnknownTopicOrPartitionError:
            return  # /readyz says the topic is missing, and reads the limit once it is there
        except (TimeoutError, KafkaError, KeyError, ValueError) as error:
            reason = f"{type(error).__name__}: {error}"
            if reason != self._limit_read_error:
                log.warning(
                    "cannot read max.message.bytes of topic %s (%s): a record too large for "
                    "the topic is answered 413 only once Kafka refuses it",
                    self._topic, reason,
                )  # fmt: skip
            self._limit_read_error = reason
            return
        problem = body_limit_problem(self._settings.api_max_body_bytes, limit)
        if problem is not None and problem != self._body_limit_problem:
            log.error("%s", problem)
        elif problem is None and self._body_limit_problem is not None:
            log.info("API_MAX_BODY_BYTES fits in a Kafka record now: %s", limit)
        self._record_limit, self._body_limit_problem = limit, problem
        self._limit_read_error = None

    def _replace(self, broken: AIOKafkaProducer, why: str) -> None:
        """After a broker restart, aiokafka's idempotent producer can stay stuck: every send
        times out although Kafka is back; after some refusals every send fails. A fresh
        producer (with a new producer id) is not stuck."""
        if self._producer is not broken or self._stopping.is_set():
            return  # another request already replaced it
        log.warning("%s; replacing the producer", why)
        self._connected = False
        self._producer = self._new_producer()
        self._connecting = asyncio.create_task(self._reconnect(broken, self._producer))

    async def _reconnect(self, broken: AIOKafkaProducer, fresh: AIOKafkaProducer) -> None:
        # Side by side: the broken producer may take the whole timeout to stop, and the API
        # answers 503 until the fresh one is connected.
        await asyncio.gather(self._stop_producer(broken), self._connect(fresh))

    async def _stop_producer(self, producer: AIOKafkaProducer) -> None:
        try:
            async with asyncio.timeout(self._timeout_seconds):
                await producer.stop()
        except (TimeoutError, KafkaError) as error:
            log.warning(
                "a producer did not stop cleanly (%r); its unsent records were answered 503", error
            )

    def kafka_record(self, record: EmailRecord) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        """The record's key, value and headers; EmailTooLarge if the topic cannot take it."""
        key, value = record.to_kafka()
        headers = [("schema_version", str(SCHEMA_VERSION).encode())]
        record_bytes = record_size_bytes(key, value, headers)
        if record_bytes > self._record_limit.max_record_bytes:
            raise EmailTooLarge(too_large(record_bytes, self._record_limit))
        return key, value, headers

    async def enqueue(self, record: EmailRecord) -> Queued:
        key, value, headers = self.kafka_record(record)
        record_bytes = record_size_bytes(key, value, headers)
        if self._producer is None or not self._connected:
            raise KafkaUnavailable(
                f"not connected to Kafka at {self._settings.kafka_bootstrap_servers} yet"
            )
        producer = self._producer
        try:
            async with asyncio.timeout(self._timeout_seconds):
                with metrics.PRODUCE_DURATION.time():
                    metadata = await producer.send_and_wait(
                        self._topic, value, key=key, headers=headers
                    )
        except TimeoutError:
            self._replace(producer, "Kafka did not acknowledge in time")
            raise KafkaUnavailable(
                f"Kafka did not acknowledge within {self._timeout_seconds:g} s"
            ) from None
        except MessageSizeTooLargeError:
            # The broker's answer (the producer's own check never sees a record this large):
            # the topic's limit was lowered after it was read. Read it again as the fresh
            # producer connects.
            self._replace(producer, f"Kafka refused a {record_bytes}-byte record as too large")
            self._record_limit = RecordLimit(self._topic, topic_max_message_bytes=None)
            raise EmailTooLarge(
                f"the email is too large for the Kafka topic {self._topic}: Kafka refused its "
                f"{record_bytes}-byte record as larger than the topic's max.message.bytes. "
                "Send a smaller email"
            ) from None
        except KafkaError as error:
            if isinstance(error, OutOfOrderSequenceNumber):
                self._replace(producer, "Kafka answered OutOfOrderSequenceNumber")
            raise KafkaUnavailable(f"Kafka refused the record: {error!r}") from None
        # Counts, not addresses: a Bcc address must never reach a log, and the message id is
        # what finds the email (the worker logs it too).
        log.info(
            "queued %s as %s-%d offset %d for %d recipient(s): %d to, %d cc, %d bcc",
            record.message_id, metadata.topic, metadata.partition, metadata.offset,
            len(record.recipients), len(record.to), len(record.cc), len(record.bcc),
        )  # fmt: skip
        return Queued(metadata.topic, metadata.partition, metadata.offset)

    def publish_event(self, event: ProducerRecord) -> None:
        """Produce an event to the events topic, not waiting for Kafka's acknowledgement: the
        202 is not held up by it, and if it is lost, the worker publishes the same event with
        the same id when it first reads the email."""
        if self._producer is None or not self._connected:
            self._published(f"not connected to Kafka at {self._settings.kafka_bootstrap_servers}")
            return
        publishing = asyncio.create_task(self._publish(self._producer, event))
        self._publishing.add(publishing)
        publishing.add_done_callback(self._publishing.discard)

    async def _publish(self, producer: AIOKafkaProducer, event: ProducerRecord) -> None:
        try:
            async with asyncio.timeout(self._timeout_seconds):
                await producer.send_and_wait(
                    self._events_topic, event.value, key=event.key, headers=event.headers
                )
        except TimeoutError:
            self._published(f"Kafka did not acknowledge within {self._timeout_seconds:g} s")
        except KafkaError as error:
            self._published(f"Kafka refused it: {error!r}")
        else:
            self._published(None)

    def _published(self, error: str | None) -> None:
        """One line when publishing starts failing or its reason changes, one when it works
        again: not one a request."""
        if error is not None and error != self._publish_error:
            log.warning(
                "could not produce an event to %s (%s); the worker publishes the same event "
                "when it reads the email",
                self._events_topic, error,
            )  # fmt: skip
        elif error is None and self._publish_error is not None:
            log.info("producing events to %s again", self._events_topic)
        self._publish_error = error

    async def not_ready_reason(self) -> str | None:
        """None when Kafka answers, the topic exists and takes every body the API accepts;
        otherwise what is wrong."""
        if self._producer is None or not self._connected:
            return f"not connected to Kafka at {self._settings.kafka_bootstrap_servers}"
        try:
            async with asyncio.timeout(2):
                cluster = await self._producer.client.fetch_all_metadata()
        except (TimeoutError, KafkaError) as error:
            return f"Kafka does not answer: {error or type(error).__name__}"
        if self._topic not in cluster.topics():
            return f"topic {self._topic} does not exist (run make topics)"
        if self._record_limit.topic_max_message_bytes is None or self._body_limit_problem:
            # The topic was missing when the producer connected, or its limit too small and
            # perhaps raised since (kafka-configs.sh --alter): read it again.
            await self._read_record_limit()
        return self._body_limit_problem
