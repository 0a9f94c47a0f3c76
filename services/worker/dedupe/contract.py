"""What every dedupe store promises the worker: the state it keeps of each email, the methods
that read and write it, and the one error that says a store cannot be opened."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal, Protocol

Outcome = Literal["delivered", "dead-lettered"]
PRUNE_BATCH = 1000  # rows per delete: each holds its locks for about a millisecond


@dataclass(frozen=True)
class DeliveryState:
    """What the store knows of one email."""

    finished: Outcome | None  # None: some recipients are still owed it
    accepted: frozenset[str] = frozenset()  # recipients the server took (250) in earlier tries


class DedupeStore(Protocol):
    """What the worker needs of a store. SQLite serves the workers of one host; PostgreSQL
    serves the workers of every host, with the same methods.

    Both writes are idempotent and the first outcome recorded stays, so a write whose result
    was lost (a connection dropped after the commit) may simply be made again."""

    async def state_of(self, message_id: str) -> DeliveryState | None: ...

    async def record_accepted(
        self, message_id: str, recipients: Collection[str], source: str
    ) -> None: ...

    async def record(self, message_id: str, outcome: Outcome, source: str) -> None: ...


class CannotOpenDedupeStore(Exception):
    """The store named by DEDUPE_URL cannot be used; the message says why and what to change."""
