"""The suppression list: addresses that bounced for good, which no later email is sent to,
kept where the dedupe store is (DEDUPE_URL, or the SQLite file at DEDUPE_DB_PATH), so every
worker and API process that shares that store shares the list."""

from __future__ import annotations

from pathlib import Path

from shared.settings import is_postgres_url
from shared.suppressions.contract import (
    MAX_PAGE_SIZE,
    Suppression,
    SuppressionList,
    SuppressionPage,
    SuppressionsUnavailable,
)
from shared.suppressions.postgres import PostgresSuppressionList
from shared.suppressions.sqlite import SqliteSuppressionList

__all__ = [
    "MAX_PAGE_SIZE",
    "PostgresSuppressionList",
    "SqliteSuppressionList",
    "Suppression",
    "SuppressionList",
    "SuppressionPage",
    "SuppressionsUnavailable",
    "open_suppression_list",
]


async def open_suppression_list(
    location: str | Path, application_name: str
) -> SqliteSuppressionList | PostgresSuppressionList:
    """The list at DEDUPE_URL, or DEDUPE_DB_PATH when it is unset, opened: a postgresql:// URL,
    which the processes of every host may share, or the path of a SQLite file, which those of
    one host share. `application_name` names the process to PostgreSQL (email-worker,
    email-api). Raises shared.store.CannotOpenStore, saying why and what to change."""
    suppressions: SqliteSuppressionList | PostgresSuppressionList
    if is_postgres_url(location):
        suppressions = PostgresSuppressionList(str(location), application_name)
    else:
        suppressions = SqliteSuppressionList(Path(location))
    await suppressions.open()
    return suppressions
