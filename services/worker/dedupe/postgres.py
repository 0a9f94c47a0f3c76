"""The dedupe store in PostgreSQL: one table that the workers of every host share, so a record
read again on another host after a rebalance still goes only to the recipients still owed it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]

from services.worker.dedupe.contract import (
    PRUNE_BATCH,
    CannotOpenDedupeStore,
    DeliveryState,
    Outcome,
)

TABLE = "email_delivery_states"
# Lanes write at once, but each write holds a connection for one round trip: a few suffice,
# and every worker on every host keeps its own (PostgreSQL allows 100 by default).
POOL_MAX_CONNECTIONS = 8
CONNECT_TIMEOUT_SECONDS = 5.0
STATEMENT_TIMEOUT_SECONDS = 10.0  # a call fails, and the processor retries, rather than hang

CREATE_TABLE = f"""
    CREATE TABLE IF NOT EXISTS {TABLE} (
        message_id text PRIMARY KEY,
        outcome    text CHECK (outcome IN ('delivered', 'dead-lettered')),  -- NULL: some owed
        accepted   text[] NOT NULL DEFAULT '{{}}',  -- recipients the server took (250)
        source     text NOT NULL,  -- topic-partition and offset of the last write
        updated_at timestamptz NOT NULL DEFAULT now()  -- the server's clock, for pruning
    );
    CREATE INDEX IF NOT EXISTS {TABLE}_updated_at ON {TABLE} (updated_at)"""
STATE_OF = f"SELECT outcome, accepted FROM {TABLE} WHERE message_id = $1"
RECORD_ACCEPTED = f"""
    INSERT INTO {TABLE} AS state (message_id, accepted, source) VALUES ($1, $2, $3)
    ON CONFLICT (message_id) DO UPDATE
    SET accepted = state.accepted || excluded.accepted, source = excluded.source,
        updated_at = now()
    WHERE state.outcome IS NULL"""
RECORD = f"""
    INSERT INTO {TABLE} AS state (message_id, outcome, source) VALUES ($1, $2, $3)
    ON CONFLICT (message_id) DO UPDATE
    SET outcome = excluded.outcome, source = excluded.source, updated_at = now()
    WHERE state.outcome IS NULL"""
# Every worker prunes every hour: SKIP LOCKED lets them share the work, and leaves the rows a
# lane is writing to the next round instead of making either wait.
PRUNE = f"""
    DELETE FROM {TABLE} WHERE message_id IN (
        SELECT message_id FROM {TABLE} WHERE updated_at < to_timestamp($1)
        LIMIT $2 FOR UPDATE SKIP LOCKED)"""

T = TypeVar("T")

# What a pooled connection raises once the server behind it has gone (a restart, a failover).
CONNECTION_LOST = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


class PostgresDedupeStore:
    """One row per email, keyed by its message id; the upserts decide in the database, so two
    workers writing the same email at once (a rebalance) still leave the first outcome.

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
        """Open the pool, check that the server answers, create the table if it is missing."""
        where = describe(url)
        pool = asyncpg.create_pool(
            url,
            # Opened when first needed, then kept however long they idle: a new connection
            # would cost the write after a 250 several round trips more. No floor: asyncpg
            # would reconnect to it in the background while the server is away, logging a
            # traceback each time; a call reconnects on its own.
            min_size=0,
            max_size=POOL_MAX_CONNECTIONS,
            max_inactive_connection_lifetime=0,
            timeout=CONNECT_TIMEOUT_SECONDS,
            command_timeout=STATEMENT_TIMEOUT_SECONDS,
            reset=_keep_session,
            server_settings={"application_name": "email-worker"},
        )
        try:
            await pool
            async with pool.acquire() as connection:
                await _create_table_once(connection)
        except Exception as error:
            await pool.close()
            raise CannotOpenDedupeStore(cannot_open_reason(error, url)) from error
        return cls(pool, where)

    async def state_of(self, message_id: str) -> DeliveryState | None:
        row = await self._once_more_if_lost(lambda: self._pool.fetchrow(STATE_OF, message_id))
        if row is None:
            return None
        outcome = cast(Outcome | None, row["outcome"])
        return DeliveryState(outcome, frozenset(row["accepted"]))

    async def record_accepted(
        self, message_id: str, recipients: Collection[str], source: str
    ) -> None:
        """Add recipients the server took while others are still owed the email."""
        await self._once_more_if_lost(
            lambda: self._pool.execute(RECORD_ACCEPTED, message_id, list(recipients), source)
        )

    async def record(self, message_id: str, outcome: Outcome, source: str) -> None:
        """The email is finished; the first outcome recorded stays."""
        await self._once_more_if_lost(
            lambda: self._pool.execute(RECORD, message_id, outcome, source)
        )

    async def prune(self, older_than: float) -> int:
        """Delete the states last written before `older_than` (seconds since the epoch), a
        batch per statement so no transaction holds many rows. Returns the count."""
        deleted = 0
        while True:
            status: str = await self._once_more_if_lost(
                lambda: self._pool.execute(PRUNE, older_than, PRUNE_BATCH)
            )
            batch = int(status.rpartition(" ")[2])  # "DELETE 1000"
            deleted += batch
            if batch < PRUNE_BATCH:
                return deleted

    async def close(self) -> None:
        await self._pool.close()

    @staticmethod
    async def _once_more_if_lost(call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except TimeoutError:
            raise  # a server that is slow or out of reach: a second wait would only double it
        except CONNECTION_LOST:
            # The pool replaces a closed connection on the next acquire. Making the call again
            # is safe: every statement here is idempotent, even one that did commit before
            # its answer was lost.
            return await call()


async def _create_table_once(connection: Any) -> None:
    """CREATE TABLE IF NOT EXISTS alone can fail when workers start together (both see no
    table; one insert into the catalogue loses): a lock held until the commit lines them up.
    A table that exists already is left alone, so the user needs no CREATE privilege then."""
    if await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", TABLE):
        return
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", TABLE)
        await connection.execute(CREATE_TABLE)


async def _keep_session(connection: Any) -> None:
    """The store sets no session state (no SET, LISTEN or session lock): asyncpg's default reset,
    one round trip more on every release, has nothing to undo."""


def describe(url: str) -> str:
    """host:port/database of a postgresql:// URL, without its user or password."""
    parts = urlsplit(url)
    return f"{parts.netloc.rpartition('@')[2] or 'localhost'}{parts.path}"


def cannot_open_reason(error: BaseException, url: str) -> str:
    """One line: what went wrong opening the store at `url`, and what to change."""
    where = describe(url)
    database = urlsplit(url).path.lstrip("/") or "(the user's name)"
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        return (
            f"PostgreSQL at {where} has no database {database}: create it (createdb "
            f"{database}) or name an existing one in DEDUPE_URL"
        )
    if isinstance(error, asyncpg.InvalidAuthorizationSpecificationError):
        return f"PostgreSQL at {where} refused DEDUPE_URL's user or password ({error})"
    if isinstance(error, asyncpg.ClientConfigurationError | ValueError):
        return f"DEDUPE_URL is not a PostgreSQL URL asyncpg understands ({error})"
    if isinstance(error, OSError | TimeoutError | asyncpg.CannotConnectNowError):
        reason = str(error) or type(error).__name__
        return (
            f"cannot reach PostgreSQL at {where} ({reason}): check DEDUPE_URL's host and port "
            "and that PostgreSQL runs there (`python -m deploy.local.postgres start` runs one "
            "on this machine)"
        )
    if isinstance(error, asyncpg.InsufficientPrivilegeError):
        return (
            f"PostgreSQL at {where} refused to create the table {TABLE} ({error}): grant "
            "DEDUPE_URL's user CREATE on the schema, or create the table once as its owner"
        )
    return f"PostgreSQL at {where} failed to open the store ({type(error).__name__}: {error})"
