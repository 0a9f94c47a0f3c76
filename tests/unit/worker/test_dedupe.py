"""Every dedupe store keeps, per email, the recipients the server took and the first outcome,
across processes, and prunes what no record can bring back. The contract below runs here on
SQLite and, unchanged, on a real PostgreSQL in tests/integration/worker/test_postgres_store.py."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.worker.dedupe import (
    CannotOpenDedupeStore,
    DeliveryState,
    PostgresDedupeStore,
    SqliteDedupeStore,
    open_dedupe_store,
)
from shared.settings import Settings

Store = SqliteDedupeStore | PostgresDedupeStore
OpenStore = Callable[[], Awaitable[Store]]


@asynccontextmanager
async def opened_stores(open_one: OpenStore) -> AsyncIterator[OpenStore]:
    """`open_one`, closing every store it opened on leaving."""
    opened: list[Store] = []

    async def open_and_keep() -> Store:
        opened.append(await open_one())
        return opened[-1]

    try:
        yield open_and_keep
    finally:
        for store in opened:
            await store.close()


class DedupeStoreContract:
    """What every store does. A subclass provides the fixture `open_store`: each call opens one
    more store on the same database, as another worker process, or another host, would."""

    async def test_unknown_ids_have_no_state(self, open_store: OpenStore) -> None:
        store = await open_store()

        assert await store.state_of("m-1") is None

    async def test_an_outcome_survives_reopening(self, open_store: OpenStore) -> None:
        store = await open_store()
        await store.record("m-1", "delivered", "email.send-0 offset 4")
        await store.close()

        assert await (await open_store()).state_of("m-1") == DeliveryState("delivered")

    async def test_two_stores_on_one_database_see_each_other(self, open_store: OpenStore) -> None:
        first, second = await open_store(), await open_store()

        await first.record_accepted("m-1", ["ana@example.com"], "email.send-0 offset 4")

        assert await second.state_of("m-1") == DeliveryState(None, frozenset({"ana@example.com"}))

    async def test_the_first_outcome_wins(self, open_store: OpenStore) -> None:
        store = await open_store()

        await store.record("m-1", "delivered", "email.send-0 offset 4")
        await store.record("m-1", "dead-lettered", "email.send-0 offset 9")

        state = await store.state_of("m-1")
        assert state is not None
        assert state.finished == "delivered"

    async def test_accepted_recipients_add_up_until_the_email_is_finished(
        self, open_store: OpenStore
    ) -> None:
        store = await open_store()

        await store.record_accepted("m-1", ["ana@example.com", "bo@example.com"], "email.send-0 @4")
        await store.record_accepted("m-1", ["cy@example.com"], "email.send-0 @4")
        partly = await store.state_of("m-1")
        await store.record("m-1", "delivered", "email.send-0 @4")
        await store.record_accepted("m-1", ["late@example.com"], "email.send-0 @4")

        assert partly == DeliveryState(
            None, frozenset({"ana@example.com", "bo@example.com", "cy@example.com"})
        )
        finished = await store.state_of("m-1")
        assert finished is not None
        assert finished.finished == "delivered"
        assert "late@example.com" not in finished.accepted

    async def test_states_older_than_the_cutoff_are_pruned(self, open_store: OpenStore) -> None:
        store = await open_store()
        for number in range(2500):
            await store.record(f"old-{number}", "delivered", "email.send-0 @1")
        await asyncio.sleep(0.01)
        cutoff = time.time()
        await asyncio.sleep(0.01)
        await store.record_accepted("new-1", ["ana@example.com"], "email.send-0 @9")
        await store.record("new-2", "dead-lettered", "email.send-0 @10")

        deleted = await store.prune(older_than=cutoff)

        assert deleted == 2500
        assert await store.state_of("old-0") is None
        assert await store.state_of("new-1") is not None
        assert await store.state_of("new-2") is not None


class TestSqliteDedupeStore(DedupeStoreContract):
    @pytest.fixture
    async def open_store(self, tmp_path: Path) -> AsyncIterator[OpenStore]:
        path = tmp_path / "worker" / "delivered.sqlite3"
        async with opened_stores(lambda: open_dedupe_store(path)) as open_store:
            yield open_store


async def test_the_finished_ids_of_an_earlier_version_are_carried_over(tmp_path: Path) -> None:
    path = tmp_path / "delivered.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            """CREATE TABLE finished_emails (message_id TEXT PRIMARY KEY, outcome TEXT NOT NULL,
               source TEXT NOT NULL, finished_at TEXT NOT NULL) WITHOUT ROWID"""
        )
        db.execute(
            "INSERT INTO finished_emails VALUES "
            "('m-1', 'delivered', 'email.send-0 offset 4', '2026-11-25T09:30:00+00:00')"
        )
    db.close()

    store = SqliteDedupeStore(path)

    assert await store.state_of("m-1") == DeliveryState("delivered")
    assert await store.prune(older_than=time.time()) == 1, "its time was carried over too"


async def test_a_sqlite_file_that_cannot_be_opened_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        CannotOpenDedupeStore, match=r"cannot open the SQLite file .*DEDUPE_DB_PATH"
    ):
        await open_dedupe_store(tmp_path)  # a directory


def test_dedupe_url_names_a_postgresql_database_or_a_sqlite_file(tmp_path: Path) -> None:
    url = "postgresql://worker:secret@db.internal:5432/dedupe"

    assert Settings(dedupe_url=url).dedupe_url == url
    assert Settings(dedupe_url="").dedupe_url is None, "empty means unset: DEDUPE_DB_PATH"
    relative = Settings(run_dir=tmp_path, dedupe_url="shared/dedupe.sqlite3").dedupe_url
    assert relative == str(tmp_path / "shared" / "dedupe.sqlite3")


@pytest.mark.parametrize(
    "url", ["mysql://worker@db.internal/dedupe", "postgresql://worker@db.internal:99999/dedupe"]
)
def test_a_dedupe_url_no_store_can_use_is_refused_at_start(url: str) -> None:
    with pytest.raises(ValidationError, match="dedupe_url"):
        Settings(dedupe_url=url)
