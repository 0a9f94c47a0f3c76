"""Idempotency-Keys in PostgreSQL: one table that the API processes of every host share, so a
retry that reaches another host still gets the first answer, or a 409 while it is in flight."""

from __future__ import annotations

from services.api.idempotency import KeyRow
from services.api.idempotency_store.contract import PRUNE_BATCH, TABLE, StoreUnavailable
from shared.store import PostgresPool

# Each request with a key holds a connection for a round trip or two: a few suffice, and
# every API process on every host keeps its own (PostgreSQL allows 100 by default).
POOL_MAX_CONNECTIONS = 8

# Times are the API's clock, as seconds since the epoch: the same numbers on both stores, and
# for the pure rules of services/api/idempotency.py.
CREATE_TABLE = f"""
    CREATE TABLE IF NOT EXISTS {TABLE} (
        key         text PRIMARY KEY,
        fingerprint text NOT NULL,  -- sha256 of the route and the validated body
        state       text NOT NULL CHECK (state IN ('in_flight', 'done', 'interrupted')),
        claim       text NOT NULL,  -- the token of the request that claimed it last
        created_at  double precision NOT NULL,  -- its first claim
        claimed_at  double precision NOT NULL,  -- its last claim
        status      integer,  -- the answer, once done
        body        bytea
    );
    CREATE INDEX IF NOT EXISTS {TABLE}_created_at ON {TABLE} (created_at)"""
CLAIM = f"""
    INSERT INTO {TABLE} (key, fingerprint, state, claim, created_at, claimed_at)
    VALUES ($1, $2, 'in_flight', $3, $4, $4) ON CONFLICT (key) DO NOTHING RETURNING true"""
ROW = f"""
    SELECT key, fingerprint, state, claim, created_at, claimed_at, status, body
    FROM {TABLE} WHERE key = $1"""
TAKE_OVER = f"""
    UPDATE {TABLE} SET fingerprint = $3, state = 'in_flight', claim = $4, created_at = $5,
        claimed_at = $6, status = NULL, body = NULL
    WHERE key = $1 AND claim = $2"""
FINISH = f"""
    UPDATE {TABLE} SET state = 'done', status = $3, body = $4 WHERE key = $1 AND claim = $2"""
INTERRUPT = f"""
    UPDATE {TABLE} SET state = 'interrupted'
    WHERE key = $1 AND claim = $2 AND state = 'in_flight'"""
RELEASE = f"DELETE FROM {TABLE} WHERE key = $1 AND claim = $2"
# Every API process prunes every hour: SKIP LOCKED lets them share the work.
PRUNE = f"""
    DELETE FROM {TABLE} WHERE key IN (
        SELECT key FROM {TABLE} WHERE created_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)"""
# An attempt to claim a key finds it gone before it can read it (released or pruned in
# between) at most this often in a row before it is claimed or read.
CLAIM_ATTEMPTS = 3


class PostgresIdempotencyStore:
    """Each call is one round trip on a pooled connection (a claim that finds the key taken,
    two). A call on a connection the server closed since (a restart) is made once more at
    once on a fresh one: every statement is safe to repeat, since a claim's token tells its
    own row from another's. While the server is away, calls raise StoreUnavailable."""

    def __init__(self, url: str) -> None:
        self._db = PostgresPool(url, "API_STORE_URL", StoreUnavailable)
        self.where = self._db.where  # host:port/database, for messages

    async def open(self) -> None:
        """Open the pool, check that the server answers, create the table if it is missing."""
        await self._db.open(TABLE, CREATE_TABLE, "email-api", POOL_MAX_CONNECTIONS)

    async def claim(self, key: str, fingerprint: str, claim: str, now: float) -> KeyRow | None:
        for _ in range(CLAIM_ATTEMPTS):
            if await self._db.call(lambda pool: pool.fetchval(CLAIM, key, fingerprint, claim, now)):
                return None
            found = await self._db.call(lambda pool: pool.fetchrow(ROW, key))
            if found is not None:
                row = KeyRow(**dict(found))
                # The insert did commit, and only its answer was lost (once_more_if_lost).
                return None if row.claim == claim else row
        raise StoreUnavailable(
            f"PostgreSQL at {self.where}: key {key!r} was claimed and released "
            f"{CLAIM_ATTEMPTS} times while this request tried to claim or read it"
        )

    async def take_over(
        self, row: KeyRow, fingerprint: str, claim: str, now: float, restart_window: bool
    ) -> bool:
        created_at = now if restart_window else row.created_at
        status: str = await self._db.call(
            lambda pool: pool.execute(
                TAKE_OVER, row.key, row.claim, fingerprint, claim, created_at, now
            )
        )
        return status == "UPDATE 1"

    async def finish(self, key: str, claim: str, status: int, body: bytes) -> None:
        await self._db.call(lambda pool: pool.execute(FINISH, key, claim, status, body))

    async def interrupt(self, key: str, claim: str) -> None:
        await self._db.call(lambda pool: pool.execute(INTERRUPT, key, claim))

    async def release(self, key: str, claim: str) -> None:
        await self._db.call(lambda pool: pool.execute(RELEASE, key, claim))

    async def prune(self, older_than: float) -> int:
        return await self._db.delete_in_batches(PRUNE, older_than, PRUNE_BATCH)

    async def close(self) -> None:
        await self._db.close()
