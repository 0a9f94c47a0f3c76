"""What every store of Idempotency-Keys promises the API: one row per key, claimed by one request
at a time, holding the answer once there is one; and the errors it raises."""

from __future__ import annotations

from typing import Protocol

from services.api.idempotency import KeyRow

TABLE = "idempotency_keys"
PRUNE_BATCH = 1000  # rows per delete: each holds its locks for about a millisecond


class IdempotencyStore(Protocol):
    """SQLite serves the API processes of one host; PostgreSQL those of every host, with the
    same methods, once open. `claim` is the token of the request that claims (a fresh one
    each time): a write for a claim that another request has taken over since changes nothing."""

    async def open(self) -> None:
        """Connect, and create the table if it is missing; shared.store.CannotOpenStore says
        why not."""
        ...

    async def claim(self, key: str, fingerprint: str, claim: str, now: float) -> KeyRow | None:
        """Claim a key that no row holds (None), or return the row that holds it."""
        ...

    async def take_over(
        self, row: KeyRow, fingerprint: str, claim: str, now: float, restart_window: bool
    ) -> bool:
        """Claim `row` over for this body, if no one else has since it was read."""
        ...

    async def finish(self, key: str, claim: str, status: int, body: bytes) -> None:
        """The claim's answer, kept for every retry with the same key and body."""
        ...

    async def interrupt(self, key: str, claim: str) -> None:
        """The claim ended without an answer to keep (503): the same body may claim it again."""
        ...

    async def release(self, key: str, claim: str) -> None:
        """Forget the key: nothing was queued (413, 422), so it may go with any body."""
        ...

    async def prune(self, older_than: float) -> int:
        """Delete the keys first claimed before `older_than` (seconds since the epoch)."""
        ...

    async def close(self) -> None: ...


class StoreUnavailable(Exception):
    """A call to the store failed (a locked or full file, a server away): the message says
    which store and why."""
