"""Every store of Idempotency-Keys lets one request claim a key, keeps its answer, and lets a
write for a claim taken over since change nothing. The contract below runs here on SQLite and
on the unit tests' memory store, and unchanged on a real PostgreSQL in
tests/integration/api/test_postgres_key_store.py."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.api.idempotency import KeyRow
from services.api.idempotency_store import (
    IdempotencyStore,
    PostgresIdempotencyStore,
    SqliteIdempotencyStore,
    idempotency_store,
)
from services.api.idempotency_store.contract import PRUNE_BATCH
from shared.settings import Settings
from shared.store import CannotOpenStore
from tests.unit.api.key_store import MemoryKeyStore
from tests.unit.api.opened_stores import opened_stores

OpenStore = Callable[[], Awaitable[IdempotencyStore]]
ANSWER = b'{"id":"m-1","status":"queued","topic":"email.send","partition":1,"offset":7}'


class KeyStoreContract:
    """What every store does. A subclass provides the fixture `open_store`: each call opens one
    more store on the same database, as another API process, or another host, would."""

    async def test_the_first_claim_wins_and_later_ones_read_its_row(
        self, open_store: OpenStore
    ) -> None:
        first, second = await open_store(), await open_store()

        assert await first.claim("k", "fp-1", "claim-1", 100.0) is None
        found = await second.claim("k", "fp-2", "claim-2", 101.0)

        assert found == KeyRow("k", "fp-1", "in_flight", "claim-1", 100.0, 100.0)

    async def test_of_many_requests_racing_for_a_key_exactly_one_claims_it(
        self, open_store: OpenStore
    ) -> None:
        stores = [await open_store() for _ in range(3)]

        found = await asyncio.gather(
            *(stores[number % 3].claim("k", "fp", f"claim-{number}", 100.0) for number in range(30))
        )

        assert found.count(None) == 1
        claimed = f"claim-{found.index(None)}"
        assert {row.claim for row in found if row is not None} == {claimed}

    async def test_a_finished_answer_is_kept_byte_for_byte(self, open_store: OpenStore) -> None:
        first, second = await open_store(), await open_store()
        await first.claim("k", "fp", "claim-1", 100.0)

        await first.finish("k", "claim-1", 202, ANSWER)

        found = await second.claim("k", "fp", "claim-2", 102.0)
        assert found == KeyRow("k", "fp", "done", "claim-1", 100.0, 100.0, 202, ANSWER)

    async def test_an_interrupted_claim_can_be_taken_over_with_its_window_kept(
        self, open_store: OpenStore
    ) -> None:
        store = await open_store()
        await store.claim("k", "fp", "claim-1", 100.0)
        await store.interrupt("k", "claim-1")
        found = await store.claim("k", "fp", "claim-2", 105.0)
        assert found is not None
        assert found.state == "interrupted"

        assert await store.take_over(found, "fp", "claim-2", 105.0, restart_window=False)

        assert await store.claim("k", "fp", "claim-3", 106.0) == KeyRow(
            "k", "fp", "in_flight", "claim-2", 100.0, 105.0
        )

    async def test_an_expired_key_taken_over_starts_a_new_window_with_the_new_body(
        self, open_store: OpenStore
    ) -> None:
        store = await open_store()
        await store.claim("k", "fp-1", "claim-1", 100.0)
        await store.finish("k", "claim-1", 202, ANSWER)
        found = await store.claim("k", "fp-2", "claim-2", 90_000.0)
        assert found is not None

        assert await store.take_over(found, "fp-2", "claim-2", 90_000.0, restart_window=True)

        assert await store.claim("k", "fp-2", "claim-3", 90_001.0) == KeyRow(
            "k", "fp-2", "in_flight", "claim-2", 90_000.0, 90_000.0
        )

    async def test_of_two_requests_taking_over_one_row_only_one_succeeds(
        self, open_store: OpenStore
    ) -> None:
        first, second = await open_store(), await open_store()
        await first.claim("k", "fp", "claim-1", 100.0)
        await first.interrupt("k", "claim-1")
        found = await second.claim("k", "fp", "claim-2", 105.0)
        assert found is not None

        taken = await asyncio.gather(
            first.take_over(found, "fp", "claim-2", 105.0, restart_window=False),
            second.take_over(found, "fp", "claim-3", 105.0, restart_window=False),
        )

        assert sorted(taken) == [False, True]

    async def test_writes_for_a_claim_taken_over_change_nothing(
        self, open_store: OpenStore
    ) -> None:
        store = await open_store()
        await store.claim("k", "fp", "claim-1", 100.0)
        found = await store.claim("k", "fp", "claim-2", 200.0)
        assert found is not None
        assert await store.take_over(found, "fp", "claim-2", 200.0, restart_window=False)

        await store.finish("k", "claim-1", 202, b"{}")
        await store.interrupt("k", "claim-1")
        await store.release("k", "claim-1")

        assert await store.claim("k", "fp", "claim-3", 201.0) == KeyRow(
            "k", "fp", "in_flight", "claim-2", 100.0, 200.0
        )

    async def test_a_finished_answer_is_not_interrupted(self, open_store: OpenStore) -> None:
        store = await open_store()
        await store.claim("k", "fp", "claim-1", 100.0)
        await store.finish("k", "claim-1", 202, ANSWER)

        await store.interrupt("k", "claim-1")

        found = await store.claim("k", "fp", "claim-2", 101.0)
        assert found is not None
        assert found.state == "done"

    async def test_a_released_key_is_free_for_any_body(self, open_store: OpenStore) -> None:
        store = await open_store()
        await store.claim("k", "fp-1", "claim-1", 100.0)

        await store.release("k", "claim-1")

        assert await store.claim("k", "fp-2", "claim-2", 101.0) is None

    async def test_keys_survive_reopening(self, open_store: OpenStore) -> None:
        store = await open_store()
        await store.claim("k", "fp", "claim-1", 100.0)
        await store.finish("k", "claim-1", 202, ANSWER)
        await store.close()

        found = await (await open_store()).claim("k", "fp", "claim-2", 101.0)
        assert found is not None
        assert found.body == ANSWER

    async def test_prune_deletes_the_keys_first_claimed_before_the_bound(
        self, open_store: OpenStore
    ) -> None:
        store = await open_store()
        old = PRUNE_BATCH + 5  # more than one batch
        for number in range(old):
            await store.claim(f"old-{number}", "fp", "c", 100.0)
        await store.claim("kept", "fp", "c", 200.0)

        assert await store.prune(older_than=150.0) == old

        assert await store.claim("old-0", "fp", "c-2", 300.0) is None, "pruned: free again"
        assert await store.claim("kept", "fp", "c-2", 300.0) is not None


class TestSqliteKeyStore(KeyStoreContract):
    @pytest.fixture
    async def open_store(self, tmp_path: Path) -> AsyncIterator[OpenStore]:
        path = tmp_path / "api" / "store.sqlite3"
        async with opened_stores(lambda: SqliteIdempotencyStore(path)) as open_store:
            yield open_store


class TestMemoryKeyStore(KeyStoreContract):
    """The unit tests' fake keeps the contract too (one store stands for every process)."""

    @pytest.fixture
    async def open_store(self) -> AsyncIterator[OpenStore]:
        shared = MemoryKeyStore()
        async with opened_stores(lambda: shared) as open_store:
            yield open_store

    async def test_keys_survive_reopening(self, open_store: OpenStore) -> None:
        """In memory: nothing to reopen."""


async def test_waiting_for_another_process_lock_leaves_the_event_loop_free(
    tmp_path: Path,
) -> None:
    """Another API process holds the file's write lock: the claim waits in the store's thread,
    and the event loop goes on answering requests meanwhile."""
    path = tmp_path / "store.sqlite3"
    async with opened_stores(lambda: SqliteIdempotencyStore(path)) as open_store:
        store = await open_store()
        other_process = sqlite3.connect(path, isolation_level=None)
        other_process.execute("BEGIN IMMEDIATE")
        try:
            claiming = asyncio.create_task(store.claim("k", "fp", "claim-1", 100.0))
            started = time.monotonic()
            await asyncio.sleep(0.2)
            slept = time.monotonic() - started
            assert not claiming.done(), "the claim waits for the lock"
        finally:
            other_process.execute("COMMIT")
            other_process.close()

        assert await claiming is None
        assert slept < 0.5, f"the loop stalled: a 0.2 s sleep took {slept:.2f} s"


async def test_a_sqlite_file_that_cannot_be_opened_names_api_db_path(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    store = SqliteIdempotencyStore(not_a_directory / "store.sqlite3")

    with pytest.raises(CannotOpenStore, match="choose another with API_DB_PATH"):
        await store.open()
    await store.close()


def test_the_store_is_the_one_the_settings_name(tmp_path: Path) -> None:
    url = "postgresql://api:secret@db.internal:5432/email"
    from_url = idempotency_store(Settings(_env_file=None, api_store_url=url).api_store_url or "")
    settings = Settings(_env_file=None, run_dir=tmp_path)
    from_path = idempotency_store(settings.api_store_url or settings.api_db_path)

    assert isinstance(from_url, PostgresIdempotencyStore)
    assert from_url.where == "db.internal:5432/email", "no password in messages"
    assert isinstance(from_path, SqliteIdempotencyStore)
    assert settings.api_db_path == tmp_path / "api" / "store.sqlite3"


def test_api_store_url_names_a_postgresql_database_or_a_sqlite_file(tmp_path: Path) -> None:
    url = "postgresql://api@db:5432/email"

    assert Settings(_env_file=None, api_store_url=url).api_store_url == url
    assert Settings(_env_file=None, api_store_url="").api_store_url is None
    relative = Settings(_env_file=None, run_dir=tmp_path, api_store_url="keys.sqlite3")
    assert relative.api_store_url == str(tmp_path / "keys.sqlite3")
    with pytest.raises(ValidationError, match="api_store_url"):
        Settings(_env_file=None, api_store_url="mysql://db/email")
