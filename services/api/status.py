"""What an email's events say about it now: each recipient's state, the email's status, and the
answer of `GET /emails/{id}`. Pure: the events come from the read model, `now` from the caller.

Duplicated events (the same event_id) count once. A recipient's story ends at its first final
event (sent, bounced, suppressed): anything said of it later changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.events import (
    Accepted,
    Bounced,
    BounceReason,
    DeadLettered,
    Deferred,
    Event,
    EventType,
    Position,
    RecipientKind,
    Reply,
    Sent,
    Suppressed,
)

RecipientState = Literal["queued", "deferred", "sent", "bounced", "suppressed"]
EmailState = Literal[
    "queued", "sending", "delivered", "partly_delivered", "deferred", "bounced", "suppressed",
    "failed",
]  # fmt: skip
FINAL_STATES: Final[frozenset[RecipientState]] = frozenset({"sent", "bounced", "suppressed"})
# Bounces that say the email itself could not go (or could not go in time), not an address.
FAILING_REASONS: Final[frozenset[BounceReason]] = frozenset({"message", "expired", "local"})


class EventPosition(BaseModel):
    """Where an event is in the events topic (email.events): `email.events-1@97`."""

    model_config = ConfigDict(frozen=True)

    partition: int
    offset: int


@dataclass(frozen=True)
class KnownEvent:
    """An event as the read model holds it. `position` is None for the `accepted` event the
    API wrote itself before its 202, until the status consumer reads its copy from the topic."""

    event: Event
    position: EventPosition | None


class RecipientStatus(BaseModel):
    address: str = Field(description="As the SMTP envelope names it: no display name")
    kind: RecipientKind | None = Field(
        description="to, cc or bcc; null when the `accepted` event is not (or no longer) known"
    )
    state: RecipientState
    last_reply: Reply | None = Field(
        description="The server's last reply about this recipient; for `suppressed`, the "
        "reply that put the address on the suppression list"
    )
    attempts: int = Field(description="Tries that got a reply (or failed) so far")
    next_try_at: datetime | None = Field(description="When a deferred recipient is tried next")


class HistoryEntry(BaseModel):
    at: datetime
    type: EventType
    recipient: str | None
    reply: Reply | None
    attempt: int | None
    record: Position = Field(
        description="The record whose processing made this happen: email.send or a retry topic"
    )
    event: EventPosition | None = Field(
        description="Where the event is in the events topic; null for the `accepted` event "
        "the API wrote itself, until the status consumer has read it"
    )


class EmailStatus(BaseModel):
    """The answer of `GET /emails/{id}`."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    status: EmailState
    sender: str | None = Field(alias="from")
    subject: str | None
    tags: list[str]
    created_at: datetime | None
    recipients: list[RecipientStatus]
    history: list[HistoryEntry]


@dataclass
class _Recipient:
    address: str
    kind: RecipientKind | None
    state: RecipientState = "queued"
    last_reply: Reply | None = None
    attempts: set[int] = field(default_factory=set)
    last_deferral: int = -1
    next_try_at: datetime | None = None
    bounce_reason: BounceReason | None = None

    def apply(self, event: Sent | Deferred | Bounced | Suppressed) -> None:
        if self.state in FINAL_STATES:
            return  # the first ending applied wins
        if isinstance(event, Deferred):
            if event.attempt < self.last_deferral:
                return  # an older deferral read after a newer one
            self.state, self.last_deferral = "deferred", event.attempt
            self.next_try_at = event.next_try_at
            self.attempts.add(event.attempt)
            self.last_reply = event.reply
            return
        self.next_try_at = None
        if isinstance(event, Suppressed):
            self.state, self.last_reply = "suppressed", event.suppression.reply
            return
        self.attempts.add(event.attempt)
        self.last_reply = event.reply
        if isinstance(event, Sent):
            self.state = "sent"
        else:
            self.state, self.bounce_reason = "bounced", event.reason

    def status(self) -> RecipientStatus:
        return RecipientStatus(
            address=self.address,
            kind=self.kind,
            state=self.state,
            last_reply=self.last_reply,
            attempts=len(self.attempts),
            next_try_at=self.next_try_at,
        )


def email_status(events: Iterable[KnownEvent], now: datetime) -> EmailStatus | None:
    """The email's status from its events, in the order given; None when there are none."""
    distinct: list[KnownEvent] = []
    seen: set[str] = set()
    for known in events:
        if known.event.event_id not in seen:
            seen.add(known.event.event_id)
            distinct.append(known)
    if not distinct:
        return None
    accepted = next((k.event for k in distinct if isinstance(k.event, Accepted)), None)
    recipients: dict[str, _Recipient] = {}
    if accepted is not None:
        for listed in accepted.recipients:
            recipients[listed.address] = _Recipient(listed.address, listed.kind)
    dead_lettered = False
    for known in distinct:
        event = known.event
        if isinstance(event, Sent | Deferred | Bounced | Suppressed):
            recipient = recipients.setdefault(event.recipient, _Recipient(event.recipient, None))
            recipient.apply(event)
        elif isinstance(event, DeadLettered):
            dead_lettered = True
    return EmailStatus(
        id=distinct[0].event.message_id,
        status=overall(list(recipients.values()), dead_lettered, now),
        sender=None if accepted is None else accepted.sender,
        subject=None if accepted is None else accepted.subject,
        tags=[] if accepted is None else list(accepted.tags),
        created_at=None if accepted is None else accepted.at,
        recipients=[recipient.status() for recipient in recipients.values()],
        history=[history_entry(known) for known in distinct],
    )


def overall(recipients: list[_Recipient], dead_lettered: bool, now: datetime) -> EmailState:
    """Every recipient ended: how. Otherwise: waiting for a retry, being tried, or not yet."""
    states = [recipient.state for recipient in recipients]
    if states and all(state in FINAL_STATES for state in states):
        if all(state == "sent" for state in states):
            return "delivered"
        if "sent" in states:
            return "partly_delivered"
        if any(recipient.bounce_reason in FAILING_REASONS for recipient in recipients):
            return "failed"
        return "bounced" if "bounced" in states else "suppressed"
    if dead_lettered:
        return "failed"  # in the dead-letter topic: no one will try the rest again
    if any(
        recipient.state == "deferred"
        and recipient.next_try_at is not None
        and recipient.next_try_at > now
        for recipient in recipients
    ):
        return "deferred"
    if any(state != "queued" for state in states):
        return "sending"  # a retry is due or under way
    return "queued"


def history_entry(known: KnownEvent) -> HistoryEntry:
    event = known.event
    recipient: str | None = None
    reply: Reply | None = None
    attempt: int | None = None
    if isinstance(event, Sent | Deferred | Bounced):
        recipient, reply, attempt = event.recipient, event.reply, event.attempt
    elif isinstance(event, Suppressed):
        recipient, reply = event.recipient, event.suppression.reply
    return HistoryEntry(
        at=event.at,
        type=event.type,
        recipient=recipient,
        reply=reply,
        attempt=attempt,
        record=event.record,
        event=known.position,
    )
