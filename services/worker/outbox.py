"""The worker's edge toward email.events and the retry topics: what a try of an email publishes,
made from the dedupe store's rows, and acknowledged by Kafka before its record may be committed.

The store is the outbox and the uncommitted offset its cursor: a record whose publication was
not acknowledged is read again and publishes the same bytes again (docs/events.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from services.worker.retry import Stopped, retry_until_done
from shared.events import ProducerRecord

log = logging.getLogger("worker")


@dataclass(frozen=True)
class Message:
    topic: str
    record: ProducerRecord


class Producer(Protocol):
    """What the outbox needs of aiokafka's AIOKafkaProducer."""

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]: ...


class Outbox:
    def __init__(self, producer: Producer, backoff: Callable[[int], float]) -> None:
        self._producer = producer
        self._backoff = backoff

    async def enqueue(self, messages: Sequence[Message]) -> Awaitable[list[object]]:
        """Hand the messages to the producer, which batches them with others: returns what to
        await for their acknowledgements, without waiting for them."""
        acks = [
            await self._producer.send(
                message.topic,
                message.record.value,
                key=message.record.key,
                headers=message.record.headers,
            )
            for message in messages
        ]
        return asyncio.gather(*acks)

    async def acknowledged(
        self,
        messages: Sequence[Message],
        acks: Awaitable[object],
        where: str,
        stopping: asyncio.Event,
    ) -> None:
        """Wait for Kafka to acknowledge the messages, producing them again while it does not
        (a copy has the same key, value and event id); raises Stopped if asked to stop first."""

        async def attempt(number: int) -> None:
            await (acks if number == 1 else await self.enqueue(messages))

        def failed(error: Exception, number: int, seconds: float) -> None:
            log.warning(
                "%s: Kafka did not acknowledge %d event(s) (%s); producing them again in %.1f s",
                where, len(messages), error, seconds,
            )  # fmt: skip

        try:
            await retry_until_done(
                attempt, retry_on=Exception, backoff=self._backoff, stopping=stopping,
                failed=failed,
            )  # fmt: skip
        except Stopped:
            log.info("%s: stopped before its events were acknowledged; it is read again", where)
            raise
