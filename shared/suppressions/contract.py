"""What every suppression list promises its users: the worker asks whether addresses are
suppressed and adds the ones that bounced; the API lists them a page at a time and lifts one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

TABLE = "suppressions"
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Suppression:
    """Why an address is not sent to: the reply that refused it, to which email, and when."""

    address: str  # lower-cased
    reply: str  # the server's reply to RCPT, as the worker logs it: "550 5.1.1 ..."
    message_id: str  # the email whose bounce added it
    created_at: datetime  # in UTC


@dataclass(frozen=True)
class SuppressionPage:
    """Suppressions in the order of their addresses, after a given address."""

    suppressions: list[Suppression]
    next_after: str | None  # `after` for the next page; None when this page is the last


class SuppressionList(Protocol):
    """The addresses that bounced for good (smtp_failures.suppresses), in the store that every
    worker and API process of a deployment shares. Addresses are compared lower-cased, as
    relays and mailbox providers treat them. Both writes are idempotent, so a call whose
    answer was lost may simply be made again."""

    async def suppressed(self, addresses: Iterable[str]) -> dict[str, Suppression]:
        """The suppressed ones among `addresses`, keyed as given (in one query)."""
        ...

    async def suppress(self, address: str, reply: str, message_id: str) -> None:
        """Suppress an address; if it already is, its first reason stays."""
        ...

    async def page(self, after: str | None, limit: int) -> SuppressionPage:
        """Up to `limit` (1 to MAX_PAGE_SIZE) suppressions whose addresses sort after
        `after` (None: from the first)."""
        ...

    async def lift(self, address: str) -> bool:
        """Send to the address again; False when it was not suppressed."""
        ...

    async def close(self) -> None: ...


class SuppressionsUnavailable(Exception):
    """A call to the suppression list failed (a locked or full file, a server away): the
    message says which store and why."""


def normalized(address: str) -> str:
    """The form an address is kept and compared in."""
    return address.lower()


def checked_page_size(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(
            f"a page holds 1 to {MAX_PAGE_SIZE} suppressions; ask for that many, not {limit}"
        )
    return limit
