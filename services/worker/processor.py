"""What happens to one record: parse it, skip it if its message id is finished, deliver it with
retries, or dead-letter it; hold it while the SMTP server refuses the worker's own settings.
A record leaves `process` finished, with its RecordOutcome for the caller to count, or `Stopped`
is raised."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from aiokafka.structs import ConsumerRecord
from aiosmtplib import SMTPResponse

from services.worker.configuration_faults import ConfigurationFaults
from services.worker.dedupe import DedupeStore, Outcome
from services.worker.mime import OutgoingEmail, accepted_at, render_email
from services.worker.outcome import RecordOutcome
from services.worker.retry import RetryPolicy, Stopped, retry_until_done, wait_unless_stopping
from services.worker.smtp_failures import Failure, classify
from services.worker.store_outage import StoreOutage
from shared.schema import EmailRecord, parse_record

log = logging.getLogger("worker")

T = TypeVar("T")


class Mailer(Protocol):
    """One SMTP connection (services.worker.smtp.SmtpConnection)."""

    awaiting_final_reply: bool  # the final "." of DATA is sent and its reply not yet read

    async def send(
        self, email: OutgoingEmail, recipients: list[str]
    ) -> dict[str, SMTPResponse]: ...

    async def close(self) -> None: ...


class DeadLetterSink(Protocol):
    """The dead-letter topic (services.worker.dead_letters.DeadLetters)."""

    async def publish(
        self, record: ConsumerRecord[bytes, bytes], error: str, attempts: int
    ) -> None: ...


@dataclass
class AttemptCounts:
    """Counted as it happens, not with the outcome: an email may be retried for hours, and its
    retries show meanwhile (metrics.AttemptCountsCollector reads them at each scrape)."""

    retries: int = 0  # transient failures after which an email is tried again
    outcome_unknown: int = 0  # transactions whose reply to the final "." never came


class TransientFailure(Exception):
    """An attempt failed in a way the next one may not (a 4xx, a lost connection)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


class RecipientsDeferred(Exception):
    """The server took the email for some recipients and deferred the others (4xx): those are
    still owed it, and get it after the same back-off as after a transient failure."""

    def __init__(self, taken: int, deferred: dict[str, SMTPResponse]) -> None:
        super().__init__(f"deferred for {len(deferred)} recipient(s)")
        self.taken = taken  # by the round that deferred the others
        self.deferred = deferred


@dataclass
class DeliveryProgress:
    """One email's recipients as its rounds go, and the SMTP attempts made so far."""

    owed: list[str]  # not taken yet, nor refused for good
    taken: int  # by this owner of the record and earlier ones
    refused_for_good: dict[str, str] = field(default_factory=dict)  # address: the answer
    failure: Failure | None = None  # what ended the sending to those owed: permanent, or the last
    attempts: int = 0


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
        counts: AttemptCounts,
        store_outage: StoreOutage,
    ) -> None:
        self._store = store
        self._dead_letters = dead_letters
        self._retry = retry
        self._message_id_domain = message_id_domain
        self._configuration_faults = configuration_faults
        self._store_outage = store_outage
        self._counts = counts

    async def process(
        self,
        record: ConsumerRecord[bytes, bytes],
        smtp: Mailer,
        stopping: asyncio.Event,
    ) -> RecordOutcome:
        where = where_of(record)
        try:
            email = parse_record(record.value)
            outgoing = render_email(email, self._message_id_domain)
        except Exception as error:  # PoisonRecord, or a record no MIME message can be made of
            reason = f"poison record: {error}"
            await self._dead_letter(record, reason, 1, stopping)
            log.warning("%s: dead-lettered a %s", where, reason)
            return RecordOutcome("dead-lettered", dead_letter_reason="poison_record")

        state = await self._until_done(
            lambda: self._store.state_of(email.message_id),
            f"{where}: cannot read the state of {email.message_id} from the dedupe store",
            stopping,
            self._store_outage,
        )
        if state is not None and state.finished is not None:
            log.info(
                "%s: skipped %s, a duplicate (already %s)", where, email.message_id, state.finished
            )
            return RecordOutcome("duplicate")
        accepted_before = state.accepted if state is not None else frozenset()
        owed = [address for address in outgoing.recipients if address not in accepted_before]
        if accepted_before:
            log.info(
                "%s: %s was taken for %d recipient(s) before; sending it to the %d still owed",
                where, email.message_id, len(accepted_before), len(owed),
            )  # fmt: skip
        return await self._deliver(
            record, smtp, email, outgoing, owed, len(accepted_before), stopping
        )

    async def _deliver(
        self,
        record: ConsumerRecord[bytes, bytes],
        smtp: Mailer,
        email: EmailRecord,
        outgoing: OutgoingEmail,
        owed: list[str],
        taken_before: int,
        stopping: asyncio.Event,
    ) -> RecordOutcome:
        """Send to the owed recipients until each is taken or refused for good: while the
        server defers some of them (4xx), another round sends to those after a back-off.

        Whenever the server takes the email for some recipients while others are still owed
        it, those are written to the store at once: if the worker stops while it retries the
        others, the next owner of the record sends it to the others only."""
        where = where_of(record)
        progress = DeliveryProgress(owed, taken_before)

        def retrying_the_deferred(error: RecipientsDeferred, round_: int, delay: float) -> None:
            self._counts.retries += 1
            first = next(iter(error.deferred.values()))
            log.info(
                "%s: %s taken for %d recipient(s), deferred for %d (%d %s); retrying those",
                where, email.message_id, error.taken, len(error.deferred), first.code,
                first.message,
            )  # fmt: skip

        return await retry_until_done(
            lambda round_: self._send_round(record, smtp, email, outgoing, progress, stopping),
            retry_on=RecipientsDeferred,
            # As after a transient failure: the wait grows with every SMTP attempt so far, those
            # retried within the rounds included.
            backoff=lambda round_: self._retry.delay(progress.attempts),
            stopping=stopping,
            failed=retrying_the_deferred,
        )

    async def _send_round(
        self,
        record: ConsumerRecord[bytes, bytes],
        smtp: Mailer,
        email: EmailRecord,
        outgoing: OutgoingEmail,
        progress: DeliveryProgress,
        stopping: asyncio.Event,
    ) -> RecordOutcome:
        """Send to the recipients still owed and record those the server took; the record's
        outcome, or RecipientsDeferred while the server defers some of them."""
        where = where_of(record)
        message_id = email.message_id
        delivery = await self._send(smtp, outgoing, progress.owed, where, stopping)
        progress.attempts += delivery.attempts
        if delivery.failure is not None:
            progress.failure = delivery.failure
            progress.refused_for_good |= dict.fromkeys(progress.owed, delivery.failure.reason)
            return await self._dead_letter_refused(record, email, progress, stopping)
        deferred = {a: reply for a, reply in delivery.refused.items() if reply.code < 500}
        progress.refused_for_good |= {
            a: f"{reply.code} {reply.message}"
            for a, reply in delivery.refused.items()
            if reply.code >= 500
        }
        accepted_now = [a for a in progress.owed if a not in delivery.refused]
        progress.taken += len(accepted_now)
        if not deferred and not progress.refused_for_good:
            # Recorded in the same step that read the server's 250: from here on, sending
            # it again would reach the recipients who already have it.
            await self._record(message_id, "delivered", where, stopping)
            log.info("%s: delivered %s to %d recipient(s)", where, message_id, progress.taken)
            return RecordOutcome("delivered", accepted_at=accepted_at(email))
        await self._record_accepted(message_id, accepted_now, where, stopping)
        if deferred:
            progress.owed = list(deferred)
            raise RecipientsDeferred(len(accepted_now), deferred)
        return await self._dead_letter_refused(record, email, progress, stopping)

    async def _dead_letter_refused(
        self,
        record: ConsumerRecord[bytes, bytes],
        email: EmailRecord,
        progress: DeliveryProgress,
        stopping: asyncio.Event,
    ) -> RecordOutcome:
        """None is owed the email any more, and some recipients never took it: the record goes
        to the dead-letter topic, as undeliverable if nobody took it, else naming the refused."""
        where = where_of(record)
        message_id, failure, attempts = email.message_id, progress.failure, progress.attempts
        refused_for_good = progress.refused_for_good
        if progress.taken == 0:
            reason = failure.reason if failure is not None else _refusals(refused_for_good)
            permanent = failure is None or failure.permanent
            await self._dead_letter(record, reason, attempts, stopping)
            await self._record(message_id, "dead-lettered", where, stopping)
            log.warning(
                "%s: dead-lettered %s after %d attempt(s): %s",
                where, message_id, attempts, failure.reason if failure else "refused",
            )  # fmt: skip
            return RecordOutcome(
                "dead-lettered",
                dead_letter_reason="permanent_failure" if permanent else "attempts_exhausted",
            )
        # The dead letter names the refused addresses; the log only counts them (Bcc).
        await self._dead_letter(
            record, "delivered, but refused for " + _refusals(refused_for_good), attempts, stopping
        )
        await self._record(message_id, "delivered", where, stopping)
        log.warning(
            "%s: %s delivered to %d recipient(s), refused for good for %d (%s); dead-lettered",
            where, message_id, progress.taken, len(refused_for_good),
            next(iter(refused_for_good.values())),
        )  # fmt: skip
        return RecordOutcome(
            "delivered",
            dead_letter_reason="some_recipients_refused",
            accepted_at=accepted_at(email),
        )

    async def _send(
        self,
        smtp: Mailer,
        outgoing: OutgoingEmail,
        recipients: list[str],
        where: str,
        stopping: asyncio.Event,
    ) -> Delivery:
        """Send until the server takes the email for some recipients, or says no for good (a
        permanent failure, or the last of WORKER_MAX_ATTEMPTS transient ones)."""

        def retrying(error: TransientFailure, attempt: int, delay: float) -> None:
            self._counts.retries += 1
            log.warning(
                "%s: attempt %d for %s failed (%s); retrying in %.1f s (%s)",
                where, attempt, message_id_of(outgoing), error.failure.reason, delay,
                "the server may have stored it: its recipients may get it twice, with the "
                "same Message-ID" if error.failure.outcome_unknown else "the commit waits here",
            )  # fmt: skip

        return await retry_until_done(
            lambda attempt: self._attempt(smtp, outgoing, recipients, attempt, stopping),
            retry_on=TransientFailure,
            backoff=self._retry.delay,
            stopping=stopping,
            failed=retrying,
        )

    async def _attempt(
        self,
        smtp: Mailer,
        outgoing: OutgoingEmail,
        recipients: list[str],
        attempt: int,
        stopping: asyncio.Event,
    ) -> Delivery:
        """One attempt, counted against WORKER_MAX_ATTEMPTS; raises TransientFailure when
        another may succeed.

        While the server refuses the worker's own settings (a wrong password, an untrusted
        certificate) the email is not at fault, and its tries are no attempts: it waits here,
        however long, and the commit with it."""
        while True:
            await self._wait_for_turn(stopping)
            try:
                refused = await smtp.send(outgoing, recipients)
            except Exception as error:
                failure = classify(error)
                if failure.fault is not None:
                    self._configuration_faults.refused(failure.fault, failure.reason)
                    continue
                if failure.outcome_unknown:
                    self._counts.outcome_unknown += 1
                if failure.permanent or self._retry.gives_up_after(attempt):
                    return Delivery(attempt, failure=failure)
                raise TransientFailure(failure) from error
            self._configuration_faults.accepted()
            return Delivery(attempt, refused=refused)

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
                self._store_outage,
            )
        except Stopped:
            log.error(
                "%s: stopping with %s %s but not recorded: a redelivery would send it again",
                where, message_id, outcome,
            )  # fmt: skip
            raise

    async def _record_accepted(
        self, message_id: str, recipients: list[str], where: str, stopping: asyncio.Event
    ) -> None:
        """Write the recipients the server took while others are still owed the email."""
        try:
            await self._until_done(
                lambda: self._store.record_accepted(message_id, recipients, where),
                f"{where}: cannot record the recipients of {message_id} in the dedupe store",
                stopping,
                self._store_outage,
            )
        except Stopped:
            log.error(
                "%s: stopping with %s taken for %d recipient(s) but not recorded: a redelivery "
                "would send it to them again",
                where, message_id, len(recipients),
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
        self,
        action: Callable[[], Awaitable[T]],
        failed: str,
        stopping: asyncio.Event,
        outage: StoreOutage | None = None,
    ) -> T:
        """Repeat an action on Kafka or the store until it succeeds, with the same back-off as
        SMTP (either way a server is away for a while); raises Stopped if asked to stop. An
        outage, if given, is told of every failure and of the first success after them."""

        def retrying(error: Exception, attempt: int, delay: float) -> None:
            if outage is not None:
                outage.failed(f"{type(error).__name__}: {error}")
            log.warning("%s (%s); retrying in %.1f s", failed, error, delay)

        done = await retry_until_done(
            lambda attempt: action(),
            retry_on=Exception,
            backoff=self._retry.delay,
            stopping=stopping,
            failed=retrying,
        )
        if outage is not None:
            outage.answered()
        return done


def _refusals(refused: dict[str, str]) -> str:
    """`bob@example.com (550 5.1.1 no such user); ...`, for a dead letter's reason."""
    return "; ".join(f"{address} ({answer})" for address, answer in refused.items())


def where_of(record: ConsumerRecord[bytes, bytes]) -> str:
    """`email.send-2 offset 41`, for the log."""
    return f"{record.topic}-{record.partition} offset {record.offset}"


def message_id_of(email: OutgoingEmail) -> str:
    """The record's message id, from the Message-ID header `<id@domain>` the worker wrote."""
    return email.message_id.strip("<>").rpartition("@")[0]
