"""What every dedupe store promises the worker: the state it keeps of each email and of each of
its recipients, the methods that read and write it, and the one error that says a store cannot
be opened.

The store is also the worker's outbox: each recipient's row keeps the `email.events` value its
outcome made, so an email read again after a crash publishes the same events, byte for byte,
without sending anything (docs/events.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal, Protocol, cast

Outcome = Literal["delivered", "dead-lettered"]
# sent, bounced and suppressed end a recipient; deferred hands it to a retry topic.
RecipientState = Literal["sent", "bounced", "suppressed", "deferred"]
FINAL_STATES: frozenset[RecipientState] = frozenset({"sent", "bounced", "suppressed"})
PRUNE_BATCH = 1000  # rows per delete: each holds its locks for about a millisecond


@dataclass(frozen=True)
class RecipientRow:
    """One recipient's outcome, as the stage that reached it wrote it."""

    recipient: str  # as events name it (shared.events.recipient_address)
    state: RecipientState
    # A final row: the attempt that ended it (0 is email.send, n the n-th retry). A deferred
    # row: the attempt that may try it next; only that stage may send to it, or move it on.
    attempt: int
    # The email.events value this outcome made; None for a row an earlier version wrote
    # (it kept which recipients took an email, but made no events).
    event: bytes | None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True)
class DeliveryState:
    """What the store knows of one email."""

    # An earlier version's finished email (the whole email, none of its recipients owed); a
    # version with events marks only a dead-lettered email here.
    finished: Outcome | None = None
    recipients: Mapping[str, RecipientRow] = field(default_factory=dict)
    dead_lettered: bytes | None = None  # the dead_lettered event's value, once dead-lettered


class DedupeStore(Protocol):
    """What the worker needs of a store. SQLite serves the workers of one host; PostgreSQL
    serves the workers of every host, with the same methods.

    Every write is idempotent and decided in the store, so one whose answer was lost (a
    connection dropped after the commit) may simply be made again, and two workers writing
    the same email at once (a rebalance) leave one outcome per recipient."""

    async def state_of(self, message_id: str) -> DeliveryState | None:
        """None when the store has never heard of the email."""
        ...

    async def record(
        self, message_id: str, rows: Sequence[RecipientRow], stage: int, source: str
    ) -> DeliveryState:
        """Write the outcomes the stage with attempt `stage` reached, in one transaction.

        A row is written where its recipient has no row yet, or has a deferred row whose
        attempt is `stage` (the stage owns it). Anything else stays as it is: a final row is
        never changed, and a deferred row another stage owns is not taken from it. Returns
        the email's state after the write, which the caller publishes from: for the
        recipients in `rows`, the row that won. Each recipient appears in `rows` at most
        once (a ValueError otherwise)."""
        ...

    async def record_dead_lettered(
        self, message_id: str, event: bytes | None, source: str
    ) -> DeliveryState:
        """Mark the email dead-lettered with its event, and return its state. The first mark
        stays, as does an earlier version's finished outcome."""
        ...


class CannotOpenDedupeStore(Exception):
    """The store named by DEDUPE_URL cannot be used; the message says why and what to change."""


def in_write_order(rows: Sequence[RecipientRow]) -> list[RecipientRow]:
    """`rows` sorted by recipient, so that two writers of one email lock its rows in the same
    order; a ValueError if a recipient is given twice, whose second row could not be told
    apart from a conflicting writer's. (The message names no address: it may reach a log.)"""
    ordered = sorted(rows, key=lambda row: row.recipient)
    if any(first.recipient == second.recipient for first, second in pairwise(ordered)):
        raise ValueError("a recipient is given twice in one write of the dedupe store")
    return ordered


def delivery_state(rows: Sequence[Sequence[Any]]) -> DeliveryState | None:
    """The state read by a store's query: a row (outcome, dead_lettered, recipient, state,
    attempt, event) per recipient, or one without a recipient for an email that has none; no
    row at all for an email the store never heard of."""
    if not rows:
        return None
    recipients = {
        recipient: RecipientRow(recipient, cast(RecipientState, state), attempt, event)
        for _, _, recipient, state, attempt, event in rows
        if recipient is not None
    }
    finished, dead_lettered = rows[0][0], rows[0][1]
    return DeliveryState(cast(Outcome | None, finished), recipients, dead_lettered)
