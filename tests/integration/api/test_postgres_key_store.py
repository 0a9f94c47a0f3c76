"""The store of Idempotency-Keys on a real PostgreSQL (API_STORE_URL=postgresql://...): the same
contract as SQLite, shared by API processes on several hosts, and a 503 for requests with a key
while the server is away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from deploy.local.postgres import LocalPostgres
from services.api.idempotency_store import PostgresIdempotencyStore, StoreUnavailable
from shared.settings import Settings
from shared.store import CannotOpenStore
from tests.conftest import free_port
from tests.unit.api.fakes import app_with_fakes
from tests.unit.api.opened_stores import opened_stores
from tests.unit.api.test_app import FakeEmailQueue, email
from tests.unit.api.test_idempotency_store import KeyStoreContract, OpenStore


class TestPostgresKeyStore(KeyStoreContract):
    @pytest.fixture
    async def open_store(self, store_url: str) -> AsyncIterator[OpenStore]:
        async with opened_stores(lambda: PostgresIdempotencyStore(store_url)) as open_store:
            yield open_store


async def test_api_processes_starting_together_create_the_table_once(store_url: str) -> None:
    async with opened_stores(lambda: PostgresIdempotencyStore(store_url)) as open_store:
        stores = await asyncio.gather(*(open_store() for _ in range(8)))

        assert await stores[0].claim("k", "fp", "claim-1", 100.0) is None
        found = await asyncio.gather(*(store.claim("k", "fp", "c", 101.0) for store in stores))
        assert {row.claim for row in found if row is not None} == {"claim-1"}


async def test_two_api_hosts_answer_a_retry_with_the_first_answer(store_url: str) -> None:
    """A retry that a load balancer sends to the other host is replayed there, not queued."""
    queue = FakeEmailQueue()
    apps = [
        app_with_fakes(Settings(_env_file=None), queue, PostgresIdempotencyStore(store_url))  # type: ignore[arg-type]
        for _ in range(2)
    ]
    async with (
        apps[0].router.lifespan_context(apps[0]),
        apps[1].router.lifespan_context(apps[1]),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[0]), base_url="http://a") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[1]), base_url="http://b") as b,
    ):
        headers = {"Idempotency-Key": "order-42"}
        first = await a.post("/emails", json=email(), headers=headers)
        retry = await b.post("/emails", json=email(), headers=headers)
        other = await b.post("/emails", json=email(subject="another"), headers=headers)

    assert first.status_code == retry.status_code == 202
    assert retry.content == first.content
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 422
    assert len(queue.records) == 1


async def test_while_postgresql_is_away_calls_fail_cleanly_and_work_again_after(
    postgresql: LocalPostgres, store_url: str
) -> None:
    async with opened_stores(lambda: PostgresIdempotencyStore(store_url)) as open_store:
        store = await open_store()
        assert await store.claim("before", "fp", "c", 100.0) is None
        await asyncio.to_thread(postgresql.stop)
        try:
            with pytest.raises(StoreUnavailable, match=r"PostgreSQL at 127\.0\.0\.1:\d+/test_"):
                await store.claim("during", "fp", "c", 101.0)
        finally:
            await asyncio.to_thread(postgresql.start)

        assert await store.claim("after", "fp", "c", 102.0) is None
        found = await store.claim("before", "fp", "c-2", 103.0)
        assert found is not None


async def test_a_server_that_is_not_there_is_one_clear_line_naming_api_store_url() -> None:
    store = PostgresIdempotencyStore(f"postgresql://api@127.0.0.1:{free_port()}/email")

    with pytest.raises(CannotOpenStore) as refused:
        await store.open()

    assert "cannot reach PostgreSQL at 127.0.0.1:" in str(refused.value)
    assert "check API_STORE_URL's host and port" in str(refused.value)
