"""What every store of the read model promises the API: the events of email.events kept once
each by id, in one transaction per batch, and an email's events read back in order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.api.status import EventPosition
from shared.events import Event

TABLE = "email_events"
PRUNE_BATCH = 1000  # rows per delete: each holds its locks for about a millisecond


@dataclass(frozen=True)
class EventRow:
    """One event as the read model keeps it: `body` is its JSON as the topic has it, byte for
    byte; `position` its place in email.events, None for the `accepted` event the API wrote
    itself before its 202 (the status consumer fills it in when it reads that event's copy)."""

    event_id: str
    message_id: str
    type: str
    recipient: str | None
    at: datetime
    body: str
    position: EventPosition | None

    @classmethod
    def of(cls, event: Event, body: bytes, position: EventPosition | None) -> EventRow:
        return cls(
            event_id=event.event_id,
            message_id=event.message_id,
            type=event.type,
            recipient=getattr(event, "recipient", None),
            at=event.at,
            body=body.decode("utf-8"),
            position=position,
        )


def first_of_each(rows: Sequence[EventRow]) -> list[EventRow]:
    """The rows with an id not seen before in `rows`: a batch may hold copies of one event."""
    seen: set[str] = set()
    first = []
    for row in rows:
        if row.event_id not in seen:
            seen.add(row.event_id)
            first.append(row)
    return first


class StatusStore(Protocol):
    """SQLite serves the API processes of one host; PostgreSQL those of every host, with the
    same methods, once open. Writes are idempotent: a batch applied again changes nothing."""

    async def open(self) -> None:
        """Connect, and create the table if it is missing; shared.store.CannotOpenStore says
        why not."""
        ...

    async def add(self, rows: Sequence[EventRow]) -> None:
        """Keep each event whose id is new, all in one transaction. An event kept already stays
        as it was, except that the `accepted` event the API wrote itself gets the position of
        its first copy read from the topic."""
        ...

    async def events_of(self, message_id: str) -> list[EventRow]:
        """The email's events in the order they were published: the API's own `accepted`
        first, then by their offset in email.events (one email's events share a partition)."""
        ...

    async def prune(self, older_than: float) -> int:
        """Delete the events applied before `older_than` (seconds since the epoch)."""
        ...

    async def close(self) -> None: ...


class StatusStoreUnavailable(Exception):
    """A call to the store failed (a locked or full file, a server away): the message says
    which store and why."""
