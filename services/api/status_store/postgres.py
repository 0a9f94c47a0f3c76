"""The read model in PostgreSQL, the database of the Idempotency-Keys (API_STORE_URL): one table
that the API processes of every host fill together and each answers from."""

from __future__ import annotations

from collections.abc import Sequence

from services.api.status import EventPosition
from services.api.status_store.contract import (
    PRUNE_BATCH,
    TABLE,
    EventRow,
    StatusStoreUnavailable,
    first_of_each,
)
from shared.store import PostgresPool

# The status consumer holds a connection for one round trip a batch, and a 202 or a GET one
# for one round trip: a few suffice, besides the Idempotency-Keys' own pool.
POOL_MAX_CONNECTIONS = 4

CREATE_TABLE = f"""
    CREATE TABLE IF NOT EXISTS {TABLE} (
        event_id    text PRIMARY KEY,
        message_id  text NOT NULL,
        type        text NOT NULL,
        recipient   text,  -- for the events about one recipient
        at          timestamptz NOT NULL,  -- when it happened
        body        text NOT NULL,  -- the event's JSON, as the topic has it
        "partition" integer,  -- its place in email.events; NULL for the API's own accepted
        "offset"    bigint,  -- event, until its copy is read
        applied_at  timestamptz NOT NULL DEFAULT now()  -- when this store first kept it
    );
    CREATE INDEX IF NOT EXISTS {TABLE}_message_id ON {TABLE} (message_id);
    CREATE INDEX IF NOT EXISTS {TABLE}_applied_at ON {TABLE} (applied_at)"""
COLUMNS = 'event_id, message_id, type, recipient, at, body, "partition", "offset"'
# One statement, so one transaction and one round trip for a whole batch. ON CONFLICT DO UPDATE
# may touch a row once per statement: the batch holds each id once (first_of_each).
ADD = f"""
    INSERT INTO {TABLE} ({COLUMNS})
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
        $6::text[], $7::integer[], $8::bigint[])
    ON CONFLICT (event_id) DO UPDATE SET "partition" = excluded."partition",
        "offset" = excluded."offset"
    WHERE {TABLE}."offset" IS NULL AND excluded."offset" IS NOT NULL"""
EVENTS_OF = f"""
    SELECT {COLUMNS} FROM {TABLE} WHERE message_id = $1
    ORDER BY "offset" IS NOT NULL, "partition", "offset", at, event_id"""
# Every API process prunes: SKIP LOCKED lets them share the work.
PRUNE = f"""
    DELETE FROM {TABLE} WHERE event_id IN (
        SELECT event_id FROM {TABLE} WHERE applied_at < to_timestamp($1) LIMIT $2
        FOR UPDATE SKIP LOCKED)"""


class PostgresStatusStore:
    """Each call is one round trip on a pooled connection. A call on a connection the server
    closed since (a restart) is made once more at once on a fresh one: every statement is safe
    to repeat. While the server is away, calls raise StatusStoreUnavailable."""

    def __init__(self, url: str) -> None:
        self._db = PostgresPool(url, "API_STORE_URL", StatusStoreUnavailable)
        self.where = self._db.where  # host:port/database, for messages

    async def open(self) -> None:
        """Open the pool, check that the server answers, create the table if it is missing."""
        await self._db.open(TABLE, CREATE_TABLE, "email-api", POOL_MAX_CONNECTIONS)

    async def add(self, rows: Sequence[EventRow]) -> None:
        if not rows:
            return
        kept = first_of_each(rows)
        columns = (
            [row.event_id for row in kept],
            [row.message_id for row in kept],
            [row.type for row in kept],
            [row.recipient for row in kept],
            [row.at for row in kept],
            [row.body for row in kept],
            [None if row.position is None else row.position.partition for row in kept],
            [None if row.position is None else row.position.offset for row in kept],
        )
        await self._db.call(lambda pool: pool.execute(ADD, *columns))

    async def events_of(self, message_id: str) -> list[EventRow]:
        found = await self._db.call(lambda pool: pool.fetch(EVENTS_OF, message_id))
        return [
            EventRow(
                event_id=row["event_id"],
                message_id=row["message_id"],
                type=row["type"],
                recipient=row["recipient"],
                at=row["at"],
                body=row["body"],
                position=None
                if row["offset"] is None
                else EventPosition(partition=row["partition"], offset=row["offset"]),
            )
            for row in found
        ]

    async def prune(self, older_than: float) -> int:
        return await self._db.delete_in_batches(PRUNE, older_than, PRUNE_BATCH)

    async def close(self) -> None:
        await self._db.close()
