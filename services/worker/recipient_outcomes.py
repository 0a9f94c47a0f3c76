"""What one try of an email made of each recipient, as the rows the dedupe store keeps: sent,
bounced, suppressed, or deferred to the next retry topic (bounced as expired when the next try
would fall past WORKER_MAX_RETRY_AGE); and, from the rows the store holds, what the try owes,
what it publishes and whether the email ends in the dead-letter topic. No I/O here.

A stage is one try: attempt 0 reads the email from email.send, attempt n from the retry topic
of its n-th retry (docs/events.md). Each row keeps the event its outcome made, so a record
read again publishes the same bytes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from services.worker.dedupe import DeliveryState, RecipientRow
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
    event_headers,
    parse_event,
    recipient_address,
)
from shared.retry_topics import Expired, RetryRecord, RetrySchedule, next_step
from shared.schema import EmailRecord


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


def event_record(message_id: str, row: RecipientRow) -> ProducerRecord | None:
    """The event a row keeps, ready to produce again; None for an earlier version's row. A
    row's state is its event's type (a deferral past the age limit is a bounced row)."""
    if row.event is None:
        return None
    return ProducerRecord(message_id.encode(), row.event, event_headers(row.state))


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
