"""The suppression list in a SQLite file, the dedupe store's: the worker and API processes of
one host share it, each with its own connections, in WAL mode."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from shared.store import SqliteConnections
from shared.suppressions.contract import (
    TABLE,
    Suppression,
    SuppressionPage,
    SuppressionsUnavailable,
    checked_page_size,
    normalized,
)

COLUMNS = "address, reply, message_id, created_at"
SUPPRESSED = f"SELECT {COLUMNS} FROM {TABLE} WHERE address IN (SELECT value FROM json_each(?))"
# Most emails have one recipient: asked about one address, a plain lookup costs half as much.
SUPPRESSED_ONE = f"SELECT {COLUMNS} FROM {TABLE} WHERE address = ?"
SUPPRESS = f"INSERT INTO {TABLE} ({COLUMNS}) VALUES (?, ?, ?, ?) ON CONFLICT (address) DO NOTHING"
PAGE = f"SELECT {COLUMNS} FROM {TABLE} WHERE address > ? ORDER BY address LIMIT ?"
LIFT = f"DELETE FROM {TABLE} WHERE address = ?"


class SqliteSuppressionList:
    """Two connections (shared.store.SqliteConnections): `suppressed`, asked before every
    email, reads on the event loop; everything else (writes, pages) runs in the list's thread.
    A suppression survives the process being killed; only a power loss just after a write
    could lose it."""

    def __init__(self, path: Path) -> None:
        self._db = SqliteConnections(
            path, "DEDUPE_DB_PATH", SuppressionsUnavailable, thread_name="suppressions"
        )

    async def open(self) -> None:
        """Open the file, creating it, its directory and the table if they are missing."""
        await self._db.open(_create_table)

    async def suppressed(self, addresses: Iterable[str]) -> dict[str, Suppression]:
        wanted = {address: normalized(address) for address in addresses}
        if not wanted:
            return {}
        found = self._db.read(lambda db: _suppressions(db, set(wanted.values())))
        return {given: found[key] for given, key in wanted.items() if key in found}

    async def suppress(self, address: str, reply: str, message_id: str) -> None:
        row = (normalized(address), reply, message_id, time.time())
        await self._db.write(lambda db: db.execute(SUPPRESS, row).rowcount)

    async def page(self, after: str | None, limit: int) -> SuppressionPage:
        limit = checked_page_size(limit)
        start = "" if after is None else normalized(after)
        rows = await self._db.write(lambda db: db.execute(PAGE, (start, limit + 1)).fetchall())
        suppressions = [_suppression(row) for row in rows[:limit]]
        more = len(rows) > limit
        return SuppressionPage(suppressions, suppressions[-1].address if more else None)

    async def lift(self, address: str) -> bool:
        key = normalized(address)
        return await self._db.write(lambda db: db.execute(LIFT, (key,)).rowcount) == 1

    async def close(self) -> None:
        await self._db.close()


def _suppressions(db: sqlite3.Connection, keys: set[str]) -> dict[str, Suppression]:
    if len(keys) == 1:
        rows = db.execute(SUPPRESSED_ONE, tuple(keys))
    else:
        rows = db.execute(SUPPRESSED, (json.dumps(sorted(keys)),))
    return {row[0]: _suppression(row) for row in rows}


def _suppression(row: tuple[str, str, str, float]) -> Suppression:
    address, reply, message_id, created_at = row
    return Suppression(address, reply, message_id, datetime.fromtimestamp(created_at, UTC))


def _create_table(db: sqlite3.Connection) -> None:
    db.execute(
        f"""CREATE TABLE IF NOT EXISTS {TABLE} (
                address    TEXT PRIMARY KEY,  -- lower-cased
                reply      TEXT NOT NULL,  -- the reply to RCPT that refused it
                message_id TEXT NOT NULL,  -- the email whose bounce added it
                created_at REAL NOT NULL  -- seconds since the epoch
            ) WITHOUT ROWID"""
    )
