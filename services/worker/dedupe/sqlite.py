"""The dedupe store in a SQLite file: the workers of one host share it, each process with its
own connection, in WAL mode."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from services.worker.dedupe.contract import (
    PRUNE_BATCH,
    DeliveryState,
    RecipientRow,
    delivery_state,
    in_write_order,
)

T = TypeVar("T")

log = logging.getLogger("worker")

# A write on the event loop waits at most this for another worker's write lock; one that still
# finds it locked is retried by the processor, so the loop never stalls.
WRITE_BUSY_TIMEOUT_MS = 100
OPENING_BUSY_TIMEOUT_MS = 60_000

CREATE_EMAILS = """
    CREATE TABLE IF NOT EXISTS emails (
        message_id    TEXT PRIMARY KEY,
        outcome       TEXT,  -- dead-lettered, or an earlier version's delivered; else NULL
        dead_lettered BLOB,  -- the dead_lettered event, once dead-lettered
        source        TEXT NOT NULL,  -- topic-partition and offset of the last write
        updated_at    REAL NOT NULL  -- seconds since the epoch, of the last write: for pruning
    ) WITHOUT ROWID"""
# A rowid table, not WITHOUT ROWID: a row keeps its event (hundreds of bytes), and rows that
# large, inserted in the random order of message ids, split a clustered table's pages about
# every third insert. Appended by rowid, with the key in a small index, a write costs a third
# less.
CREATE_RECIPIENTS = """
    CREATE TABLE IF NOT EXISTS email_recipients (
        message_id TEXT NOT NULL,  -- pruned with its row in emails
        recipient  TEXT NOT NULL,
        state      TEXT NOT NULL CHECK (state IN ('sent', 'bounced', 'suppressed', 'deferred')),
        attempt    INTEGER NOT NULL CHECK (attempt >= 0),
        event      BLOB,  -- the email.events value; NULL in a row an earlier version wrote
        source     TEXT NOT NULL,  -- topic-partition and offset of the write
        updated_at REAL NOT NULL,  -- seconds since the epoch
        PRIMARY KEY (message_id, recipient)
    )"""
RECIPIENT_COLUMNS = "message_id, recipient, state, attempt, event, source, updated_at"
STATE_OF = """
    SELECT e.outcome, e.dead_lettered, r.recipient, r.state, r.attempt, r.event
    FROM emails AS e LEFT JOIN email_recipients AS r ON r.message_id = e.message_id
    WHERE e.message_id = ?"""
# Every write touches the email's row: its updated_at is what pruning goes by.
TOUCH_EMAIL = """
    INSERT INTO emails (message_id, source, updated_at) VALUES (?, ?, ?)
    ON CONFLICT (message_id) DO UPDATE
    SET source = excluded.source, updated_at = excluded.updated_at"""
WRITE_RECIPIENT = """
    INSERT INTO email_recipients (message_id, recipient, state, attempt, event, source, updated_at)
    VALUES (:message_id, :recipient, :state, :attempt, :event, :source, :now)
    ON CONFLICT (message_id, recipient) DO UPDATE
    SET state = excluded.state, attempt = excluded.attempt, event = excluded.event,
        source = excluded.source, updated_at = excluded.updated_at
    WHERE email_recipients.state = 'deferred' AND email_recipients.attempt = :stage"""
DEAD_LETTER = """
    INSERT INTO emails (message_id, outcome, dead_lettered, source, updated_at)
    VALUES (?, 'dead-lettered', ?, ?, ?)
    ON CONFLICT (message_id) DO UPDATE
    SET outcome = coalesce(emails.outcome, excluded.outcome),
        dead_lettered = CASE WHEN emails.outcome IS NULL
                             THEN excluded.dead_lettered ELSE emails.dead_lettered END,
        source = excluded.source, updated_at = excluded.updated_at"""
PRUNE_EMAILS = """
    DELETE FROM emails WHERE message_id IN (
        SELECT message_id FROM emails WHERE updated_at < ? LIMIT ?)
    RETURNING message_id"""
PRUNE_RECIPIENTS = """
    DELETE FROM email_recipients WHERE message_id IN (SELECT value FROM json_each(?))"""


class SqliteDedupeStore:
    """A SQLite file in WAL mode, shared safely by every worker process on this machine.

    synchronous=NORMAL: a record survives the worker being killed (SIGKILL); only a power
    loss in the instant after a write could lose it. Calls run on the event loop itself: a write
    takes tens of microseconds, and making it in the same step that reads the server's 250 keeps
    the one window where a crash causes a duplicate (after the 250, before this write) as short
    as it can be; a hop to a thread would widen it. Each write is one transaction under the
    file's write lock, so it reads the state it returns before any other process can write.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        # Another process may hold the write lock for a while, adopting an earlier version's
        # tables: wait for it at start, never on the loop's writes after.
        self._db = _connect(path, busy_timeout_ms=OPENING_BUSY_TIMEOUT_MS)
        try:
            _in_transaction(self._db, self._create_tables)
            self._db.execute(f"PRAGMA busy_timeout={WRITE_BUSY_TIMEOUT_MS}")
        except BaseException:
            self._db.close()
            raise

    def _create_tables(self) -> None:
        """Under the write lock: processes that start together create them, and adopt an
        earlier version's table, once."""
        self._db.execute(CREATE_EMAILS)
        if self._recipients_without_rowid():
            self._adopt_clustered_recipients()
        else:
            self._db.execute(CREATE_RECIPIENTS)
        columns = {column for _, column, *_ in self._db.execute("PRAGMA table_info(emails)")}
        if "accepted" in columns:
            self._adopt_accepted_recipients()
        self._adopt_finished_emails()

    def _recipients_without_rowid(self) -> bool:
        """Whether email_recipients is the WITHOUT ROWID table a version before wrote."""
        found = self._db.execute(
            "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = 'email_recipients'"
        ).fetchone()
        return found is not None and bool(found[0])

    def _adopt_clustered_recipients(self) -> None:
        """Copy the rows of the version before's WITHOUT ROWID table into a rowid one: once,
        rewriting every row, so the WAL grows by the table's size until the next checkpoint."""
        (rows,) = self._db.execute("SELECT count(*) FROM email_recipients").fetchone()
        log.info("moving the dedupe store's %d recipient rows into a rowid table", rows)
        self._db.execute("ALTER TABLE email_recipients RENAME TO email_recipients_clustered")
        self._db.execute(CREATE_RECIPIENTS)
        self._db.execute(
            f"""INSERT INTO email_recipients ({RECIPIENT_COLUMNS})
                SELECT {RECIPIENT_COLUMNS} FROM email_recipients_clustered"""
        )
        self._db.execute("DROP TABLE email_recipients_clustered")

    def _adopt_accepted_recipients(self) -> None:
        """The version before kept the recipients the server took as lines of emails.accepted:
        each becomes a sent row (without an event: that version made none), so it is never
        sent the email again."""
        earlier = self._db.execute(
            "SELECT message_id, accepted, source, updated_at FROM emails WHERE accepted <> ''"
        ).fetchall()
        self._db.executemany(
            """INSERT INTO email_recipients
                   (message_id, recipient, state, attempt, event, source, updated_at)
               VALUES (?, ?, 'sent', 0, NULL, ?, ?) ON CONFLICT DO NOTHING""",
            (
                (message_id, recipient, source, updated_at)
                for message_id, accepted, source, updated_at in earlier
                for recipient in accepted.split("\n")
                if recipient
            ),
        )
        self._db.execute("ALTER TABLE emails DROP COLUMN accepted")
        self._db.execute("ALTER TABLE emails ADD COLUMN dead_lettered BLOB")

    def _adopt_finished_emails(self) -> None:
        """Earlier versions kept only finished ids, in finished_emails: carry them over once."""
        known = self._db.execute(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'finished_emails'"
        ).fetchone()
        if known is not None:
            self._db.execute(
                """INSERT OR IGNORE INTO emails (message_id, outcome, source, updated_at)
                   SELECT message_id, outcome, source, unixepoch(finished_at)
                   FROM finished_emails"""
            )
            self._db.execute("DROP TABLE finished_emails")

    async def state_of(self, message_id: str) -> DeliveryState | None:
        return delivery_state(self._db.execute(STATE_OF, (message_id,)).fetchall())

    async def record(
        self, message_id: str, rows: Sequence[RecipientRow], stage: int, source: str
    ) -> DeliveryState:
        now = time.time()
        written = [
            {
                "message_id": message_id,
                "recipient": row.recipient,
                "state": row.state,
                "attempt": row.attempt,
                "event": row.event,
                "source": source,
                "now": now,
                "stage": stage,
            }
            for row in in_write_order(rows)
        ]

        def write() -> DeliveryState:
            self._db.execute(TOUCH_EMAIL, (message_id, source, now))
            self._db.executemany(WRITE_RECIPIENT, written)
            return self._written_state(message_id)

        return _in_transaction(self._db, write)

    async def record_dead_lettered(
        self, message_id: str, event: bytes | None, source: str
    ) -> DeliveryState:
        def write() -> DeliveryState:
            self._db.execute(DEAD_LETTER, (message_id, event, source, time.time()))
            return self._written_state(message_id)

        return _in_transaction(self._db, write)

    def _written_state(self, message_id: str) -> DeliveryState:
        state = delivery_state(self._db.execute(STATE_OF, (message_id,)).fetchall())
        assert state is not None  # the transaction has just written the email's row
        return state

    async def prune(self, older_than: float) -> int:
        """Delete the emails last written before `older_than` (seconds since the epoch), each
        with its recipients, in a thread: deleting a day's emails must not stall the loop.
        Returns how many emails."""
        return await asyncio.to_thread(self._prune_in_batches, older_than)

    def _prune_in_batches(self, older_than: float) -> int:
        """Small batches on a connection of its own, which may wait its turn for the lock."""
        db = _connect(self._path, busy_timeout_ms=5000)
        deleted = 0
        try:
            while True:
                batch = _in_transaction(db, lambda: _prune_batch(db, older_than))
                deleted += batch
                if batch < PRUNE_BATCH:
                    return deleted
        finally:
            db.close()

    async def close(self) -> None:
        self._db.close()


def _prune_batch(db: sqlite3.Connection, older_than: float) -> int:
    pruned = [id_ for (id_,) in db.execute(PRUNE_EMAILS, (older_than, PRUNE_BATCH)).fetchall()]
    db.execute(PRUNE_RECIPIENTS, (json.dumps(pruned),))
    return len(pruned)


def _in_transaction(db: sqlite3.Connection, write: Callable[[], T]) -> T:
    """`write` between BEGIN IMMEDIATE (the file's write lock, taken at once) and COMMIT."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = write()
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result


def _connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db
