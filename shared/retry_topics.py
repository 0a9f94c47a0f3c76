"""The retry topics a deferred email waits in, and the record it waits as (docs/events.md).

One topic per delay of WORKER_RETRY_SCHEDULE, the last one reused, so that the records of one
partition fall due in offset order; pure functions of the settings and the clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from shared.events import (
    Position,
    ProducerRecord,
    Recipient,
    Reply,
    Timestamp,
    as_utc,
    json_object,
    recipient_address,
)
from shared.schema import (
    MAX_RECIPIENTS,
    EmailRecord,
    MessageId,
    PoisonRecord,
    describe,
    parse_record,
)

RETRY_SCHEMA_VERSION: Final = 1
DEFAULT_RETRY_SCHEDULE: Final = "1m,5m,15m,30m,60m"
# As long as email.send keeps its records by default (log.retention.hours=168).
RETRY_TOPIC_MIN_RETENTION: Final = timedelta(days=7)
# A record waits at most the age limit; the margin covers a worker stopped meanwhile.
RETRY_TOPIC_RETENTION_MARGIN: Final = timedelta(days=1)
UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600}
DURATION = re.compile(r"(\d{1,9})([smh]?)")
DURATION_EXAMPLE = "such as 30s, 15m or 24h"


@dataclass(frozen=True)
class RetryStep:
    label: str  # as the schedule writes it, and the end of its topic's name: "5m"
    delay: timedelta


RetrySchedule = tuple[RetryStep, ...]


def parse_duration(text: str, *, plain_seconds: bool = True) -> timedelta:
    """`90s`, `15m`, `24h` or, when `plain_seconds`, `86400`; ValueError saying what is wrong."""
    written = text.strip().lower()
    match = DURATION.fullmatch(written)
    if match is None:
        plain = " (or plain seconds: 86400)" if plain_seconds else ""
        raise ValueError(f"expected a duration {DURATION_EXAMPLE}{plain}, got {text!r}")
    number, unit = match.groups()
    if not unit and not plain_seconds:
        raise ValueError(f"{text!r} has no unit: write s, m or h after it, as in {number}s")
    delay = timedelta(seconds=int(number) * UNIT_SECONDS[unit or "s"])
    if not delay:
        raise ValueError(f"{text!r} is no time at all: it must be more than 0")
    return delay


def parse_schedule(text: str) -> RetrySchedule:
    """`1m,5m,15m,30m,60m`: the delay before each retry, the last one repeated; each label as
    written (lower case) names its topic."""
    labels = [label.strip().lower() for label in text.split(",")]
    if not text.strip() or not all(labels):
        raise ValueError(
            "expected delays separated by commas, each a number and s, m or h, such as "
            f"1m,5m,15m,30m,60m; got {text!r}"
        )
    try:
        return tuple(
            RetryStep(label, parse_duration(label, plain_seconds=False)) for label in labels
        )
    except ValueError as error:
        raise ValueError(f"in the schedule {text!r}: {error}") from None


def retry_topic(email_topic: str, step: RetryStep) -> str:
    return f"{email_topic}.retry-{step.label}"


def retry_topics(email_topic: str, schedule: RetrySchedule) -> list[str]:
    """Every topic of the schedule, each once, in the schedule's order."""
    return list(dict.fromkeys(retry_topic(email_topic, step) for step in schedule))


def step_for(attempt: int, schedule: RetrySchedule) -> RetryStep:
    """Retry n (1, 2, ...) waits the schedule's n-th delay, or its last when it has fewer."""
    if attempt < 1:
        raise ValueError(f"retries are counted from 1, got {attempt}")
    return schedule[min(attempt, len(schedule)) - 1]


def retry_topic_retention(max_age: timedelta) -> timedelta:
    """How long a retry topic must keep its records: longer than any of them waits."""
    return max(RETRY_TOPIC_MIN_RETENTION, max_age + RETRY_TOPIC_RETENTION_MARGIN)


@dataclass(frozen=True)
class Retry:
    """Try again: retry `attempt`, from `topic`, not before `due_at`."""

    attempt: int
    topic: str
    due_at: datetime


@dataclass(frozen=True)
class Expired:
    """No more tries: the next would fall past `deadline`, acceptance + the age limit."""

    deadline: datetime


def next_step(
    attempt: int,
    accepted_at: datetime,
    now: datetime,
    schedule: RetrySchedule,
    max_age: timedelta,
    *,
    email_topic: str,
) -> Retry | Expired:
    """What follows a deferral at `attempt` (0: the try from email.send): the next retry,
    or expiry when its due time would fall past `accepted_at + max_age`, counted from
    acceptance as Postfix's maximal_queue_lifetime is. Times without a zone are UTC."""
    if attempt < 0:
        raise ValueError(f"attempts are counted from 0 (the try from email.send), got {attempt}")
    step = step_for(attempt + 1, schedule)
    due_at = as_utc(now) + step.delay
    deadline = as_utc(accepted_at) + max_age
    if due_at > deadline:
        return Expired(deadline)
    return Retry(attempt + 1, retry_topic(email_topic, step), due_at)


class RetryRecord(BaseModel):
    """One record of a retry topic: the email of email.send embedded unchanged (the same
    bytes, so the same Message-ID), the recipients it still owes, and when to try again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = RETRY_SCHEMA_VERSION
    message_id: MessageId
    attempt: Annotated[int, Field(ge=1)]  # the retry this record is for: 1, 2, ...
    due_at: Timestamp
    deferred_at: Timestamp
    owed: Annotated[list[Recipient], Field(min_length=1, max_length=MAX_RECIPIENTS)]
    last_reply: Reply
    origin: Position  # the record of email.send the email came in
    email: EmailRecord

    @field_validator("last_reply")
    @classmethod
    def _transient(cls, reply: Reply) -> Reply:
        if not 400 <= reply.code < 500:
            raise ValueError(f"a deferral's reply is a 4xx, got {reply.code}")
        return reply

    @field_validator("email")
    @classmethod
    def _the_same_email(cls, email: EmailRecord, info: ValidationInfo) -> EmailRecord:
        message_id = info.data.get("message_id")
        if message_id is not None and email.message_id != message_id:
            raise ValueError(
                f"the email embedded is {email.message_id!r}, the record is for {message_id!r}"
            )
        recipients = {recipient_address(address) for address in email.recipients}
        strangers = [address for address in info.data.get("owed", []) if address not in recipients]
        if strangers:
            raise ValueError(f"owed names addresses the email is not for: {', '.join(strangers)}")
        return email

    def to_kafka(self) -> ProducerRecord:
        """Keyed by message id, as in email.send; the `due_at` header repeats the field, so
        that a consumer can wait for it without reading the JSON."""
        fields = self.model_dump(mode="json", exclude={"email"})
        head = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
        _, email = self.email.to_kafka()
        value = head[:-1].encode() + b',"email":' + email + b"}"
        headers = [
            ("schema_version", str(RETRY_SCHEMA_VERSION).encode()),
            ("due_at", fields["due_at"].encode()),
        ]
        return ProducerRecord(self.message_id.encode(), value, headers)


def parse_retry_record(value: bytes | None) -> RetryRecord:
    """A record of a retry topic, its email read as `parse_record` reads email.send's;
    PoisonRecord if it is not one this worker can deliver."""
    document = json_object(value, "retry record", PoisonRecord)
    version = document.get("schema_version")
    if version != RETRY_SCHEMA_VERSION:
        raise PoisonRecord(
            f"unknown schema_version {version!r}: this worker reads version "
            f"{RETRY_SCHEMA_VERSION} of retry records"
        )
    email = document.pop("email", None)
    if not isinstance(email, dict):
        raise PoisonRecord("the retry record has no email: expected the email.send record in it")
    try:
        document["email"] = parse_record(json.dumps(email, ensure_ascii=False).encode())
    except PoisonRecord as error:
        raise PoisonRecord(f"the retry record's email: {error}") from None
    try:
        return RetryRecord.model_validate(document)
    except ValidationError as error:
        raise PoisonRecord(
            f"the retry record does not match schema version {RETRY_SCHEMA_VERSION}: "
            f"{describe(error)}"
        ) from None


def due_at_header(headers: Iterable[tuple[str, bytes]]) -> datetime:
    """A retry record's due time from its `due_at` header, without reading its value."""
    values = [value for name, value in headers if name == "due_at"]
    if len(values) != 1:
        raise PoisonRecord(f"a retry record has one due_at header, this one has {len(values)}")
    try:
        return as_utc(datetime.fromisoformat(values[0].decode("ascii")))
    except (UnicodeDecodeError, ValueError):
        raise PoisonRecord(
            f"the due_at header {values[0]!r} is not a time such as 2026-11-25T09:31:00Z"
        ) from None
