"""Idempotency-Keys in a SQLite file: the API processes of one host share it, each with its own
connections, in WAL mode."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from services.api.idempotency import KeyRow, KeyState
from services.api.idempotency_store.contract import PRUNE_BATCH, TABLE, StoreUnavailable
from shared.store import SqliteConnections

COLUMNS = "key, fingerprint, state, claim, created_at, claimed_at, status, body"


class SqliteIdempotencyStore:
    """Every call runs in the store's thread (shared.store.SqliteConnections' writer): a write
    that waits for another process's lock, or a checkpoint's fsync, must not stall the event
    loop that answers every request, with a key or without. A key survives the API being
    killed; only a power loss in the instant after a write could lose one."""

    def __init__(self, path: Path) -> None:
        self._db = SqliteConnections(
            path, "API_DB_PATH", StoreUnavailable, thread_name="idempotency-store"
        )

    async def open(self) -> None:
        """Open the file, creating it, its directory and the table if they are missing."""
        await self._db.open(_create_table)

    async def claim(self, key: str, fingerprint: str, claim: str, now: float) -> KeyRow | None:
        return await self._db.write(lambda db: _claim(db, key, fingerprint, claim, now))

    async def take_over(
        self, row: KeyRow, fingerprint: str, claim: str, now: float, restart_window: bool
    ) -> bool:
        created_at = now if restart_window else row.created_at
        changed = await self._changed(
            f"""UPDATE {TABLE} SET fingerprint = ?, state = 'in_flight', claim = ?,
                    created_at = ?, claimed_at = ?, status = NULL, body = NULL
                WHERE key = ? AND claim = ?""",
            (fingerprint, claim, created_at, now, row.key, row.claim),
        )
        return changed == 1

    async def finish(self, key: str, claim: str, status: int, body: bytes) -> None:
        await self._changed(
            f"UPDATE {TABLE} SET state = 'done', status = ?, body = ? WHERE key = ? AND claim = ?",
            (status, body, key, claim),
        )

    async def interrupt(self, key: str, claim: str) -> None:
        await self._changed(
            f"""UPDATE {TABLE} SET state = 'interrupted'
                WHERE key = ? AND claim = ? AND state = 'in_flight'""",
            (key, claim),
        )

    async def release(self, key: str, claim: str) -> None:
        await self._changed(f"DELETE FROM {TABLE} WHERE key = ? AND claim = ?", (key, claim))

    async def prune(self, older_than: float) -> int:
        """A batch per call, so that the requests' calls get the thread between batches."""
        deleted = 0
        while True:
            batch = await self._changed(
                f"""DELETE FROM {TABLE} WHERE key IN (
                        SELECT key FROM {TABLE} WHERE created_at < ? LIMIT ?)""",
                (older_than, PRUNE_BATCH),
            )
            deleted += batch
            if batch < PRUNE_BATCH:
                return deleted

    async def _changed(self, statement: str, parameters: tuple[object, ...]) -> int:
        return await self._db.write(lambda db: db.execute(statement, parameters).rowcount)

    async def close(self) -> None:
        await self._db.close()


def _claim(
    db: sqlite3.Connection, key: str, fingerprint: str, claim: str, now: float
) -> KeyRow | None:
    # One transaction: the row found is the one that stopped the insert.
    db.execute("BEGIN IMMEDIATE")
    try:
        inserted = db.execute(
            f"""INSERT INTO {TABLE} (key, fingerprint, state, claim, created_at, claimed_at)
                VALUES (?, ?, 'in_flight', ?, ?, ?) ON CONFLICT (key) DO NOTHING""",
            (key, fingerprint, claim, now, now),
        ).rowcount
        found = None if inserted else _row(db, key)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return found


def _row(db: sqlite3.Connection, key: str) -> KeyRow | None:
    row = db.execute(f"SELECT {COLUMNS} FROM {TABLE} WHERE key = ?", (key,)).fetchone()
    if row is None:
        return None
    key, fingerprint, state, claim, created_at, claimed_at, status, body = row
    state_: KeyState = state
    return KeyRow(key, fingerprint, state_, claim, created_at, claimed_at, status, body)


def _create_table(db: sqlite3.Connection) -> None:
    db.execute(
        f"""CREATE TABLE IF NOT EXISTS {TABLE} (
                key         TEXT PRIMARY KEY,
                fingerprint TEXT NOT NULL,  -- sha256 of the route and the validated body
                state       TEXT NOT NULL CHECK (state IN ('in_flight', 'done', 'interrupted')),
                claim       TEXT NOT NULL,  -- the token of the request that claimed it last
                created_at  REAL NOT NULL,  -- its first claim, seconds since the epoch
                claimed_at  REAL NOT NULL,  -- its last claim
                status      INTEGER,  -- the answer, once done
                body        BLOB
            ) WITHOUT ROWID"""
    )
    db.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_created_at ON {TABLE} (created_at)")
