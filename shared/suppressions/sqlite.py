"""The suppression list in a SQLite file, the dedupe store's: the worker and API processes of
one host share it, each with its own connections, in WAL mode."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from shared.store import CannotOpenStore
from shared.suppressions.contract import (
    TABLE,
    Suppression,
    SuppressionPage,
    SuppressionsUnavailable,
    checked_page_size,
    normalized,
)

T = TypeVar("T")

# The writer waits for another process's lock in the store's thread, never on the event loop.
WRITER_BUSY_TIMEOUT_MS = 5000
# A reader in WAL mode never waits for a writer; this bounds the rare wait for a recovery.
READER_BUSY_TIMEOUT_MS = 100
COLUMNS = "address, reply, message_id, created_at"
SUPPRESSED = f"SELECT {COLUMNS} FROM {TABLE} WHERE address IN (SELECT value FROM json_each(?))"
# Most emails have one recipient: asked about one address, a plain lookup costs half as much.
SUPPRESSED_ONE = f"SELECT {COLUMNS} FROM {TABLE} WHERE address = ?"
SUPPRESS = f"INSERT INTO {TABLE} ({COLUMNS}) VALUES (?, ?, ?, ?) ON CONFLICT (address) DO NOTHING"
PAGE = f"SELECT {COLUMNS} FROM {TABLE} WHERE address > ? ORDER BY address LIMIT ?"
LIFT = f"DELETE FROM {TABLE} WHERE address = ?"


class SqliteSuppressionList:
    """Two connections. `suppressed`, asked before every email, reads on the event loop: a read
    in WAL mode never waits for a writer's lock and takes microseconds, less than a hop to a
    thread and back would. Everything else (writes, pages) runs in one thread of the list's own,
    where waiting for another process's lock stalls nothing. synchronous=NORMAL: a suppression
    survives the process being killed; only a power loss just after a write could lose it."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="suppressions")
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Open the file, creating it, its directory and the table if they are missing."""
        try:
            self._writer = await asyncio.get_running_loop().run_in_executor(
                self._thread, _open_writer, self._path
            )
            self._reader = _open_reader(self._path)
        except (OSError, sqlite3.Error) as error:
            await self.close()
            raise CannotOpenStore(
                f"cannot open the SQLite file {self._path} ({error}): check that its directory "
                "is writable, or choose another with DEDUPE_DB_PATH"
            ) from error

    async def suppressed(self, addresses: Iterable[str]) -> dict[str, Suppression]:
        wanted = {address: normalized(address) for address in addresses}
        if not wanted:
            return {}
        if self._reader is None:
            raise SuppressionsUnavailable(f"the SQLite file {self._path}: not open (yet)")
        try:
            keys = set(wanted.values())
            if len(keys) == 1:
                rows = self._reader.execute(SUPPRESSED_ONE, tuple(keys))
            else:
                rows = self._reader.execute(SUPPRESSED, (json.dumps(sorted(keys)),))
            found = {row[0]: _suppression(row) for row in rows}
        except sqlite3.Error as error:
            raise SuppressionsUnavailable(
                f"the SQLite file {self._path} failed ({error})"
            ) from error
        return {given: found[key] for given, key in wanted.items() if key in found}

    async def suppress(self, address: str, reply: str, message_id: str) -> None:
        row = (normalized(address), reply, message_id, time.time())
        await self._run(lambda db: db.execute(SUPPRESS, row).rowcount)

    async def page(self, after: str | None, limit: int) -> SuppressionPage:
        limit = checked_page_size(limit)
        start = "" if after is None else normalized(after)
        rows = await self._run(lambda db: db.execute(PAGE, (start, limit + 1)).fetchall())
        suppressions = [_suppression(row) for row in rows[:limit]]
        more = len(rows) > limit
        return SuppressionPage(suppressions, suppressions[-1].address if more else None)

    async def lift(self, address: str) -> bool:
        key = normalized(address)
        return await self._run(lambda db: db.execute(LIFT, (key,)).rowcount) == 1

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        writer, self._writer = self._writer, None
        if writer is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, writer.close)
        self._thread.shutdown()

    async def _run(self, call: Callable[[sqlite3.Connection], T]) -> T:
        writer = self._writer
        if writer is None:
            raise SuppressionsUnavailable(f"the SQLite file {self._path}: not open (yet)")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, call, writer)
        except sqlite3.Error as error:
            raise SuppressionsUnavailable(
                f"the SQLite file {self._path} failed ({error})"
            ) from error


def _suppression(row: tuple[str, str, str, float]) -> Suppression:
    address, reply, message_id, created_at = row
    return Suppression(address, reply, message_id, datetime.fromtimestamp(created_at, UTC))


def _open_writer(path: Path) -> sqlite3.Connection:
    """In the list's thread, which is the only one to use it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA busy_timeout={WRITER_BUSY_TIMEOUT_MS}")
        # IF NOT EXISTS under the write lock: processes that start together create it once.
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            f"""CREATE TABLE IF NOT EXISTS {TABLE} (
                    address    TEXT PRIMARY KEY,  -- lower-cased
                    reply      TEXT NOT NULL,  -- the reply to RCPT that refused it
                    message_id TEXT NOT NULL,  -- the email whose bounce added it
                    created_at REAL NOT NULL  -- seconds since the epoch
                ) WITHOUT ROWID"""
        )
        db.execute("COMMIT")
    except BaseException:
        db.close()
        raise
    return db


def _open_reader(path: Path) -> sqlite3.Connection:
    """On the event loop's thread, which is the only one to use it."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA query_only=ON")
    db.execute(f"PRAGMA busy_timeout={READER_BUSY_TIMEOUT_MS}")
    return db
