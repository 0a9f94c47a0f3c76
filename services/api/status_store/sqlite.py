"""The read model in a SQLite file, the one that holds the Idempotency-Keys (API_DB_PATH): the
API processes of one host share it, each with its own connections, in WAL mode."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from services.api.status import EventPosition
from services.api.status_store.contract import (
    PRUNE_BATCH,
    TABLE,
    EventRow,
    StatusStoreUnavailable,
    first_of_each,
)
from shared.store import SqliteConnections

COLUMNS = 'event_id, message_id, type, recipient, at, body, "partition", "offset"'
# The position of an event that has none yet (the API's own `accepted`) is filled in by its
# first copy from the topic; anything else about a kept event stays as first applied.
ADD = f"""
    INSERT INTO {TABLE} ({COLUMNS}, applied_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (event_id) DO UPDATE SET "partition" = excluded."partition",
        "offset" = excluded."offset"
    WHERE {TABLE}."offset" IS NULL AND excluded."offset" IS NOT NULL"""
EVENTS_OF = f"""
    SELECT {COLUMNS} FROM {TABLE} WHERE message_id = ?
    ORDER BY "offset" IS NOT NULL, "partition", "offset", at, event_id"""
PRUNE = f"""
    DELETE FROM {TABLE} WHERE event_id IN (
        SELECT event_id FROM {TABLE} WHERE applied_at < ? LIMIT ?)"""


class SqliteStatusStore:
    """Two connections (shared.store.SqliteConnections): `events_of`, one email's few rows
    through an index, reads on the event loop; writes run in the store's thread, where waiting
    for another process's lock (the Idempotency-Keys share the file) stalls nothing. An event
    kept survives the API being killed; one a power loss loses just after its write, the status
    consumer's uncommitted offset brings back.

    The batches that arrive while a transaction is being written go together in the next one
    (a group commit): under load, each 202's `accepted` event costs a share of a transaction
    rather than one of its own (about 340 us an email alone; a few tens together)."""

    def __init__(self, path: Path) -> None:
        self._db = SqliteConnections(
            path, "API_DB_PATH", StatusStoreUnavailable, thread_name="status-store"
        )
        self._waiting: list[tuple[list[Values], asyncio.Future[None]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Open the file, creating it, its directory and the table if they are missing."""
        await self._db.open(_create_table)

    async def add(self, rows: Sequence[EventRow]) -> None:
        if not rows:
            return
        applied_at = time.time()
        values = [_values(row, applied_at) for row in first_of_each(rows)]
        written = asyncio.get_running_loop().create_future()
        self._waiting.append((values, written))
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write_waiting())
        await written

    async def _write_waiting(self) -> None:
        """Write every batch waiting, all in one transaction, until none waits."""
        while self._waiting:
            group, self._waiting = self._waiting, []
            values = [row for batch, _ in group for row in batch]
            try:
                await self._db.write(functools.partial(_in_one_transaction, values=values))
            except Exception as error:
                for _, written in group:
                    if not written.done():
                        written.set_exception(error)
            else:
                for _, written in group:
                    if not written.done():
                        written.set_result(None)

    async def events_of(self, message_id: str) -> list[EventRow]:
        rows = self._db.read(lambda db: db.execute(EVENTS_OF, (message_id,)).fetchall())
        return [_row(found) for found in rows]

    async def prune(self, older_than: float) -> int:
        """A batch per call, so that the other writes get the thread between batches."""
        deleted = 0
        while True:
            batch = await self._db.write(
                lambda db: db.execute(PRUNE, (older_than, PRUNE_BATCH)).rowcount
            )
            deleted += batch
            if batch < PRUNE_BATCH:
                return deleted

    async def close(self) -> None:
        if self._writing is not None:
            await self._writing
        await self._db.close()


Values = tuple[str, str, str, str | None, float, str, int | None, int | None, float]


def _values(row: EventRow, applied_at: float) -> Values:
    position = row.position
    return (
        row.event_id,
        row.message_id,
        row.type,
        row.recipient,
        row.at.timestamp(),
        row.body,
        None if position is None else position.partition,
        None if position is None else position.offset,
        applied_at,
    )


def _in_one_transaction(db: sqlite3.Connection, values: list[Values]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(ADD, values)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _row(found: tuple[str, str, str, str | None, float, str, int | None, int | None]) -> EventRow:
    event_id, message_id, event_type, recipient, at, body, partition, offset = found
    position = None
    if partition is not None and offset is not None:
        position = EventPosition(partition=partition, offset=offset)
    return EventRow(
        event_id=event_id,
        message_id=message_id,
        type=event_type,
        recipient=recipient,
        at=datetime.fromtimestamp(at, UTC),
        body=body,
        position=position,
    )


def _create_table(db: sqlite3.Connection) -> None:
    db.execute(
        f"""CREATE TABLE IF NOT EXISTS {TABLE} (
                event_id    TEXT PRIMARY KEY,
                message_id  TEXT NOT NULL,
                type        TEXT NOT NULL,
                recipient   TEXT,  -- for the events about one recipient
                at          REAL NOT NULL,  -- when it happened, seconds since the epoch
                body        TEXT NOT NULL,  -- the event's JSON, as the topic has it
                "partition" INTEGER,  -- its place in email.events; NULL for the API's
                "offset"    INTEGER,  -- own accepted event, until its copy is read
                applied_at  REAL NOT NULL  -- when this store first kept it
            ) WITHOUT ROWID"""
    )
    db.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_message_id ON {TABLE} (message_id)")
    db.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_applied_at ON {TABLE} (applied_at)")
