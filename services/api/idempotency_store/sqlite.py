"""Idempotency-Keys in a SQLite file: the API processes of one host share it, each with its own
connection, in WAL mode."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from services.api.idempotency import KeyRow, KeyState
from services.api.idempotency_store.contract import PRUNE_BATCH, TABLE, StoreUnavailable
from shared.store import CannotOpenStore

T = TypeVar("T")

# Another API process's write holds the file's lock for microseconds; waiting for it happens
# in the store's thread, never on the event loop.
BUSY_TIMEOUT_MS = 5000
COLUMNS = "key, fingerprint, state, claim, created_at, claimed_at, status, body"


class SqliteIdempotencyStore:
    """Every call runs in one thread of the store's own, on its one connection: a write that
    waits for another process's lock, or a checkpoint's fsync, must not stall the event loop
    that answers every request, with a key or without. synchronous=NORMAL: a key survives the
    API being killed; only a power loss in the instant after a write could lose one."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="idempotency-store")
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Open the file, creating it and its directory if they are missing."""
        try:
            self._db = await asyncio.get_running_loop().run_in_executor(
                self._thread, _open, self._path
            )
        except (OSError, sqlite3.Error) as error:
            raise CannotOpenStore(
                f"cannot open the SQLite file {self._path} ({error}): check that its directory "
                "is writable, or choose another with API_DB_PATH"
            ) from error

    async def claim(self, key: str, fingerprint: str, claim: str, now: float) -> KeyRow | None:
        return await self._run(self._claim, key, fingerprint, claim, now)

    def _claim(self, key: str, fingerprint: str, claim: str, now: float) -> KeyRow | None:
        db = self._opened()
        # One transaction: the row found is the one that stopped the insert.
        db.execute("BEGIN IMMEDIATE")
        try:
            inserted = db.execute(
                f"""INSERT INTO {TABLE} (key, fingerprint, state, claim, created_at, claimed_at)
                    VALUES (?, ?, 'in_flight', ?, ?, ?) ON CONFLICT (key) DO NOTHING""",
                (key, fingerprint, claim, now, now),
            ).rowcount
            found = None if inserted else self._row(db, key)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return found

    @staticmethod
    def _row(db: sqlite3.Connection, key: str) -> KeyRow | None:
        row = db.execute(f"SELECT {COLUMNS} FROM {TABLE} WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        key, fingerprint, state, claim, created_at, claimed_at, status, body = row
        state_: KeyState = state
        return KeyRow(key, fingerprint, state_, claim, created_at, claimed_at, status, body)

    async def take_over(
        self, row: KeyRow, fingerprint: str, claim: str, now: float, restart_window: bool
    ) -> bool:
        created_at = now if restart_window else row.created_at
        changed = await self._run(
            self._changed,
            f"""UPDATE {TABLE} SET fingerprint = ?, state = 'in_flight', claim = ?,
                    created_at = ?, claimed_at = ?, status = NULL, body = NULL
                WHERE key = ? AND claim = ?""",
            (fingerprint, claim, created_at, now, row.key, row.claim),
        )
        return changed == 1

    async def finish(self, key: str, claim: str, status: int, body: bytes) -> None:
        await self._run(
            self._changed,
            f"UPDATE {TABLE} SET state = 'done', status = ?, body = ? WHERE key = ? AND claim = ?",
            (status, body, key, claim),
        )

    async def interrupt(self, key: str, claim: str) -> None:
        await self._run(
            self._changed,
            f"""UPDATE {TABLE} SET state = 'interrupted'
                WHERE key = ? AND claim = ? AND state = 'in_flight'""",
            (key, claim),
        )

    async def release(self, key: str, claim: str) -> None:
        await self._run(
            self._changed, f"DELETE FROM {TABLE} WHERE key = ? AND claim = ?", (key, claim)
        )

    async def prune(self, older_than: float) -> int:
        """A batch per call, so that the requests' calls get the thread between batches."""
        deleted = 0
        while True:
            batch = await self._run(
                self._changed,
                f"""DELETE FROM {TABLE} WHERE key IN (
                        SELECT key FROM {TABLE} WHERE created_at < ? LIMIT ?)""",
                (older_than, PRUNE_BATCH),
            )
            deleted += batch
            if batch < PRUNE_BATCH:
                return deleted

    def _changed(self, statement: str, parameters: tuple[object, ...]) -> int:
        return self._opened().execute(statement, parameters).rowcount

    def _opened(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.OperationalError("the store is not open (yet)")
        return self._db

    async def close(self) -> None:
        if self._db is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._db.close)
            self._db = None
        self._thread.shutdown()

    async def _run(self, call: Callable[..., T], *arguments: object) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, call, *arguments)
        except sqlite3.Error as error:
            raise StoreUnavailable(f"the SQLite file {self._path} failed ({error})") from error


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)  # opened in the thread that uses it
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
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
    return db
