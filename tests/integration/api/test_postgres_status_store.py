"""The read model on a real PostgreSQL (API_STORE_URL=postgresql://...): the same contract as
SQLite, one table that the API processes of every host fill and answer from, beside the
Idempotency-Keys, and StatusStoreUnavailable while the server is away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import pytest

from deploy.local.postgres import LocalPostgres
from services.api.idempotency_store import PostgresIdempotencyStore
from services.api.status_store import PostgresStatusStore, StatusStoreUnavailable
from tests.unit.api.email_events import MESSAGE_ID, accepted, sent
from tests.unit.api.opened_stores import opened_stores
from tests.unit.api.test_status_store import ANA, OpenStore, StatusStoreContract, row


class TestPostgresStatusStore(StatusStoreContract):
    @pytest.fixture
    async def open_store(self, store_url: str) -> AsyncIterator[OpenStore]:
        async with opened_stores(lambda: PostgresStatusStore(store_url)) as open_store:
            yield open_store


async def test_api_processes_starting_together_create_the_table_once(store_url: str) -> None:
    async with opened_stores(lambda: PostgresStatusStore(store_url)) as open_store:
        stores = await asyncio.gather(*(open_store() for _ in range(8)))

        await asyncio.gather(*(store.add([row(accepted(ANA), 0)]) for store in stores))

        assert len(await stores[0].events_of(MESSAGE_ID)) == 1


async def test_the_read_model_lives_beside_the_idempotency_keys(store_url: str) -> None:
    keys = PostgresIdempotencyStore(store_url)
    await keys.open()
    async with opened_stores(lambda: PostgresStatusStore(store_url)) as open_store:
        await (await open_store()).add([row(accepted(ANA), 0)])
    await keys.close()

    connection = await asyncpg.connect(store_url)
    try:
        tables = {
            name
            for (name,) in await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
    finally:
        await connection.close()
    assert {"idempotency_keys", "email_events"} <= tables


async def test_while_postgresql_is_away_calls_fail_cleanly_and_work_again_after(
    postgresql: LocalPostgres, store_url: str
) -> None:
    async with opened_stores(lambda: PostgresStatusStore(store_url)) as open_store:
        store = await open_store()
        await store.add([row(accepted(ANA), 0)])
        await asyncio.to_thread(postgresql.stop)
        try:
            with pytest.raises(
                StatusStoreUnavailable, match=r"PostgreSQL at 127\.0\.0\.1:\d+/test_"
            ):
                await store.add([row(sent(ANA), 1)])
            with pytest.raises(StatusStoreUnavailable):
                await store.events_of(MESSAGE_ID)
        finally:
            await asyncio.to_thread(postgresql.start)

        await store.add([row(sent(ANA), 1)])
        assert [kept.type for kept in await store.events_of(MESSAGE_ID)] == ["accepted", "sent"]
