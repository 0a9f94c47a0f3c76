"""Events as the worker and the API write them, for the chaos harness's unit tests: one function
per type, each giving the bytes `email.events` would hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.events import Accepted as AcceptedEvent
from shared.events import (
    AcceptedRecipient,
    Bounced,
    BounceReason,
    DeadLettered,
    Deferred,
    Position,
    Reply,
    Sent,
    Suppressed,
    Suppression,
    accepted_event_id,
)

START = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
MAIN = Position(topic="email.send", partition=0, offset=7)
RETRY = Position(topic="email.send.retry-2s", partition=0, offset=3)
OK = Reply(code=250, enhanced="2.0.0", text="Ok: queued as 4bXy1")
LATER = Reply(code=450, enhanced="4.2.0", text="Simulated deferral, try again later")
NO_SUCH_MAILBOX = Reply(code=550, enhanced="5.1.1", text="Simulated bounce: no such mailbox")


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def accepted(message_id: str, *recipients: str) -> bytes:
    event = AcceptedEvent.model_validate(
        {
            "message_id": message_id,
            "at": START,
            "record": MAIN,
            "from": "Chaos <chaos@example.com>",
            "subject": "chaos",
            "tags": [],
            "recipients": [AcceptedRecipient(address=r, kind="to") for r in recipients],
        }
    )
    assert event.event_id == accepted_event_id(message_id, MAIN.partition, MAIN.offset)
    return event.to_kafka().value


def sent(message_id: str, recipient: str, seconds: float = 1.0, attempt: int = 0) -> bytes:
    return Sent(
        message_id=message_id, at=at(seconds), record=MAIN if attempt == 0 else RETRY,
        recipient=recipient, attempt=attempt, reply=OK,
    ).to_kafka().value  # fmt: skip


def deferred(message_id: str, recipient: str, seconds: float = 1.0, attempt: int = 0) -> bytes:
    return Deferred(
        message_id=message_id, at=at(seconds), record=MAIN if attempt == 0 else RETRY,
        recipient=recipient, attempt=attempt, reply=LATER,
        next_try_at=at(seconds + 2), retry_topic="email.send.retry-2s",
    ).to_kafka().value  # fmt: skip


def bounced(
    message_id: str,
    recipient: str,
    reason: BounceReason = "address",
    seconds: float = 1.0,
    attempt: int = 0,
) -> bytes:
    return Bounced(
        message_id=message_id, at=at(seconds), record=MAIN if attempt == 0 else RETRY,
        recipient=recipient, attempt=attempt, reason=reason, suppressed=reason == "address",
        reply=LATER if reason == "expired" else NO_SUCH_MAILBOX,
    ).to_kafka().value  # fmt: skip


def suppressed(message_id: str, recipient: str, because_of: str) -> bytes:
    return Suppressed(
        message_id=message_id, at=at(1), record=MAIN, recipient=recipient,
        suppression=Suppression(since=START, reply=NO_SUCH_MAILBOX, message_id=because_of),
    ).to_kafka().value  # fmt: skip


def dead_lettered(message_id: str, reason: str = "expired") -> bytes:
    return (
        DeadLettered.model_validate(
            {
                "message_id": message_id,
                "at": at(40),
                "record": RETRY,
                "reason": reason,
                "dead_letter": Position(topic="email.send.dlq", partition=0, offset=0),
            }
        )
        .to_kafka()
        .value
    )
