"""What happens to one record, of email.send or of a retry topic: parse it, find in the dedupe
store whom this try still owes the email, skip the suppressed, send one SMTP transaction to the
rest, write each recipient's outcome in one store write, and hand the events (and a retry record
for the deferred) to the outbox. A record leaves `process` with its RecordOutcome, whose
publication the caller awaits before the offset may be committed; or `Stopped` is raised.

Who is at fault decides the path. The email or a recipient (a 4xx or 5xx about it, a connection
lost after MAIL FROM, no reply to the final "."): its outcome is written, and a deferral goes to
the next retry topic, so the partition moves on at once. The relay or the worker's own settings
(unreachable, a wrong password, an untrusted certificate): no email is at fault, and every
email waits here, however long."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Protocol, TypeVar

from aiokafka.structs import ConsumerRecord, RecordMetadata

from services.worker.configuration_faults import ConfigurationFaults
from services.worker.dedupe import DedupeStore, DeliveryState, RecipientRow, RecipientState
from services.worker.mime import OutgoingEmail, accepted_at, render_email
from services.worker.outbox import Message, Outbox
from services.worker.outcome import Publication, RecordOutcome
from services.worker.recipient_outcomes import (
    RetryPlan,
    Stage,
    bounce_of,
    dead_letter_reason,
    every_recipient,
    finished_as,
    handed_off,
    retry_record,
    rows_after_failure,
    rows_of_transaction,
    stored_event_record,
    suppressed,
    what_is_owed,
)
from services.worker.retry import RetryPolicy, Stopped, retry_until_done, wait_unless_stopping
from services.worker.smtp_failures import classify, is_throttling, throttling_reply
from services.worker.store_outage import StoreOutage
from shared.events import (
    DeadLettered,
    Position,
    ProducerRecord,
    Reply,
    Suppression,
    accepted_event,
    event_record,
)
from shared.retry_topics import parse_retry_record
from shared.schema import parse_record
from shared.suppressions import Suppression as ListedSuppression
from shared.suppressions import SuppressionList

if TYPE_CHECKING:  # smtp.py counts in metrics.py, which reads this module's AttemptCounts
    from services.worker.smtp import Transaction

log = logging.getLogger("worker")

T = TypeVar("T")

# A record costly to read is read and rendered in a thread, which gives the loop back a turn
# every switch interval (5 ms). What costs is checking its addresses (~0.5 ms for each new one
# with an international domain, which email_validator converts to IDNA) and a large body: the
# largest record the API accepts (100 such recipients, ~500 KB) takes ~50 ms, and would hold up
# every other lane's conversation meanwhile. A typical record, under 1 KB with a few addresses,
# is read on the loop: the hop to a thread would cost more than the work.
LARGE_RECORD_BYTES = 16 * 1024
MANY_ADDRESSES = 10


def costly_to_read(value: bytes | None) -> bool:
    """Whether reading and rendering the record may hold the loop for milliseconds: a large one,
    or one with many addresses (counted by their @, which other text may hold too)."""
    if value is None:
        return False
    return len(value) >= LARGE_RECORD_BYTES or value.count(b"@") > MANY_ADDRESSES


class Mailer(Protocol):
    """A lane's way to the relay (services.worker.smtp_pool.PooledMailer)."""

    @property
    def awaiting_final_reply(self) -> bool:
        """The final "." of DATA is sent and its reply not yet read."""
        ...

    async def send(self, email: OutgoingEmail, recipients: list[str]) -> Transaction: ...

    async def close(self) -> None: ...


class DeadLetterSink(Protocol):
    """The dead-letter topic (services.worker.dead_letters.DeadLetters)."""

    async def publish(
        self,
        record: ConsumerRecord[bytes, bytes],
        error: str,
        attempts: int,
        original: tuple[bytes, Position] | None = None,
    ) -> RecordMetadata: ...


@dataclass
class AttemptCounts:
    """Counted as it happens, not with the outcome: an email may wait for hours, and its
    tries show meanwhile (metrics.AttemptCountsCollector reads them at each scrape)."""

    retries: int = 0  # tries that failed for the relay's sake, after which the email waits
    outcome_unknown: int = 0  # transactions whose reply to the final "." never came
    throttled: int = 0  # replies asking the worker to slow down


class Pace(Protocol):
    """The sending budget every lane shares (send_limiter.SendLimiter)."""

    def throttled(self) -> bool: ...


# A relay that keeps asking to slow down on one email's tries (a "rate limit exceeded for
# this recipient") is about that email after all: it goes to a retry topic, not held for ever.
MAX_THROTTLED_TRIES = 10


class RelayTrouble(Exception):
    """The relay could not be reached, or asked the worker to slow down: the email is not at
    fault, and is tried again after a back-off."""


class EmailProcessor:
    def __init__(
        self,
        store: DedupeStore,
        suppressions: SuppressionList,
        outbox: Outbox,
        dead_letters: DeadLetterSink,
        retry: RetryPolicy,
        retry_plan: RetryPlan,
        events_topic: str,
        message_id_domain: str,
        configuration_faults: ConfigurationFaults,
        counts: AttemptCounts,
        store_outage: StoreOutage,
        pace: Pace,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pace = pace
        self._store = store
        self._suppressions = suppressions
        self._outbox = outbox
        self._dead_letters = dead_letters
        self._retry = retry
        self._retry_plan = retry_plan
        self._events_topic = events_topic
        self._message_id_domain = message_id_domain
        self._configuration_faults = configuration_faults
        self._store_outage = store_outage
        self._counts = counts
        self._clock = clock

    async def process(
        self,
        record: ConsumerRecord[bytes, bytes],
        smtp: Mailer,
        stopping: asyncio.Event,
    ) -> RecordOutcome:
        where = where_of(record)
        try:
            if costly_to_read(record.value):
                stage, outgoing = await asyncio.to_thread(self._read, record)
            else:
                stage, outgoing = self._read(record)
        except Exception as error:  # PoisonRecord, or a record no MIME message can be made of
            problem = f"poison record: {error}"
            await self._dead_letter(record, problem, stopping)
            log.warning("%s: dead-lettered a %s", where, problem)
            return RecordOutcome("dead-lettered", dead_letter_reason="poison_record")

        message_id = stage.message_id
        state = await self._until_done(
            lambda: self._store.state_of(message_id),
            f"{where}: cannot read the state of {message_id} from the dedupe store",
            stopping,
            self._store_outage,
        )
        if state is not None and state.finished is not None and state.dead_lettered is None:
            # An earlier version's finished email: it made no events to publish again.
            log.info("%s: skipped %s, a duplicate (already %s)", where, message_id, state.finished)
            return RecordOutcome("duplicate")
        state, written = await self._try_owed(stage, state, smtp, outgoing, where, stopping)
        dead_lettered = await self._dead_letter_if_ended(record, stage, state, stopping)
        if dead_lettered is not None:
            state = dead_lettered
        events, retry = self._publication(stage, state)
        acks = await self._until_done(
            lambda: self._outbox.enqueue(events),
            f"{where}: cannot hand the events of {message_id} to the producer",
            stopping,
        )
        sent_now = sum(row.state == "sent" for row in written)
        return RecordOutcome(
            finished_as(written, sent_now, dead_lettered is not None),
            dead_letter_reason=(
                dead_letter_reason(stage.email, state) if dead_lettered is not None else None
            ),
            accepted_at=accepted_at(stage.email) if sent_now else None,
            published=Publication(events, acks, retry),
        )

    async def _try_owed(
        self,
        stage: Stage,
        state: DeliveryState | None,
        smtp: Mailer,
        outgoing: OutgoingEmail,
        where: str,
        stopping: asyncio.Event,
    ) -> tuple[DeliveryState, list[RecipientRow]]:
        """Settle the recipients this try owes: suppressed ones without sending, the rest with
        one transaction. The email's state after it, and the rows written."""
        owed, settled = what_is_owed(stage, state)
        await self._suppress_bounced(stage, settled, stopping)
        if not owed:
            log.info(
                "%s: skipped %s, a duplicate (already %s)",
                where, stage.message_id, _counted(settled) or "handled by another try",
            )  # fmt: skip
            return state or DeliveryState(), []
        listed = await self._until_done(
            lambda: self._suppressions.suppressed(owed),
            f"{where}: cannot read the suppression list",
            stopping,
            self._store_outage,
        )
        now = self._clock()
        written = [suppressed(stage, a, _suppression(listed[a]), now) for a in owed if a in listed]
        owed = [address for address in owed if address not in listed]
        if written and not owed:
            log.info("%s: %s is for suppressed recipients only", where, stage.message_id)
            return await self._write(stage, written, where, stopping), written
        if len(owed) < len(stage.recipients):
            log.info(
                "%s: %s is done for %d recipient(s); sending it to the %d still owed",
                where, stage.message_id, len(stage.recipients) - len(owed), len(owed),
            )  # fmt: skip
        rows = await self._send(stage, smtp, outgoing, owed, where, stopping)
        written += rows
        state = await self._write(stage, written, where, stopping)
        await self._suppress_bounced(stage, rows, stopping)
        log.info("%s: %s, try %d: %s", where, stage.message_id, stage.attempt, _counted(written))
        return state, written

    async def published(
        self,
        record: ConsumerRecord[bytes, bytes],
        publication: Publication,
        stopping: asyncio.Event,
    ) -> None:
        """Once Kafka has acknowledged what processing the record published: the events, then
        the retry record, so that a retry never runs before the deferral's event is in the
        log. Stopped if asked to stop first."""
        where = where_of(record)
        await self._outbox.acknowledged(publication.events, publication.acks, where, stopping)
        if publication.retry:
            retry = list(publication.retry)
            acks = await self._until_done(
                lambda: self._outbox.enqueue(retry),
                f"{where}: cannot hand the retry record to the producer",
                stopping,
            )
            await self._outbox.acknowledged(retry, acks, where, stopping)

    def _read(self, record: ConsumerRecord[bytes, bytes]) -> tuple[Stage, OutgoingEmail]:
        stage = self._stage_of(record)
        return stage, render_email(stage.email, self._message_id_domain)

    def _stage_of(self, record: ConsumerRecord[bytes, bytes]) -> Stage:
        position = Position.of(record)
        if record.topic == self._retry_plan.email_topic:
            email = parse_record(record.value)
            return Stage(email, 0, position, position, every_recipient(email))
        retry = parse_retry_record(record.value)
        owed = tuple(dict.fromkeys(retry.owed))  # each once, whoever wrote the record
        return Stage(retry.email, retry.attempt, position, retry.origin, owed)

    async def _send(
        self,
        stage: Stage,
        smtp: Mailer,
        outgoing: OutgoingEmail,
        owed: list[str],
        where: str,
        stopping: asyncio.Event,
    ) -> list[RecipientRow]:
        """One transaction to the owed recipients, and the row it made of each. While the relay
        is unavailable or asks for a slower pace, the email waits and is tried again; while it
        refuses the worker's own settings, every lane waits its turn."""

        def waiting(error: RelayTrouble, number: int, seconds: float) -> None:
            self._counts.retries += 1
            log.warning(
                "%s: %s waits for the relay (%s); trying again in %.1f s",
                where, stage.message_id, error, seconds,
            )  # fmt: skip

        return await retry_until_done(
            lambda number: self._try(stage, smtp, outgoing, owed, stopping, number),
            retry_on=RelayTrouble,
            backoff=self._retry.delay,
            stopping=stopping,
            failed=waiting,
        )

    async def _try(
        self,
        stage: Stage,
        smtp: Mailer,
        outgoing: OutgoingEmail,
        owed: list[str],
        stopping: asyncio.Event,
        number: int,
    ) -> list[RecipientRow]:
        """Try number `number`: the rows it made, or RelayTrouble for another after a wait."""
        while True:
            await self._wait_for_turn(stopping)
            try:
                transaction = await smtp.send(outgoing, owed)
            except Exception as error:
                failure = classify(error)
                if failure.fault is not None:
                    self._configuration_faults.refused(failure.fault, failure.reason)
                    continue
                self._configuration_faults.accepted()
                reply = throttling_reply(error)
                if reply is not None:
                    # About the pace, not this email: every lane slows down, and the email
                    # waits here rather than a retry topic's minute.
                    self._counts.throttled += 1
                    self._pace.throttled()
                if failure.relay_unavailable:
                    raise RelayTrouble(failure.reason) from error
                if reply is not None and number < MAX_THROTTLED_TRIES:
                    raise RelayTrouble(f"the relay asks to slow down ({reply})") from error
                if failure.outcome_unknown:
                    self._counts.outcome_unknown += 1
                    log.warning(
                        "%s may have been stored by the server (%s): its recipients may get it "
                        "twice, with the same Message-ID",
                        stage.message_id, failure.reason,
                    )  # fmt: skip
                return rows_after_failure(
                    stage, owed, error, failure, self._clock(), self._retry_plan
                )
            self._configuration_faults.accepted()
            if any(is_throttling(reply) for reply in transaction.refused.values()):
                self._counts.throttled += 1
                self._pace.throttled()
            return rows_of_transaction(stage, owed, transaction, self._clock(), self._retry_plan)

    async def _wait_for_turn(self, stopping: asyncio.Event) -> None:
        """At once while the server accepts the worker's settings; while it refuses them, until
        this lane's turn to try it again, or until another lane finds it accepting."""
        while (seconds := self._configuration_faults.claim_turn()) > 0:
            await wait_unless_stopping(stopping, seconds, self._configuration_faults.accepting)

    async def _write(
        self, stage: Stage, rows: list[RecipientRow], where: str, stopping: asyncio.Event
    ) -> DeliveryState:
        """Write the outcomes to the dedupe store, retrying while the store fails (locked, full).
        Made in the step that read the server's replies: from here on, reading the record again
        sends nothing to those recipients."""
        try:
            return await self._until_done(
                lambda: self._store.record(stage.message_id, rows, stage.attempt, where),
                f"{where}: cannot record the outcomes of {stage.message_id} in the dedupe store",
                stopping,
                self._store_outage,
            )
        except Stopped:
            log.error(
                "%s: stopping with the outcomes of %s for %d recipient(s) not recorded: a "
                "redelivery would send it to them again",
                where, stage.message_id, len(rows),
            )  # fmt: skip
            raise

    async def _suppress_bounced(
        self, stage: Stage, rows: Iterable[RecipientRow], stopping: asyncio.Event
    ) -> None:
        """Put each address that bounced for good on the suppression list. After the store
        write, so that it never widens the instant after a 250; and again for the rows found
        on reading a record again, since a crash may have come in between."""
        for row in rows:
            bounce = bounce_of(row)
            if bounce is None or not bounce.suppressed:
                continue
            reply = _reply_text(bounce.reply)
            await self._until_done(
                partial(self._suppressions.suppress, row.recipient, reply, stage.message_id),
                f"cannot add a bounced address of {stage.message_id} to the suppression list",
                stopping,
                self._store_outage,
            )

    async def _dead_letter_if_ended(
        self,
        record: ConsumerRecord[bytes, bytes],
        stage: Stage,
        state: DeliveryState,
        stopping: asyncio.Event,
    ) -> DeliveryState | None:
        """Once no recipient is owed the email and some never got it, a copy goes to the
        dead-letter topic, and the state with its mark is returned; None when it is not due,
        or done already. The first mark written stays, so two tries that both make a copy
        (a crash, a race) publish one dead_lettered event."""
        reason = dead_letter_reason(stage.email, state)
        if reason is None or state.dead_lettered is not None:
            return None
        error = f"{reason}: " + "; ".join(
            f"{row.recipient} ({_reply_text(bounce.reply)})"
            for row in state.recipients.values()
            if (bounce := bounce_of(row)) is not None
        )
        original = None
        if stage.attempt > 0:
            original = (stage.email.to_kafka()[1], stage.origin)
        # dlq.attempts: the tries the email had, the one on email.send and each retry.
        metadata = await self._dead_letter(record, error, stopping, original, stage.attempt + 1)
        copy = Position(topic=metadata.topic, partition=metadata.partition, offset=metadata.offset)
        event = DeadLettered(
            message_id=stage.message_id, at=self._clock(), record=stage.record, reason=reason,
            dead_letter=copy,
        )  # fmt: skip
        where = where_of(record)
        return_state = await self._until_done(
            lambda: self._store.record_dead_lettered(
                stage.message_id, event.to_kafka().value, where
            ),
            f"{where}: cannot record {stage.message_id} as dead-lettered in the dedupe store",
            stopping,
            self._store_outage,
        )
        log.warning("%s: dead-lettered %s (%s)", where, stage.message_id, reason)
        return return_state

    def _publication(
        self, stage: Stage, state: DeliveryState
    ) -> tuple[list[Message], list[Message]]:
        """What this try publishes, all made from the store's rows: the events (on email.send,
        the accepted event; each of its recipients' final or deferred event; the dead_lettered
        event), and the retry record for the recipients it deferred."""
        events: list[ProducerRecord] = []
        if stage.attempt == 0:
            events.append(accepted_event(stage.email, stage.record).to_kafka())
        rows = [state.recipients[r] for r in stage.recipients if r in state.recipients]
        mine = [row for row in rows if row.final or row.attempt == stage.attempt + 1]
        events += [
            record
            for row in mine
            if (record := stored_event_record(stage.message_id, row)) is not None
        ]
        if state.dead_lettered is not None:
            events.append(event_record(stage.message_id, "dead_lettered", state.dead_lettered))
        deferred_rows = handed_off(stage, rows)
        retry = [Message(*retry_record(stage, deferred_rows))] if deferred_rows else []
        return [Message(self._events_topic, event) for event in events], retry

    async def _dead_letter(
        self,
        record: ConsumerRecord[bytes, bytes],
        reason: str,
        stopping: asyncio.Event,
        original: tuple[bytes, Position] | None = None,
        tries: int = 1,
    ) -> RecordMetadata:
        """Publish to the dead-letter topic, retrying while Kafka does not acknowledge."""
        return await self._until_done(
            lambda: self._dead_letters.publish(record, reason, tries, original),
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


def _counted(rows: list[RecipientRow]) -> str:
    """`sent 2, deferred 1`: the log counts recipients, and never names them (Bcc)."""
    counts = Counter(row.state for row in rows)
    states: tuple[RecipientState, ...] = ("sent", "bounced", "suppressed", "deferred")
    return ", ".join(f"{state} {counts[state]}" for state in states if counts[state])


def _reply_text(reply: Reply) -> str:
    """`550 5.1.1 no such mailbox`, as the log and the dead-letter header write a reply."""
    return " ".join(str(part) for part in (reply.code, reply.enhanced, reply.text) if part)


def _suppression(listed: ListedSuppression) -> Suppression:
    code, _, text = listed.reply.partition(" ")
    return Suppression(
        since=listed.created_at,
        reply=Reply.of(int(code) if code.isdigit() else 550, text),
        message_id=listed.message_id,
    )


def where_of(record: ConsumerRecord[bytes, bytes]) -> str:
    """`email.send-2 offset 41`, for the log."""
    return f"{record.topic}-{record.partition} offset {record.offset}"
