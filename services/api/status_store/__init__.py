"""The API's read model of email.events: every event kept once by id, so that
`GET /emails/{id}` answers from it whichever API process it reaches (docs/api.md)."""

from __future__ import annotations

from pathlib import Path

from services.api.status_store.contract import EventRow, StatusStore, StatusStoreUnavailable
from services.api.status_store.postgres import PostgresStatusStore
from services.api.status_store.sqlite import SqliteStatusStore
from shared.settings import is_postgres_url

__all__ = [
    "EventRow",
    "PostgresStatusStore",
    "SqliteStatusStore",
    "StatusStore",
    "StatusStoreUnavailable",
    "status_store",
]


def status_store(location: str | Path) -> SqliteStatusStore | PostgresStatusStore:
    """The store at API_STORE_URL, or API_DB_PATH when it is unset, still to be opened: where
    the Idempotency-Keys are, a postgresql:// URL or the path of a SQLite file."""
    if is_postgres_url(location):
        return PostgresStatusStore(str(location))
    return SqliteStatusStore(Path(location))
