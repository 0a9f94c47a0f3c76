"""The dedupe store in PostgreSQL: tables that the workers of every host share, so a record read
again on another host after a rebalance still goes only to the recipients still owed it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.worker.dedupe.contract import (
    PRUNE_BATCH,
    CannotOpenDedupeStore,
    DeliveryState,
    RecipientRow,
    delivery_state,
    in_write_order,
)
from shared.store import CannotOpenStore, describe, once_more_if_lost, open_pool

TABLE = "email_delivery_states"  # one row per email
RECIPIENTS_TABLE = "email_recipients"  # one row per recipient with an outcome
# Lanes write at once, but each write holds a connection for one round trip: a few suffice,
# and every worker on every host keeps its own (PostgreSQL allows 100 by default).
POOL_MAX_CONNECTIONS = 8

# Run once, by the first worker to find no recipients table, under a lock that lines up
# workers starting together. A store the version before wrote keeps the recipients the server
# took in email_delivery_states.accepted: each becomes a sent row (without an event: that
# version made none), so none of them is sent the email again.
CREATE_TABLES = f"""
    CREATE TABLE IF NOT EXISTS {TABLE} (
        message_id    text PRIMARY KEY,
        -- dead-lettered, or an earlier version's delivered; else NULL
        outcome       text CHECK (outcome IN ('delivered', 'dead-lettered')),
        dead_lettered bytea,  -- the dead_lettered event, once dead-lettered
        source        text NOT NULL,  -- topic-partition and offset of the last write
        updated_at    timestamptz NOT NULL DEFAULT now()  -- the server's clock, for pruning
    );
    CREATE INDEX IF NOT EXISTS {TABLE}_updated_at ON {TABLE} (updated_at);
    ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS dead_lettered bytea;
    CREATE TABLE IF NOT EXISTS {RECIPIENTS_TABLE} (
        message_id text NOT NULL,  -- pruned with its row in {TABLE}
        recipient  text NOT NULL,
        state      text NOT NULL CHECK (state IN ('sent', 'bounced', 'suppressed', 'deferred')),
        attempt    integer NOT NULL CHECK (attempt >= 0),
        event      bytea,  -- the email.events value; NULL in a row an earlier version wrote
        source     text NOT NULL,  -- topic-partition and offset of the write
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (message_id, recipient)
    );
    DO $$
    BEGIN
        IF EXISTS (SELECT FROM pg_attribute WHERE attrelid = '{TABLE}'::regclass
                   AND attname = 'accepted' AND NOT attisdropped) THEN
            INSERT INTO {RECIPIENTS_TABLE}
                (message_id, recipient, state, attempt, source, updated_at)
            SELECT message_id, unnest(accepted), 'sent', 0, source, updated_at FROM {TABLE}
            ON CONFLICT DO NOTHING;
            ALTER TABLE {TABLE} DROP COLUMN accepted;
        END IF;
    END $$"""
STATE_OF = f"""
    SELECT e.outcome, e.dead_lettered, r.recipient, r.state, r.attempt, r.event
    FROM {TABLE} AS e LEFT JOIN {RECIPIENTS_TABLE} AS r USING (message_id)
    WHERE e.message_id = $1"""
# One statement, so one round trip. The email's row is written first (its updated_at is what
# pruning goes by): its lock lines up two workers writing one email at once. A recipient's
# row is always "updated" on a conflict, if only to itself, because RETURNING then gives the
# row as it stands after the write, even one another worker committed while this one waited
# for its lock, which no snapshot taken at the statement's start could show.
RECORD = f"""
    WITH email AS (
        INSERT INTO {TABLE} AS e (message_id, source) VALUES ($1, $2)
        ON CONFLICT (message_id) DO UPDATE SET source = excluded.source, updated_at = now()
        RETURNING outcome, dead_lettered
    ), written AS (
        INSERT INTO {RECIPIENTS_TABLE} AS r (message_id, recipient, state, attempt, event, source)
        SELECT $1, recipient, state, attempt, event, $2
        FROM unnest($3::text[], $4::text[], $5::integer[], $6::bytea[])
            AS given (recipient, state, attempt, event)
        ON CONFLICT (message_id, recipient) DO UPDATE SET
            state = CASE WHEN r.state = 'deferred' AND r.attempt = $7
                         THEN excluded.state ELSE r.state END,
            attempt = CASE WHEN r.state = 'deferred' AND r.attempt = $7
                           THEN excluded.attempt ELSE r.attempt END,
            event = CASE WHEN r.state = 'deferred' AND r.attempt = $7
                         THEN excluded.event ELSE r.event END,
            source = CASE WHEN r.state = 'deferred' AND r.attempt = $7
                          THEN excluded.source ELSE r.source END,
            updated_at = CASE WHEN r.state = 'deferred' AND r.attempt = $7
                              THEN now() ELSE r.updated_at END
        RETURNING recipient, state, attempt, event
    )
    SELECT email.outcome, email.dead_lettered, known.recipient, known.state, known.attempt,
           known.event
    FROM email LEFT JOIN (
        SELECT recipient, state, attempt, event FROM written
        UNION ALL
        SELECT recipient, state, attempt, event FROM {RECIPIENTS_TABLE}
        WHERE message_id = $1 AND recipient <> ALL ($3::text[])
    ) AS known ON true"""
# The email's row is always updated, as above, so that RETURNING gives the mark that stays.
DEAD_LETTER = f"""
    WITH email AS (
        INSERT INTO {TABLE} AS e (message_id, outcome, dead_lettered, source)
        VALUES ($1, 'dead-lettered', $2, $3)
        ON CONFLICT (message_id) DO UPDATE SET
            outcome = coalesce(e.outcome, excluded.outcome),
            dead_lettered = CASE WHEN e.outcome IS NULL
                                 THEN excluded.dead_lettered ELSE e.dead_lettered END,
            source = excluded.source, updated_at = now()
        RETURNING outcome, dead_lettered
    )
    SELECT email.outcome, email.dead_lettered, r.recipient, r.state, r.attempt, r.event
    FROM email LEFT JOIN {RECIPIENTS_TABLE} AS r ON r.message_id = $1"""
# Every worker prunes every hour: SKIP LOCKED lets them share the work, and leaves the emails
# a lane is writing to the next round instead of making either wait.
PRUNE = f"""
    WITH pruned AS (
        DELETE FROM {TABLE} WHERE message_id IN (
            SELECT message_id FROM {TABLE} WHERE updated_at < to_timestamp($1)
            LIMIT $2 FOR UPDATE SKIP LOCKED)
        RETURNING message_id
    ), recipients AS (
        DELETE FROM {RECIPIENTS_TABLE} WHERE message_id IN (SELECT message_id FROM pruned)
    )
    SELECT count(*) FROM pruned"""


class PostgresDedupeStore:
    """A row per email and a row per recipient; the upserts decide in the database, so two
    workers writing the same email at once (a rebalance) still leave one outcome per recipient.

    Each call is one round trip on a pooled connection, with a statement the connection
    prepared on its first use. A call on a connection the server has closed since (a restart)
    is made once more on a fresh one at once, so the first write after PostgreSQL comes back
    succeeds; while it is away, calls raise and the processor retries them with back-off.
    """

    def __init__(self, pool: Any, where: str) -> None:
        self._pool = pool
        self.where = where  # host:port/database, for log lines

    @classmethod
    async def connect(cls, url: str) -> PostgresDedupeStore:
        """Open the pool, check that the server answers, create the tables if they are
        missing (adopting an earlier version's)."""
        try:
            pool = await open_pool(
                url,
                setting="DEDUPE_URL",
                table=RECIPIENTS_TABLE,
                create_table=CREATE_TABLES,
                application_name="email-worker",
                max_size=POOL_MAX_CONNECTIONS,
            )
        except CannotOpenStore as error:
            raise CannotOpenDedupeStore(str(error)) from error
        return cls(pool, describe(url))

    async def state_of(self, message_id: str) -> DeliveryState | None:
        rows = await once_more_if_lost(lambda: self._pool.fetch(STATE_OF, message_id))
        return delivery_state(rows)

    async def record(
        self, message_id: str, rows: Sequence[RecipientRow], stage: int, source: str
    ) -> DeliveryState:
        ordered = in_write_order(rows)
        arguments = (
            message_id,
            source,
            [row.recipient for row in ordered],
            [row.state for row in ordered],
            [row.attempt for row in ordered],
            [row.event for row in ordered],
            stage,
        )
        written = await once_more_if_lost(lambda: self._pool.fetch(RECORD, *arguments))
        return _written_state(written)

    async def record_dead_lettered(
        self, message_id: str, event: bytes | None, source: str
    ) -> DeliveryState:
        written = await once_more_if_lost(
            lambda: self._pool.fetch(DEAD_LETTER, message_id, event, source)
        )
        return _written_state(written)

    async def prune(self, older_than: float) -> int:
        """Delete the emails last written before `older_than` (seconds since the epoch), each
        with its recipients, a batch per statement so no transaction holds many rows. Returns
        how many emails."""
        deleted = 0
        while True:
            batch: int = await once_more_if_lost(
                lambda: self._pool.fetchval(PRUNE, older_than, PRUNE_BATCH)
            )
            deleted += batch
            if batch < PRUNE_BATCH:
                return deleted

    async def close(self) -> None:
        await self._pool.close()


def _written_state(rows: Sequence[Any]) -> DeliveryState:
    state = delivery_state(rows)
    assert state is not None  # the statement has just written the email's row
    return state
