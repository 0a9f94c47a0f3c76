"""What happens to one record: parse it, skip it if its message id is finished, deliver it with
retries, or dead-letter it; hold it while the SMTP server refuses the worker's own settings.
A record leaves `process` finished, or `Stopped` is raised."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from aiokafka.structs import ConsumerRecord
from aiosmtplib import SMTPResponse

from services.worker import metrics
from services.worker.dedupe import DedupeStore, Outcome
from services.worker.delivery import Failure, accepted_at, backoff_seconds, classify
from services.worker.faults import ConfigurationFaults
from services.worker.mime import OutgoingEmail, render_email
from shared.schema import parse_record

log = logging.getLogger("worker")

Finished = Literal["delivered", "duplicate", "dead-lettered"]


class Mailer(Protocol):
    """One SMTP connection (services.worker.smtp.SmtpConnection)."""

    async def send(
        self, email: OutgoingEmail, recipients: list[str]
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
    failure: Failure | None = None  # None: the server took the email for some recipients
    refused: dict[str, SMTPResponse] = field(default_factory=dict)  # ...and refused these


class EmailProcessor:
    def __init__(
        self,
        store: DedupeStore,
        dead_letters: DeadLetterSink,
        retry: RetryPolicy,
        message_id_domain: str,
        configuration_faults: ConfigurationFaults,
    ) -> None:
        self._store = store
        self._dead_letters = dead_letters
        self._retry = retry
        self._message_id_domain = message_id_domain
        self._configuration_faults = configuration_faults

    async def process(
        self,
        record: ConsumerRecord[bytes, bytes],
        smtp: Mailer,
        stopping: asyncio.Event,
    ) -> Finished:
        where = f"{record.topic}-{record.partition} offset {record.offset}"
        try:
            email = parse_record(record.value)
            outgoing = render_email(email, self._message_id_domain)
        except Exception as error:  # PoisonRecord, or a record no MIME message can be made of
            reason = f"poison record: {error}"
            await self._dead_letter(record, reason, 1, stopping)
            metrics.dead_lettered("poison_record")
            log.warning("%s: dead-lettered a %s", where, reason)
            return "dead-lettered"

        finished_before = await self._store.outcome_of(email.message_id)
        if finished_before is not None:
            metrics.EMAILS_SKIPPED_DUPLICATE.inc()
            log.info(
                "%s: skipped %s, a duplicate (already %s)", where, email.message_id, finished_before
            )
            return "duplicate"

        delivery = await self._send(smtp, outgoing, outgoing.recipients, where, stopping)
        if delivery.failure is not None:
            await self._dead_letter(record, delivery.failure.reason, delivery.attempts, stopping)
            metrics.dead_lettered(
                "permanent_failure" if delivery.failure.permanent else "attempts_exhausted"
            )
            await self._record(email.message_id, "dead-lettered", where, stopping)
            log.warning(
                "%s: dead-lettered %s after %d attempt(s): %s",
                where, email.message_id, delivery.attempts, delivery.failure.reason,
            )  # fmt: skip
            return "dead-lettered"

        metrics.delivered(accepted_at(email))
        # Recorded as soon as the server said 250: from here on, sending it again would reach
        # the recipients who already have it.
        await self._record(email.message_id, "delivered", where, stopping)
        taken = [address for address in outgoing.recipients if address not in delivery.refused]
        log.info("%s: delivered %s to %s", where, email.message_id, ", ".join(taken))
        if delivery.refused:
            await self._finish_refused_recipients(record, smtp, outgoing, delivery, stopping)
        return "delivered"

    async def _finish_refused_recipients(
        self,
        record: ConsumerRecord[bytes, bytes],
        smtp: Mailer,
        outgoing: OutgoingEmail,
        delivery: Delivery,
        stopping: asyncio.Event,
    ) -> None:
        """Retry the recipients refused with 4xx, alone; dead-letter those refused for good."""
        where = f"{record.topic}-{record.partition} offset {record.offset}"
        refused, given_up = dict(delivery.refused), dict[str, str]()
        try:
            while refused:
                given_up |= {
                    a: f"{r.code} {r.message}" for a, r in refused.items() if r.code >= 500
                }
                pending = [address for address, answer in refused.items() if answer.code < 500]
                if not pending:
                    break
                metrics.DELIVERY_RETRIES.inc()
                retry = await self._send(smtp, outgoing, pending, where, stopping)
                if retry.failure is not None:
                    given_up |= dict.fromkeys(pending, retry.failure.reason)
                    break
                refused = dict(retry.refused)
        except Stopped:
            log.warning(
                "%s: stopping before %s reached %s; they will not be retried",
                where, message_id_of(outgoing), ", ".join(refused),
            )  # fmt: skip
            raise
        if given_up:
            reason = "delivered, but refused for " + "; ".join(
                f"{address} ({answer})" for address, answer in given_up.items()
            )
            await self._dead_letter(record, reason, delivery.attempts, stopping)
            metrics.dead_lettered("some_recipients_refused")
            log.warning("%s: %s was %s", where, message_id_of(outgoing), reason)

    async def _send(
        self,
        smtp: Mailer,
        outgoing: OutgoingEmail,
        recipients: list[str],
        where: str,
        stopping: asyncio.Event,
    ) -> Delivery:
        """Send until the server takes the email for some recipients, or says no for good.

        While the server refuses the worker's own settings (a wrong password, an untrusted
        certificate) the email is not at fault: it waits here, however long, and the commit
        with it."""
        failures = 0  # the email's own, counted against WORKER_MAX_ATTEMPTS
        while True:
            await self._wait_for_turn(stopping)
            try:
                refused = await smtp.send(outgoing, recipients)
            except Exception as error:
                failure = classify(error)
                if failure.fault is not None:
                    self._configuration_faults.refused(failure.fault, failure.reason)
                    continue
                failures += 1
                if failure.permanent or self._retry.gives_up_after(failures):
                    return Delivery(failures, failure=failure)
                metrics.DELIVERY_RETRIES.inc()
                delay = self._retry.delay(failures)
                log.warning(
                    "%s: attempt %d for %s failed (%s); retrying in %.1f s (the commit waits here)",
                    where, failures, message_id_of(outgoing), failure.reason, delay,
                )  # fmt: skip
                await wait_unless_stopping(stopping, delay)
                continue
            self._configuration_faults.accepted()
            return Delivery(failures + 1, refused=refused)

    async def _wait_for_turn(self, stopping: asyncio.Event) -> None:
        """At once while the server accepts the worker's settings; while it refuses them, until
        this lane's turn to try it again, or until another lane finds it accepting."""
        while (seconds := self._configuration_faults.claim_turn()) > 0:
            await wait_unless_stopping(stopping, seconds, self._configuration_faults.accepting)

    async def _record(
        self, message_id: str, outcome: Outcome, where: str, stopping: asyncio.Event
    ) -> None:
        """Write the outcome to the dedupe store, retrying while the store fails (locked, full)."""
        try:
            await self._until_done(
                lambda: self._store.record(message_id, outcome, where),
                f"{where}: cannot record {message_id} as {outcome} in the dedupe store",
                stopping,
            )
        except Stopped:
            log.error(
                "%s: stopping with %s %s but not recorded: a redelivery would send it again",
                where, message_id, outcome,
            )  # fmt: skip
            raise

    async def _dead_letter(
        self,
        record: ConsumerRecord[bytes, bytes],
        reason: str,
        attempts: int,
        stopping: asyncio.Event,
    ) -> None:
        """Publish to the dead-letter topic, retrying while Kafka does not acknowledge."""
        await self._until_done(
            lambda: self._dead_letters.publish(record, reason, attempts),
            "the dead-letter topic refused the record",
            stopping,
        )

    async def _until_done(
        self, action: Callable[[], Awaitable[None]], failed: str, stopping: asyncio.Event
    ) -> None:
        """Repeat an action on Kafka or the store until it succeeds, with the same back-off as
        SMTP (either way a server is away for a while); raises Stopped if asked to stop."""
        attempt = 0
        while True:
            attempt += 1
            try:
                await action()
                return
            except Exception as error:
                delay = self._retry.delay(attempt)
                log.warning("%s (%s); retrying in %.1f s", failed, error, delay)
                await wait_unless_stopping(stopping, delay)


def message_id_of(email: OutgoingEmail) -> str:
    """The record's message id, from the Message-ID header `<id@domain>` the worker wrote."""
    return email.message_id.strip("<>").rpartition("@")[0]


async def wait_unless_stopping(
    stopping: asyncio.Event, seconds: float, or_until: asyncio.Event | None = None
) -> None:
    """Wait `seconds`, or less if `or_until` is set meanwhile; raise Stopped if asked to stop."""
    events = [stopping] if or_until is None else [stopping, or_until]
    waits = {asyncio.ensure_future(event.wait()) for event in events}
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    if stopping.is_set():
        raise Stopped
