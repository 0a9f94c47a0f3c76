"""What `email.events` says happened to each email, as the chaos harness reads it back from the
beginning, and what it must agree with: the API's 202s and the copies the sink stored. Pure.

Each recipient of an accepted email ends with exactly one distinct final event (sent, bounced or
suppressed: one id per recipient, `shared.events.final_event_id`), of the type the sink shows: a
copy in the sink is `sent`, a recipient without one `bounced` or `suppressed`. An event may be
read more than once (a record read again builds its events again), always with the same bytes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.events import (
    Accepted,
    Bounced,
    DeadLettered,
    Deferred,
    Sent,
    Suppressed,
    UnreadableEvent,
    parse_event,
)

Pair = tuple[str, str]  # (message id, recipient address in lower case)
SHOWN = 20  # of each kind of problem, the details name this many


def pair(message_id: str, address: str) -> Pair:
    """How the ledger, the Driver and the sink's envelopes name one recipient of one email."""
    return message_id, address.lower()


@dataclass(frozen=True)
class Final:
    """A recipient's final event, as first read."""

    event_id: str
    type: str  # sent, bounced or suppressed
    attempt: int | None  # the try that ended it (0: email.send); None for suppressed
    at: datetime
    reason: str | None = None  # a bounce's: address, message, expired or local


@dataclass
class EventLedger:
    """Everything read from email.events, by event id and by recipient; `add` one record's
    value at a time, in any order."""

    read: int = 0  # records read, copies included
    unreadable: list[str] = field(default_factory=list)  # why each could not be read
    bodies: dict[str, set[bytes]] = field(default_factory=dict)  # event id -> its values
    accepted: set[str] = field(default_factory=set)  # message ids with an accepted event
    finals: dict[Pair, dict[str, Final]] = field(default_factory=dict)  # by event id
    deferrals: dict[Pair, dict[str, datetime]] = field(default_factory=dict)  # id -> at
    dead_lettered: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> reason
    # Events but `accepted`, read and distinct: `accepted` has two writers by design (the API
    # at the 202, the worker when it first reads the record), so its copies say nothing.
    published_again: dict[str, int] = field(default_factory=dict)  # event id -> times read

    def add(self, value: bytes | None) -> None:
        self.read += 1
        try:
            event = parse_event(value)
        except UnreadableEvent as error:
            self.unreadable.append(str(error))
            return
        self.bodies.setdefault(event.event_id, set()).add(value or b"")
        if not isinstance(event, Accepted):
            self.published_again[event.event_id] = self.published_again.get(event.event_id, 0) + 1
        match event:
            case Accepted():
                self.accepted.add(event.message_id)
            case Sent():
                self._final(
                    event.message_id,
                    event.recipient,
                    Final(event.event_id, event.type, event.attempt, event.at),
                )
            case Bounced():
                self._final(
                    event.message_id,
                    event.recipient,
                    Final(event.event_id, event.type, event.attempt, event.at, event.reason),
                )
            case Suppressed():
                self._final(
                    event.message_id,
                    event.recipient,
                    Final(event.event_id, event.type, None, event.at),
                )
            case Deferred():
                deferrals = self.deferrals.setdefault(pair(event.message_id, event.recipient), {})
                deferrals.setdefault(event.event_id, event.at)
            case DeadLettered():
                reasons = self.dead_lettered.setdefault(event.message_id, {})
                reasons.setdefault(event.event_id, event.reason)

    def _final(self, message_id: str, recipient: str, final: Final) -> None:
        # The first read of an id is kept: a second body under it is a conflict, found apart.
        self.finals.setdefault(pair(message_id, recipient), {}).setdefault(final.event_id, final)

    @property
    def copies(self) -> int:
        """Events the worker published again (after a crash, a rebalance, a lost ack): those
        read, less their distinct ids; `accepted` events left out."""
        return sum(self.published_again.values()) - len(self.published_again)

    @property
    def conflicting(self) -> list[str]:
        """Event ids read with two different bodies: two different events under one id."""
        return sorted(event_id for event_id, bodies in self.bodies.items() if len(bodies) > 1)

    @property
    def deferred_count(self) -> int:
        """Distinct deferred events: each a recipient handed to a retry topic."""
        return sum(len(deferrals) for deferrals in self.deferrals.values())

    def final_of(self, recipient: Pair) -> Final | None:
        """The recipient's final event when it has exactly one, else None."""
        finals = self.finals.get(recipient, {})
        return next(iter(finals.values())) if len(finals) == 1 else None

    def deferred_at(self, recipient: Pair) -> list[float]:
        """When each of the recipient's distinct deferrals happened, as Unix times."""
        return sorted(at.timestamp() for at in self.deferrals.get(recipient, {}).values())


def ledger_of(values: Iterable[bytes | None]) -> EventLedger:
    ledger = EventLedger()
    for value in values:
        ledger.add(value)
    return ledger


FINAL_WITHOUT_A_COPY = frozenset({"bounced", "suppressed"})


@dataclass(frozen=True)
class EventProblems:
    """What the events got wrong; none of it may happen, whatever the faults."""

    no_final: list[Pair]  # a recipient of an accepted email with no final event
    several_finals: list[Pair]  # with more than one distinct final event
    not_what_the_sink_shows: list[tuple[Pair, str]]  # (recipient, its final event's type)
    strangers: list[Pair]  # a final event for a recipient of no email the API accepted
    conflicting_ids: list[str]  # an event id read with two different bodies
    unreadable: list[str]
    no_accepted_event: list[str]  # an accepted email without its accepted event

    @property
    def count(self) -> int:
        return (
            len(self.no_final) + len(self.several_finals) + len(self.not_what_the_sink_shows)
            + len(self.strangers) + len(self.conflicting_ids) + len(self.unreadable)
            + len(self.no_accepted_event)
        )  # fmt: skip

    def details(self) -> dict[str, Any]:
        """For the results file: how many of each, and the first few."""
        kinds: dict[str, Sequence[object]] = {
            "no_final_event": self.no_final,
            "several_final_events": self.several_finals,
            "final_event_not_what_the_sink_shows": self.not_what_the_sink_shows,
            "final_event_for_no_accepted_recipient": self.strangers,
            "event_ids_with_two_bodies": self.conflicting_ids,
            "unreadable_events": self.unreadable,
            "accepted_without_accepted_event": self.no_accepted_event,
        }
        return {
            name: {"count": len(found), "first": list(found[:SHOWN])}
            for name, found in kinds.items()
        }


def event_problems(
    ledger: EventLedger, recipients: Mapping[str, Iterable[str]], copies: Collection[Pair]
) -> EventProblems:
    """Check the ledger against the API's 202s (message id -> its recipients) and the recipients
    the sink stored a copy for."""
    owed = {
        pair(message_id, address)
        for message_id, addresses in recipients.items()
        for address in addresses
    }
    mismatched = []
    for recipient, finals in sorted(ledger.finals.items()):
        if recipient not in owed:
            continue
        types = sorted({final.type for final in finals.values()})
        for final_type in types:
            if recipient in copies:
                shown_by_sink = final_type == "sent"
            else:
                shown_by_sink = final_type in FINAL_WITHOUT_A_COPY
            if not shown_by_sink:
                mismatched.append((recipient, final_type))
    return EventProblems(
        no_final=sorted(owed - ledger.finals.keys()),
        several_finals=sorted(r for r, finals in ledger.finals.items() if len(finals) > 1),
        not_what_the_sink_shows=mismatched,
        strangers=sorted(ledger.finals.keys() - owed),
        conflicting_ids=ledger.conflicting,
        unreadable=ledger.unreadable,
        no_accepted_event=sorted(recipients.keys() - ledger.accepted),
    )


def unsettled(ledger: EventLedger, recipients: Mapping[str, Iterable[str]]) -> int:
    """Recipients of accepted emails still without a final event: the events are settled at 0."""
    return sum(
        1
        for message_id, addresses in recipients.items()
        for address in addresses
        if pair(message_id, address) not in ledger.finals
    )


def never_deferred(ledger: EventLedger, recipients: Iterable[Pair]) -> list[Pair]:
    """Of these recipients, those without a single deferred event."""
    return sorted(recipient for recipient in recipients if not ledger.deferrals.get(recipient))


@dataclass(frozen=True)
class Expiry:
    """How the emails that outlived WORKER_MAX_RETRY_AGE ended, against how they must: each
    expiring recipient bounced (expired), its email dead-lettered (expired), once, in the
    dead-letter topic, and no other email there."""

    not_expired: list[tuple[Pair, str]]  # (recipient, how its final event ended it)
    not_dead_lettered: list[str]  # no dead_lettered event with reason expired
    missing_in_dlq: list[str]  # no record in the dead-letter topic
    unexpected_in_dlq: list[str]  # in the dead-letter topic, but no expiring recipient

    @property
    def count(self) -> int:
        return (
            len(self.not_expired) + len(self.not_dead_lettered) + len(self.missing_in_dlq)
            + len(self.unexpected_in_dlq)
        )  # fmt: skip


def expiry(ledger: EventLedger, expiring: Iterable[Pair], dead_letters: Collection[str]) -> Expiry:
    """`expiring`: the recipients the sink defers for longer than the age limit; `dead_letters`:
    the message ids of the dead-letter topic's records."""
    expiring = sorted(set(expiring))
    expired_emails = {message_id for message_id, _ in expiring}
    not_expired = []
    for recipient in expiring:
        final = ledger.final_of(recipient)
        if final is None or final.type != "bounced" or final.reason != "expired":
            ended = "no single final event" if final is None else f"{final.type} ({final.reason})"
            not_expired.append((recipient, ended))
    return Expiry(
        not_expired=not_expired,
        not_dead_lettered=sorted(
            message_id
            for message_id in expired_emails
            if "expired" not in ledger.dead_lettered.get(message_id, {}).values()
        ),
        missing_in_dlq=sorted(expired_emails - set(dead_letters)),
        unexpected_in_dlq=sorted(set(dead_letters) - expired_emails),
    )
