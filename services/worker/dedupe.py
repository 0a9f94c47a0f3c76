"""The dedupe store: which message ids are finished (delivered or dead-lettered), so that a
record read again after a crash or a rebalance is skipped, never sent twice."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

Outcome = Literal["delivered", "dead-lettered"]


class DedupeStore(Protocol):
    """What the worker needs of a store. SQLite serves the workers of one host; a store shared
    by workers on several hosts (Redis, PostgreSQL) implements the same two methods."""

    async def outcome_of(self, message_id: str) -> Outcome | None: ...

    async def record(self, message_id: str, outcome: Outcome, source: str) -> None: ...


class SqliteDedupeStore:
    """A SQLite file in WAL mode, shared safely by every worker process on this machine.

    synchronous=NORMAL: a record survives the worker being killed (SIGKILL); only a power
    loss in the instant after a write could lose it. Calls run on the event loop itself: a write
    takes tens of microseconds, and making it in the same step that reads the server's 250 keeps
    the one window where a crash causes a duplicate (after the 250, before this write) as short
    as it can be; a hop to a thread would widen it.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # A short wait for another worker's write lock: the event loop must not stall; a
        # write that still finds it locked is retried by the processor.
        self._db.execute("PRAGMA busy_timeout=100")
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS finished_emails (
                   message_id  TEXT PRIMARY KEY,
                   outcome     TEXT NOT NULL,
                   source      TEXT NOT NULL,  -- topic-partition@offset it was finished at
                   finished_at TEXT NOT NULL
               ) WITHOUT ROWID"""
        )

    async def outcome_of(self, message_id: str) -> Outcome | None:
        query = "SELECT outcome FROM finished_emails WHERE message_id = ?"
        row = self._db.execute(query, (message_id,)).fetchone()
        return None if row is None else row[0]

    async def record(self, message_id: str, outcome: Outcome, source: str) -> None:
        row = (message_id, outcome, source, datetime.now(UTC).isoformat())
        self._db.execute("INSERT OR IGNORE INTO finished_emails VALUES (?, ?, ?, ?)", row)

    def close(self) -> None:
        self._db.close()
