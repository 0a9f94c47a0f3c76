"""The dedupe store in a SQLite file: the workers of one host share it, each process with its
own connection, in WAL mode."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Collection
from pathlib import Path

from services.worker.dedupe.contract import PRUNE_BATCH, DeliveryState, Outcome


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
        self._path = path
        self._db = _connect(path)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                """CREATE TABLE IF NOT EXISTS emails (
                       message_id TEXT PRIMARY KEY,
                       outcome    TEXT,  -- delivered | dead-lettered; NULL while some are owed
                       accepted   TEXT NOT NULL,  -- recipients the server took, one a line
                       source     TEXT NOT NULL,  -- topic-partition and offset of the last write
                       updated_at REAL NOT NULL  -- seconds since the epoch, for pruning
                   ) WITHOUT ROWID"""
            )
            self._adopt_finished_emails()
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _adopt_finished_emails(self) -> None:
        """Earlier versions kept only finished ids, in finished_emails: carry them over once."""
        known = self._db.execute(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'finished_emails'"
        ).fetchone()
        if known is not None:
            self._db.execute(
                """INSERT OR IGNORE INTO emails
                   SELECT message_id, outcome, '', source, unixepoch(finished_at)
                   FROM finished_emails"""
            )
            self._db.execute("DROP TABLE finished_emails")

    async def state_of(self, message_id: str) -> DeliveryState | None:
        query = "SELECT outcome, accepted FROM emails WHERE message_id = ?"
        row = self._db.execute(query, (message_id,)).fetchone()
        if row is None:
            return None
        outcome, accepted = row
        return DeliveryState(outcome, frozenset(accepted.split("\n")) - {""})

    async def record_accepted(
        self, message_id: str, recipients: Collection[str], source: str
    ) -> None:
        """Add recipients the server took while others are still owed the email."""
        self._db.execute(
            """INSERT INTO emails VALUES (?, NULL, ?, ?, ?)
               ON CONFLICT (message_id) DO UPDATE
               SET accepted = accepted || char(10) || excluded.accepted,
                   source = excluded.source, updated_at = excluded.updated_at
               WHERE outcome IS NULL""",
            (message_id, "\n".join(recipients), source, time.time()),
        )

    async def record(self, message_id: str, outcome: Outcome, source: str) -> None:
        """The email is finished; the first outcome recorded stays."""
        self._db.execute(
            """INSERT INTO emails VALUES (?, ?, '', ?, ?)
               ON CONFLICT (message_id) DO UPDATE
               SET outcome = excluded.outcome, source = excluded.source,
                   updated_at = excluded.updated_at
               WHERE outcome IS NULL""",
            (message_id, outcome, source, time.time()),
        )

    async def prune(self, older_than: float) -> int:
        """Delete the states last written before `older_than` (seconds since the epoch), in a
        thread: deleting a day's states must not stall the loop. Returns the count."""
        return await asyncio.to_thread(self._prune_in_batches, older_than)

    def _prune_in_batches(self, older_than: float) -> int:
        """Small batches on a connection of its own, which may wait its turn for the lock."""
        db = _connect(self._path, busy_timeout_ms=5000)
        deleted = 0
        try:
            while True:
                batch = db.execute(
                    """DELETE FROM emails WHERE message_id IN (
                           SELECT message_id FROM emails WHERE updated_at < ? LIMIT ?)""",
                    (older_than, PRUNE_BATCH),
                ).rowcount
                deleted += batch
                if batch < PRUNE_BATCH:
                    return deleted
        finally:
            db.close()

    async def close(self) -> None:
        self._db.close()


def _connect(path: Path, busy_timeout_ms: int = 100) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    # By default a short wait for another worker's write lock: the event loop must not stall;
    # a write that still finds it locked is retried by the processor.
    db.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    return db
