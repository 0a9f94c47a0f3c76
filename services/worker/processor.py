"""What happens to one record: parse it, skip it if its message id is finished, deliver it with
retries, or dead-letter it. A record leaves `process` finished, or `Stopped` is raised."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Literal, Protocol

from aiokafka.structs import ConsumerRecord
from aiosmtplib import SMTPResponse

from services.worker.dedupe import DedupeStore
from services.worker.delivery import Failure, addresses, backoff_seconds, build_message, classify
from shared.schema import EmailRecord, PoisonRecord, parse_record

log = logging.getLogger("worker")

Finished = Literal["delivered", "duplicate", "dead-lettered"]


class Mailer(Protocol):
    """One SMTP connection (services.worker.smtp.SmtpConnection)."""

    async def send(
        self, message: EmailMessage, sender: str, recipients: list[str]
    ) -> dict[str, SMTPResponse]: ...

    async def close(self) -> None: ...


class DeadLetterSink(Protocol):
    """The dead-letter topic (services.worker.dead_letters.DeadLetters)."""

    async def publish(
        self, record: ConsumerRecord[bytes, bytes], error: str, attempts: int
    ) -> None: ...


class Stopped(Exception):
    """The partition was asked to stop while this record was waiting to be retried."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int  # 0: retry transient failures for ever
    initial_seconds: float
    max_seconds: float

    def gives_up_after(self, attempt: int) -> bool:
        return self.max_attempts > 0 and attempt >= self.max_attempts

    def delay(self, attempt: int) -> float:
        return backoff_seconds(attempt, self.initial_seconds, self.max_seconds, random.random)


@dataclass(frozen=True)
class Delivery:
    attempts: int
    failure: Failure | None = None  # None: the server took the email
    refused: str = ""  # recipients the server refused while taking it for the others


class EmailProcessor:
    def __init__(
        self,
        store: DedupeStore,
        dead_letters: DeadLetterSink,
        retry: RetryPolicy,
        message_id_domain: str,
    ) -> None:
        self._store = store
        self._dead_letters = dead_letters
        self._retry = retry
        self._message_id_domain = message_id_domain

    async def process(
        self,
        record: ConsumerRecord[bytes, bytes],
        smtp: Mailer,
        stopping: asyncio.Event,
    ) -> Finished:
        where = f"{record.topic}-{record.partition} offset {record.offset}"
        try:
            email = parse_record(record.value)
        except PoisonRecord as error:
            await self._dead_letter(record, f"poison record: {error}", 1, stopping)
            log.warning("%s: dead-lettered a poison record: %s", where, error)
            return "dead-lettered"

        finished_before = await self._store.outcome_of(email.message_id)
        if finished_before is not None:
            log.info(
                "%s: skipped %s, a duplicate (already %s)", where, email.message_id, finished_before
            )
            return "duplicate"

        delivery = await self._deliver(email, smtp, where, stopping)
        if delivery.failure is None:
            await self._store.record(email.message_id, "delivered", where)
            log.info("%s: delivered %s to %s", where, email.message_id, ", ".join(email.recipients))
            if delivery.refused:
                # The server took the email for the other recipients: sending it again would
                # reach them twice, so the refused ones go to the dead-letter topic instead.
                reason = f"delivered, but refused for {delivery.refused}"
                await self._dead_letter(record, reason, delivery.attempts, stopping)
                log.warning("%s: %s was %s", where, email.message_id, reason)
            return "delivered"
        failure, attempts = delivery.failure, delivery.attempts
        await self._dead_letter(record, failure.reason, attempts, stopping)
        await self._store.record(email.message_id, "dead-lettered", where)
        log.warning(
            "%s: dead-lettered %s after %d attempt(s): %s",
            where, email.message_id, attempts, failure.reason,
        )  # fmt: skip
        return "dead-lettered"

    async def _deliver(
        self, email: EmailRecord, smtp: Mailer, where: str, stopping: asyncio.Event
    ) -> Delivery:
        message = build_message(email, self._message_id_domain)
        sender, recipients = addresses([email.sender])[0], addresses(email.recipients)
        attempt = 0
        while True:
            attempt += 1
            try:
                refused = await smtp.send(message, sender, recipients)
            except Exception as error:
                failure = classify(error)
                if failure.permanent or self._retry.gives_up_after(attempt):
                    return Delivery(attempt, failure=failure)
                delay = self._retry.delay(attempt)
                log.warning(
                    "%s: attempt %d for %s failed (%s); retrying in %.1f s, holding this partition",
                    where, attempt, email.message_id, failure.reason, delay,
                )  # fmt: skip
                await wait_unless_stopping(stopping, delay)
                continue
            refusals = [
                f"{address} ({answer.code} {answer.message})" for address, answer in refused.items()
            ]
            return Delivery(attempt, refused="; ".join(refusals))

    async def _dead_letter(
        self,
        record: ConsumerRecord[bytes, bytes],
        reason: str,
        attempts: int,
        stopping: asyncio.Event,
    ) -> None:
        """Publish to the dead-letter topic, retrying while Kafka does not acknowledge."""
        publish_attempt = 0
        while True:
            publish_attempt += 1
            try:
                await self._dead_letters.publish(record, reason, attempts)
                return
            except Exception as error:
                delay = self._retry.delay(publish_attempt)
                log.warning(
                    "dead-letter topic refused the record (%s); retrying in %.1f s", error, delay
                )
                await wait_unless_stopping(stopping, delay)


async def wait_unless_stopping(stopping: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    except TimeoutError:
        return
    raise Stopped
