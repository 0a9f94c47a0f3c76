"""What one try of an email made of each recipient, as the rows the dedupe store keeps: sent,
bounced, suppressed, or deferred to the next retry topic (bounced as expired when the next try
would fall past WORKER_MAX_RETRY_AGE); and, from the rows the store holds, what the try owes,
what it publishes and whether the email ends in the dead-letter topic; and what the server's
replies to a transaction, or its failure, made of each recipient. No I/O here.

A stage is one try: attempt 0 reads the email from email.send, attempt n from the retry topic
of its n-th retry (docs/events.md). Each row keeps the event its outcome made, so a record
read again publishes the same bytes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

from aiosmtplib import SMTPNotSupported, SMTPRecipientsRefused, SMTPResponse, SMTPResponseException

from services.worker.dedupe import DeliveryState, RecipientRow
from services.worker.outcome import Finished
from services.worker.smtp_failures import Failure, suppresses
from shared.events import (
    Bounced,
    BounceReason,
    DeadLetterReason,
    Deferred,
    Position,
    ProducerRecord,
    Reply,
    Sent,
    Suppressed,
    Suppression,
    event_record,
    parse_event,
    recipient_address,
)
from shared.retry_topics import Expired, RetryRecord, RetrySchedule, next_step
from shared.schema import EmailRecord

if TYPE_CHECKING:  # smtp.py counts in metrics.py, which reads processor.py, which reads this
    from services.worker.smtp import Transaction


@dataclass(frozen=True)
class RetryPlan:
    """How deferred recipients are retried: WORKER_RETRY_SCHEDULE, WORKER_MAX_RETRY_AGE."""

    schedule: RetrySchedule
    max_age: timedelta
    email_topic: str


@dataclass(frozen=True)
class Stage:
    """One try of an email: which attempt, the record it was read from, and the recipients it
    is for (every recipient on email.send; those still owed on a retry topic)."""

    email: EmailRecord
    attempt: int
    record: Position  # the record this try reads: what its events name
    origin: Position  # the email's record of email.send
    recipients: tuple[str, ...]  # as events name them, each once

    @property
    def message_id(self) -> str:
        return self.email.message_id


def every_recipient(email: EmailRecord) -> tuple[str, ...]:
    """The email's recipients as events and the store name them, each once, in to, cc, bcc
    order."""
    return tuple(dict.fromkeys(recipient_address(address) for address in email.recipients))


class Owed(NamedTuple):
    """Where a try stands before it sends: whom it still owes the email, and the rows of the
    recipients it is done with (final, or handed by this try to the next retry)."""

    owed: list[str]
    settled: list[RecipientRow]


def what_is_owed(stage: Stage, state: DeliveryState | None) -> Owed:
    """A recipient is owed by this try when the store has no row for it, or a deferred row
    this try owns (its attempt is this try's). A row another try owns is left to it."""
    rows: Mapping[str, RecipientRow] = state.recipients if state is not None else {}
    owed, settled = [], []
    for recipient in stage.recipients:
        row = rows.get(recipient)
        if row is None or (row.state == "deferred" and row.attempt == stage.attempt):
            owed.append(recipient)
        elif row.final or row.attempt == stage.attempt + 1:
            settled.append(row)
    return Owed(owed, settled)


def sent(stage: Stage, recipient: str, reply: Reply, now: datetime) -> RecipientRow:
    event = Sent(
        message_id=stage.message_id, at=now, record=stage.record, recipient=recipient,
        attempt=stage.attempt, reply=reply,
    )  # fmt: skip
    return RecipientRow(recipient, "sent", stage.attempt, event.to_kafka().value)


def bounced(
    stage: Stage,
    recipient: str,
    reply: Reply,
    reason: BounceReason,
    now: datetime,
    *,
    suppressed: bool = False,
) -> RecipientRow:
    event = Bounced(
        message_id=stage.message_id, at=now, record=stage.record, recipient=recipient,
        attempt=stage.attempt, reply=reply, reason=reason, suppressed=suppressed,
    )  # fmt: skip
    return RecipientRow(recipient, "bounced", stage.attempt, event.to_kafka().value)


def suppressed(
    stage: Stage, recipient: str, suppression: Suppression, now: datetime
) -> RecipientRow:
    event = Suppressed(
        message_id=stage.message_id, at=now, record=stage.record, recipient=recipient,
        suppression=suppression,
    )  # fmt: skip
    return RecipientRow(recipient, "suppressed", stage.attempt, event.to_kafka().value)


def deferred(
    stage: Stage, recipient: str, reply: Reply, now: datetime, plan: RetryPlan
) -> RecipientRow:
    """Handed to the next retry, which then owns the row; or bounced as expired, with this
    reply, when that retry would fall past the email's age limit."""
    step = next_step(
        stage.attempt, stage.email.created_at, now, plan.schedule, plan.max_age,
        email_topic=plan.email_topic,
    )  # fmt: skip
    if isinstance(step, Expired):
        return bounced(stage, recipient, reply, "expired", now)
    event = Deferred(
        message_id=stage.message_id, at=now, record=stage.record, recipient=recipient,
        attempt=stage.attempt, reply=reply, next_try_at=step.due_at, retry_topic=step.topic,
    )  # fmt: skip
    return RecipientRow(recipient, "deferred", step.attempt, event.to_kafka().value)


def rows_of_transaction(
    stage: Stage, owed: list[str], transaction: Transaction, now: datetime, plan: RetryPlan
) -> list[RecipientRow]:
    """What a transaction the server took made of each owed recipient: sent, with the reply to
    the final ".", unless the server refused the recipient at RCPT."""
    accepted = Reply.of(transaction.reply.code, transaction.reply.message)
    refusals = transaction.refused
    return [
        sent(stage, address, accepted, now)
        if address not in refusals
        else refused(stage, address, refusals[address], now, plan)
        for address in owed
    ]


def refused(
    stage: Stage, recipient: str, reply: SMTPResponse, now: datetime, plan: RetryPlan
) -> RecipientRow:
    """A recipient the server refused at RCPT: bounced (and suppressed, if the reply says the
    address is no good) or deferred."""
    answer = answer_of(reply)
    if answer.code >= 500:
        return bounced(stage, recipient, answer, "address", now, suppressed=suppresses(reply))
    return deferred(stage, recipient, answer, now, plan)


def rows_after_failure(
    stage: Stage,
    owed: list[str],
    error: Exception,
    failure: Failure,
    now: datetime,
    plan: RetryPlan,
) -> list[RecipientRow]:
    """What a transaction that failed as a whole made of each owed recipient (`failure` is
    smtp_failures.classify's word on `error`)."""
    if isinstance(error, SMTPRecipientsRefused):
        by_address = {refusal.recipient: refusal for refusal in error.recipients}
        return [
            refused(
                stage,
                address,
                SMTPResponse(by_address[address].code, by_address[address].message),
                now,
                plan,
            )
            for address in owed
        ]
    if isinstance(error, SMTPResponseException):  # to MAIL FROM, DATA or the final "."
        answer = answer_of(SMTPResponse(error.code, error.message))
        if answer.code >= 500:
            return [bounced(stage, a, answer, "message", now) for a in owed]
        return [deferred(stage, a, answer, now, plan) for a in owed]
    if failure.permanent or isinstance(error, SMTPNotSupported):
        local = synthetic_reply(
            550, "5.6.7" if "SMTPUTF8" in str(error) else "5.6.0", failure.reason
        )
        return [bounced(stage, a, local, "local", now) for a in owed]
    lost = synthetic_reply(451, "4.4.2", failure.reason)
    return [deferred(stage, a, lost, now, plan) for a in owed]


def answer_of(refusal: SMTPResponse) -> Reply:
    """A refusal as events keep it: a 4xx or 5xx as the server wrote it; any other code (a 252
    or 3xx where a 250 or a refusal belongs, a code outside RFC 5321's range) as a 451 in the
    worker's words, so the recipient is tried again rather than the worker failing after a 250
    it has not recorded."""
    if 400 <= refusal.code < 600:
        return Reply.of(refusal.code, refusal.message)
    return synthetic_reply(451, "4.4.0", f"unexpected reply {refusal.code} {refusal.message}")


def finished_as(written: list[RecipientRow], sent_now: int, dead_lettered: bool) -> Finished:
    """How a try's record finished, for the metrics: by what it wrote, and whether it
    dead-lettered the email."""
    if dead_lettered and not sent_now:
        return "dead-lettered"
    if sent_now:
        return "delivered"
    if any(row.state == "deferred" for row in written):
        return "deferred"
    if written and all(row.state == "suppressed" for row in written):
        return "suppressed"
    return "duplicate"  # nothing was owed: done before, by this record or a copy of it


def handed_off(stage: Stage, rows: Iterable[RecipientRow]) -> list[RecipientRow]:
    """The deferred rows this try handed to the next retry."""
    return [row for row in rows if row.state == "deferred" and row.attempt == stage.attempt + 1]


def retry_record(stage: Stage, rows: list[RecipientRow]) -> tuple[str, ProducerRecord]:
    """The retry topic and record for the recipients this try deferred, made from their rows'
    events: the same rows make the same record."""
    events = [parse_event(row.event) for row in rows]
    first = events[0]
    assert isinstance(first, Deferred), first
    record = RetryRecord(
        message_id=stage.message_id,
        attempt=stage.attempt + 1,
        due_at=first.next_try_at,
        deferred_at=first.at,
        owed=[row.recipient for row in rows],
        last_reply=first.reply,
        origin=stage.origin,
        email=stage.email,
    )
    return first.retry_topic, record.to_kafka()


def stored_event_record(message_id: str, row: RecipientRow) -> ProducerRecord | None:
    """The event a row keeps, ready to produce again; None for an earlier version's row. A
    row's state is its event's type (a deferral past the age limit is a bounced row)."""
    if row.event is None:
        return None
    return event_record(message_id, row.state, row.event)


def bounce_of(row: RecipientRow) -> Bounced | None:
    """A bounced row's event; None for any other row, or an earlier version's."""
    if row.state != "bounced" or row.event is None:
        return None
    event = parse_event(row.event)
    assert isinstance(event, Bounced), event
    return event


def dead_letter_reason(email: EmailRecord, state: DeliveryState) -> DeadLetterReason | None:
    """Why the email goes to the dead-letter topic, once no recipient is owed it any more and
    some never got it: expired, unsendable (the worker could not send it), or refused. None
    while a recipient is still owed it, and when none bounced (a suppressed recipient is no
    fault an operator could mend)."""
    rows = [state.recipients.get(recipient) for recipient in every_recipient(email)]
    if any(row is None or not row.final for row in rows):
        return None
    reasons = {bounce.reason for row in rows if row is not None and (bounce := bounce_of(row))}
    if not reasons:
        return None
    if "expired" in reasons:
        return "expired"
    if "local" in reasons:
        return "unsendable"
    return "refused"


def synthetic_reply(code: int, enhanced: str, text: str) -> Reply:
    """A reply in the worker's words where the server gave none (Postfix writes `4.4.2 lost
    connection with ...` the same way)."""
    return Reply(code=code, enhanced=enhanced, text=text)
