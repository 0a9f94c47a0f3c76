"""The dedupe store: what became of each message id, per recipient, so that a record read again
after a crash or a rebalance goes only to the recipients still owed it, and publishes the
events its outcomes made."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from services.worker.dedupe.contract import (
    FINAL_STATES,
    PRUNE_BATCH,
    CannotOpenDedupeStore,
    DedupeStore,
    DeliveryState,
    Outcome,
    RecipientRow,
    RecipientState,
)
from services.worker.dedupe.postgres import PostgresDedupeStore
from services.worker.dedupe.sqlite import SqliteDedupeStore
from shared.settings import POSTGRES_SCHEMES

__all__ = [
    "FINAL_STATES",
    "PRUNE_BATCH",
    "CannotOpenDedupeStore",
    "DedupeStore",
    "DeliveryState",
    "Outcome",
    "PostgresDedupeStore",
    "RecipientRow",
    "RecipientState",
    "SqliteDedupeStore",
    "open_dedupe_store",
]


async def open_dedupe_store(location: str | Path) -> SqliteDedupeStore | PostgresDedupeStore:
    """DEDUPE_URL, or DEDUPE_DB_PATH when it is unset: a postgresql:// URL, which every worker
    on every host may share, or the path of a SQLite file, which the workers of one host share."""
    url = str(location)
    if url.startswith(tuple(f"{scheme}://" for scheme in POSTGRES_SCHEMES)):
        return await PostgresDedupeStore.connect(url)
    path = Path(location)
    try:
        return SqliteDedupeStore(path)
    except (OSError, sqlite3.Error) as error:
        raise CannotOpenDedupeStore(
            f"cannot open the SQLite file {path} ({error}): check that its directory is "
            "writable, or choose another with DEDUPE_DB_PATH"
        ) from error
