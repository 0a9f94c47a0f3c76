"""A read model in memory for the API's unit tests: the contract of services/api/status_store
(tests/unit/api/test_status_store.py holds it to it), and a switch that makes every call fail
as a store that is away would."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from services.api.status_store import EventRow, StatusStoreUnavailable


class MemoryStatusStore:
    def __init__(self) -> None:
        self.rows: dict[str, tuple[EventRow, float]] = {}  # by event id: the row, applied_at
        self.unavailable = False
        self.opened = self.closed = False
        self.batches = 0  # calls of add that kept something

    def _check(self) -> None:
        if self.unavailable:
            raise StatusStoreUnavailable("the test's read model is away")

    async def open(self) -> None:
        self.opened = True

    async def add(self, rows: Sequence[EventRow]) -> None:
        self._check()
        if rows:
            self.batches += 1
        for row in rows:
            kept = self.rows.get(row.event_id)
            if kept is None:
                self.rows[row.event_id] = (row, time.time())
            elif kept[0].position is None and row.position is not None:
                self.rows[row.event_id] = (
                    dataclasses.replace(kept[0], position=row.position),
                    kept[1],
                )

    async def events_of(self, message_id: str) -> list[EventRow]:
        self._check()
        found = [row for row, _ in self.rows.values() if row.message_id == message_id]
        return sorted(
            found,
            key=lambda row: (
                row.position is not None,
                (row.position.partition, row.position.offset) if row.position else (0, 0),
                row.at,
                row.event_id,
            ),
        )

    async def prune(self, older_than: float) -> int:
        self._check()
        old = [
            event_id for event_id, (_, applied_at) in self.rows.items() if applied_at < older_than
        ]
        for event_id in old:
            del self.rows[event_id]
        return len(old)

    async def close(self) -> None:
        self.closed = True
