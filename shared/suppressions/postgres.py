"""The suppression list in PostgreSQL, the dedupe store's database: one table that the worker
and API processes of every host share, so an address that bounced on one host is not sent to
from any other."""

from __future__ import annotations

from collections.abc import Iterable

from shared.store import PostgresPool
from shared.suppressions.contract import (
    TABLE,
    Suppression,
    SuppressionPage,
    SuppressionsUnavailable,
    checked_page_size,
    normalized,
)

# Each call holds a connection for one round trip, and the dedupe store keeps its own pool:
# a few suffice.
POOL_MAX_CONNECTIONS = 4

# COLLATE "C": addresses sort byte by byte, as in SQLite, whatever the database's locale, so
# both stores page in the same order.
CREATE_TABLE = f"""
    CREATE TABLE IF NOT EXISTS {TABLE} (
        address    text COLLATE "C" PRIMARY KEY,  -- lower-cased
        reply      text NOT NULL,  -- the reply to RCPT that refused it
        message_id text NOT NULL,  -- the email whose bounce added it
        created_at timestamptz NOT NULL DEFAULT now()
    )"""
COLUMNS = "address, reply, message_id, created_at"
SUPPRESSED = f"SELECT {COLUMNS} FROM {TABLE} WHERE address = ANY($1::text[])"
SUPPRESS = f"""
    INSERT INTO {TABLE} (address, reply, message_id) VALUES ($1, $2, $3)
    ON CONFLICT (address) DO NOTHING"""
PAGE = f"SELECT {COLUMNS} FROM {TABLE} WHERE address > $1 ORDER BY address LIMIT $2"
LIFT = f"DELETE FROM {TABLE} WHERE address = $1"


class PostgresSuppressionList:
    """Each call is one round trip on a pooled connection. A call on a connection the server
    closed since (a restart) is made once more at once on a fresh one: every statement is safe
    to repeat. While the server is away, calls raise SuppressionsUnavailable."""

    def __init__(self, url: str, application_name: str) -> None:
        self._application_name = application_name
        self._db = PostgresPool(url, "DEDUPE_URL", SuppressionsUnavailable)
        self.where = self._db.where  # host:port/database, for messages

    async def open(self) -> None:
        """Open the pool, check that the server answers, create the table if it is missing."""
        await self._db.open(TABLE, CREATE_TABLE, self._application_name, POOL_MAX_CONNECTIONS)

    async def suppressed(self, addresses: Iterable[str]) -> dict[str, Suppression]:
        wanted = {address: normalized(address) for address in addresses}
        if not wanted:
            return {}
        keys = sorted(set(wanted.values()))
        rows = await self._db.call(lambda pool: pool.fetch(SUPPRESSED, keys))
        found = {row["address"]: Suppression(**dict(row)) for row in rows}
        return {given: found[key] for given, key in wanted.items() if key in found}

    async def suppress(self, address: str, reply: str, message_id: str) -> None:
        await self._db.call(
            lambda pool: pool.execute(SUPPRESS, normalized(address), reply, message_id)
        )

    async def page(self, after: str | None, limit: int) -> SuppressionPage:
        limit = checked_page_size(limit)
        start = "" if after is None else normalized(after)
        rows = await self._db.call(lambda pool: pool.fetch(PAGE, start, limit + 1))
        suppressions = [Suppression(**dict(row)) for row in rows[:limit]]
        more = len(rows) > limit
        return SuppressionPage(suppressions, suppressions[-1].address if more else None)

    async def lift(self, address: str) -> bool:
        status: str = await self._db.call(lambda pool: pool.execute(LIFT, normalized(address)))
        return status == "DELETE 1"

    async def close(self) -> None:
        await self._db.close()
