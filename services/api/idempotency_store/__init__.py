"""The store of Idempotency-Keys: which request each key answered, and how, so that a retry with
the same key gets the same answer whichever API process it reaches."""

from __future__ import annotations

from pathlib import Path

from services.api.idempotency_store.contract import IdempotencyStore, StoreUnavailable
from services.api.idempotency_store.postgres import PostgresIdempotencyStore
from services.api.idempotency_store.sqlite import SqliteIdempotencyStore
from shared.settings import is_postgres_url

__all__ = [
    "IdempotencyStore",
    "PostgresIdempotencyStore",
    "SqliteIdempotencyStore",
    "StoreUnavailable",
    "idempotency_store",
]


def idempotency_store(location: str | Path) -> SqliteIdempotencyStore | PostgresIdempotencyStore:
    """The store at API_STORE_URL, or API_DB_PATH when it is unset, still to be opened: a
    postgresql:// URL, which every API process on every host may share, or the path of a SQLite
    file, which those of one host share."""
    if is_postgres_url(location):
        return PostgresIdempotencyStore(str(location))
    return SqliteIdempotencyStore(Path(location))
