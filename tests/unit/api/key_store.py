"""A store of Idempotency-Keys in memory for the API's unit tests: the contract of
services/api/idempotency_store (tests/unit/api/test_idempotency_store.py holds it to it), and
a switch that makes every call fail as a store that is away would."""

from __future__ import annotations

import dataclasses

from services.api.idempotency import KeyRow
from services.api.idempotency_store import StoreUnavailable


class MemoryKeyStore:
    def __init__(self) -> None:
        self.rows: dict[str, KeyRow] = {}
        self.unavailable = False
        self.opened = self.closed = False

    def _check(self) -> None:
        if self.unavailable:
            raise StoreUnavailable("the test's store is away")

    async def open(self) -> None:
        self.opened = True

    async def claim(self, key: str, fingerprint: str, claim: str, now: float) -> KeyRow | None:
        self._check()
        if key in self.rows:
            return self.rows[key]
        self.rows[key] = KeyRow(key, fingerprint, "in_flight", claim, now, now)
        return None

    async def take_over(
        self, row: KeyRow, fingerprint: str, claim: str, now: float, restart_window: bool
    ) -> bool:
        self._check()
        current = self.rows.get(row.key)
        if current is None or current.claim != row.claim:
            return False
        created_at = now if restart_window else row.created_at
        self.rows[row.key] = KeyRow(row.key, fingerprint, "in_flight", claim, created_at, now)
        return True

    async def finish(self, key: str, claim: str, status: int, body: bytes) -> None:
        self._update(key, claim, state="done", status=status, body=body)

    async def interrupt(self, key: str, claim: str) -> None:
        row = self.rows.get(key)
        if row is not None and row.state == "in_flight":
            self._update(key, claim, state="interrupted")

    async def release(self, key: str, claim: str) -> None:
        self._check()
        if key in self.rows and self.rows[key].claim == claim:
            del self.rows[key]

    def _update(self, key: str, claim: str, **changes: object) -> None:
        self._check()
        row = self.rows.get(key)
        if row is not None and row.claim == claim:
            self.rows[key] = dataclasses.replace(row, **changes)  # type: ignore[arg-type]

    async def prune(self, older_than: float) -> int:
        self._check()
        expired = [key for key, row in self.rows.items() if row.created_at < older_than]
        for key in expired:
            del self.rows[key]
        return len(expired)

    async def close(self) -> None:
        self.closed = True
