"""Events of one email for the API's tests, built as the worker builds them: accepted with its
recipients, then sent, deferred, bounced, suppressed or dead-lettered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.api.status import EventPosition, KnownEvent
from shared.events import (
    Accepted,
    AcceptedRecipient,
    Bounced,
    BounceReason,
    DeadLettered,
    Deferred,
    Event,
    Position,
    RecipientKind,
    Reply,
    Sent,
    Suppressed,
    Suppression,
)

MESSAGE_ID = "0b5e1c2a-8f0e-5a55-9c4e-3f1d2b7a9e10"
ACCEPTED_AT = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
MAIN = Position(topic="email.send", partition=1, offset=42)
RETRY_1M = Position(topic="email.send.retry-1m", partition=1, offset=7)
OK = Reply(code=250, enhanced="2.0.0", text="Ok: queued as 4bXy1")
GREYLISTED = Reply(code=451, enhanced="4.7.1", text="Greylisted, try again in 60 seconds")
NO_SUCH_MAILBOX = Reply(code=550, enhanced="5.1.1", text="No such mailbox")
MESSAGE_REFUSED = Reply(code=554, enhanced="5.6.0", text="Message refused")


def at(seconds: float) -> datetime:
    """`seconds` after the email was accepted."""
    return ACCEPTED_AT + timedelta(seconds=seconds)


def accepted(*recipients: str | tuple[str, RecipientKind], record: Position = MAIN) -> Accepted:
    listed = [
        AcceptedRecipient(address=r, kind="to")
        if isinstance(r, str)
        else AcceptedRecipient(address=r[0], kind=r[1])
        for r in recipients
    ]
    return Accepted(
        message_id=MESSAGE_ID,
        at=ACCEPTED_AT,
        record=record,
        sender="Shop <shop@example.com>",
        subject="Your order",
        tags=["order"],
        recipients=listed,
    )


def sent(recipient: str, attempt: int = 0, seconds: float = 1) -> Sent:
    return Sent(
        message_id=MESSAGE_ID,
        at=at(seconds),
        record=MAIN if attempt == 0 else RETRY_1M,
        recipient=recipient,
        attempt=attempt,
        reply=OK,
    )


def deferred(recipient: str, attempt: int = 0, seconds: float = 1, wait: float = 60) -> Deferred:
    return Deferred(
        message_id=MESSAGE_ID,
        at=at(seconds),
        record=MAIN if attempt == 0 else RETRY_1M,
        recipient=recipient,
        attempt=attempt,
        reply=GREYLISTED,
        next_try_at=at(seconds + wait),
        retry_topic="email.send.retry-1m",
    )


def bounced(
    recipient: str, reason: BounceReason = "address", attempt: int = 0, seconds: float = 1
) -> Bounced:
    return Bounced(
        message_id=MESSAGE_ID,
        at=at(seconds),
        record=MAIN if attempt == 0 else RETRY_1M,
        recipient=recipient,
        attempt=attempt,
        reply=GREYLISTED if reason == "expired" else
        MESSAGE_REFUSED if reason == "message" else NO_SUCH_MAILBOX,
        reason=reason,
        suppressed=reason == "address",
    )  # fmt: skip


def suppressed(recipient: str, seconds: float = 1) -> Suppressed:
    return Suppressed(
        message_id=MESSAGE_ID,
        at=at(seconds),
        record=MAIN,
        recipient=recipient,
        suppression=Suppression(
            since=at(-3600), reply=NO_SUCH_MAILBOX, message_id="an-earlier-email"
        ),
    )


def dead_lettered(seconds: float = 2) -> DeadLettered:
    return DeadLettered(
        message_id=MESSAGE_ID,
        at=at(seconds),
        record=MAIN,
        reason="refused",
        dead_letter=Position(topic="email.send.dlq", partition=1, offset=3),
    )


def known(*events: Event) -> list[KnownEvent]:
    """The events as the read model holds them once read from email.events: offsets 100, 101..."""
    return [
        KnownEvent(event, EventPosition(partition=1, offset=100 + number))
        for number, event in enumerate(events)
    ]
