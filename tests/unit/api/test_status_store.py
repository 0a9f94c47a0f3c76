"""Every store of the read model keeps each event once by id, a batch in one transaction, fills
in the position of the API's own `accepted` event from its first copy read from the topic, and
gives an email's events back in the order they were published. The contract below runs here on
SQLite and on the unit tests' memory store, and unchanged on a real PostgreSQL in
tests/integration/api/test_postgres_status_store.py."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from services.api.idempotency_store import SqliteIdempotencyStore
from services.api.status import EventPosition
from services.api.status_store import (
    EventRow,
    PostgresStatusStore,
    SqliteStatusStore,
    StatusStore,
    StatusStoreUnavailable,
    status_store,
)
from shared.events import Event, parse_event
from shared.settings import Settings
from shared.store import CannotOpenStore
from tests.unit.api.email_events import MESSAGE_ID, accepted, deferred, sent
from tests.unit.api.memory_status_store import MemoryStatusStore
from tests.unit.api.opened_stores import opened_stores

OpenStore = Callable[[], Awaitable[StatusStore]]
ANA, BOB = "ana@example.com", "bob@example.com"


def row(event: Event, offset: int | None = None, partition: int = 1) -> EventRow:
    position = None if offset is None else EventPosition(partition=partition, offset=offset)
    return EventRow.of(event, event.to_kafka().value, position)


class StatusStoreContract:
    """What every store does. A subclass provides the fixture `open_store`: each call opens one
    more store on the same database, as another API process, or another host, would."""

    async def test_an_email_has_no_events_at_first(self, open_store: OpenStore) -> None:
        store = await open_store()

        assert await store.events_of(MESSAGE_ID) == []

    async def test_an_event_kept_reads_back_as_it_was_written(self, open_store: OpenStore) -> None:
        store = await open_store()
        event = deferred(ANA)

        await store.add([row(event, offset=7)])

        [kept] = await store.events_of(MESSAGE_ID)
        assert kept == row(event, offset=7)
        assert parse_event(kept.body.encode()) == event
        assert kept.recipient == ANA
        assert kept.type == "deferred"

    async def test_an_event_applied_twice_is_kept_once(self, open_store: OpenStore) -> None:
        first, second = await open_store(), await open_store()
        events = [row(accepted(ANA), 0), row(sent(ANA), 1)]

        await first.add(events)
        await second.add(events)
        await first.add([row(sent(ANA), 1), row(sent(ANA), 1)])  # copies within a batch

        assert [kept.type for kept in await second.events_of(MESSAGE_ID)] == ["accepted", "sent"]

    async def test_a_copy_with_another_position_leaves_the_first_as_it_was(
        self, open_store: OpenStore
    ) -> None:
        store = await open_store()

        await store.add([row(sent(ANA), offset=1)])
        await store.add([row(sent(ANA), offset=9)])

        [kept] = await store.events_of(MESSAGE_ID)
        assert kept.position == EventPosition(partition=1, offset=1)

    async def test_the_apis_own_accepted_event_gets_its_position_from_the_first_copy_read(
        self, open_store: OpenStore
    ) -> None:
        api, projector = await open_store(), await open_store()

        await api.add([row(accepted(ANA))])
        assert [kept.position for kept in await projector.events_of(MESSAGE_ID)] == [None]
        await projector.add([row(accepted(ANA), offset=4)])
        await projector.add([row(accepted(ANA), offset=5)])  # the worker's copy
        await api.add([row(accepted(ANA))])  # a retried insert

        [kept] = await api.events_of(MESSAGE_ID)
        assert kept.position == EventPosition(partition=1, offset=4)

    async def test_events_come_back_in_the_order_they_were_published(
        self, open_store: OpenStore
    ) -> None:
        store = await open_store()
        # Applied out of order; the API's own accepted event (no position yet) comes first.
        await store.add([row(sent(ANA, attempt=1, seconds=61), 12), row(deferred(BOB), 11)])
        await store.add([row(accepted(ANA, BOB)), row(deferred(ANA, seconds=2), 10)])

        kept = await store.events_of(MESSAGE_ID)

        assert [(k.type, k.recipient) for k in kept] == [
            ("accepted", None),
            ("deferred", ANA),
            ("deferred", BOB),
            ("sent", ANA),
        ]

    async def test_only_the_emails_own_events_come_back(self, open_store: OpenStore) -> None:
        store = await open_store()
        other = accepted(ANA).model_copy(update={"message_id": "another-email"})

        await store.add([row(accepted(ANA), 0), row(other, 1)])

        assert [k.message_id for k in await store.events_of("another-email")] == ["another-email"]

    async def test_an_empty_batch_is_nothing_to_do(self, open_store: OpenStore) -> None:
        store = await open_store()

        await store.add([])

        assert await store.events_of(MESSAGE_ID) == []

    async def test_events_survive_reopening(self, open_store: OpenStore) -> None:
        first = await open_store()
        await first.add([row(accepted(ANA), 0)])
        await first.close()

        second = await open_store()

        assert len(await second.events_of(MESSAGE_ID)) == 1

    async def test_prune_deletes_the_events_applied_before_a_time(
        self, open_store: OpenStore
    ) -> None:
        store = await open_store()
        await store.add([row(accepted(ANA), 0)])
        after_first = time.time() + 0.01
        await asyncio.sleep(0.02)
        await store.add([row(sent(ANA), 1)])

        assert await store.prune(older_than=after_first) == 1

        assert [kept.type for kept in await store.events_of(MESSAGE_ID)] == ["sent"]


class TestSqliteStatusStore(StatusStoreContract):
    @pytest.fixture
    async def open_store(self, tmp_path: Path) -> AsyncIterator[OpenStore]:
        path = tmp_path / "api" / "store.sqlite3"
        async with opened_stores(lambda: SqliteStatusStore(path)) as open_store:
            yield open_store


class TestMemoryStatusStore(StatusStoreContract):
    """The unit tests' fake keeps the contract too (one store stands for every process)."""

    @pytest.fixture
    async def open_store(self) -> AsyncIterator[OpenStore]:
        shared = MemoryStatusStore()
        async with opened_stores(lambda: shared) as open_store:
            yield open_store


async def test_the_read_model_shares_the_file_of_the_idempotency_keys(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    keys, events = SqliteIdempotencyStore(path), SqliteStatusStore(path)
    await keys.open()
    await events.open()
    try:
        assert await keys.claim("k", "fp", "claim-1", 100.0) is None
        await events.add([row(accepted(ANA), 0)])
    finally:
        await events.close()
        await keys.close()

    with sqlite3.connect(path) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert {"idempotency_keys", "email_events", "email_events_message_id"} <= tables


async def test_a_batch_is_one_transaction(tmp_path: Path) -> None:
    """A batch that fails part way keeps none of its events: the consumer applies it again."""
    path = tmp_path / "store.sqlite3"
    async with opened_stores(lambda: SqliteStatusStore(path)) as open_store:
        store = await open_store()
        other_process = sqlite3.connect(path, isolation_level=None)
        other_process.execute(
            "CREATE TRIGGER refuse AFTER INSERT ON email_events WHEN NEW.type = 'sent' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        other_process.close()

        with pytest.raises(StatusStoreUnavailable, match="refused"):
            await store.add([row(accepted(ANA), 0), row(sent(ANA), 1)])

        assert await store.events_of(MESSAGE_ID) == []


async def test_waiting_for_another_process_lock_leaves_the_event_loop_free(
    tmp_path: Path,
) -> None:
    """Another API process holds the file's write lock: the batch waits in the store's thread,
    and reads and the event loop go on meanwhile."""
    path = tmp_path / "store.sqlite3"
    async with opened_stores(lambda: SqliteStatusStore(path)) as open_store:
        store = await open_store()
        other_process = sqlite3.connect(path, isolation_level=None)
        other_process.execute("BEGIN IMMEDIATE")
        try:
            adding = asyncio.create_task(store.add([row(accepted(ANA), 0)]))
            started = time.monotonic()
            await asyncio.sleep(0.2)
            slept = time.monotonic() - started
            assert not adding.done(), "the batch waits for the lock"
            assert await store.events_of(MESSAGE_ID) == [], "reads go on"
        finally:
            other_process.execute("COMMIT")
            other_process.close()

        await adding
        assert len(await store.events_of(MESSAGE_ID)) == 1
        assert slept < 0.5, f"the loop stalled: a 0.2 s sleep took {slept:.2f} s"


async def test_a_sqlite_file_that_cannot_be_opened_names_api_db_path(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    store = SqliteStatusStore(not_a_directory / "store.sqlite3")

    with pytest.raises(CannotOpenStore, match="choose another with API_DB_PATH"):
        await store.open()


async def test_a_store_not_open_says_so() -> None:
    store = SqliteStatusStore(Path("/nonexistent/store.sqlite3"))

    with pytest.raises(StatusStoreUnavailable, match="not open"):
        await store.events_of(MESSAGE_ID)
    with pytest.raises(StatusStoreUnavailable, match="not open"):
        await store.add([row(accepted(ANA), 0)])


def test_the_store_is_where_the_idempotency_keys_are(tmp_path: Path) -> None:
    url = "postgresql://api:secret@db.internal:5432/email"
    from_url = status_store(Settings(_env_file=None, api_store_url=url).api_store_url or "")
    settings = Settings(_env_file=None, run_dir=tmp_path)
    from_path = status_store(settings.api_store_url or settings.api_db_path)

    assert isinstance(from_url, PostgresStatusStore)
    assert from_url.where == "db.internal:5432/email", "no password in messages"
    assert isinstance(from_path, SqliteStatusStore)


async def test_batches_added_together_are_each_kept(tmp_path: Path) -> None:
    """They share transactions (a group commit); each caller returns once its own is written."""
    path = tmp_path / "store.sqlite3"
    async with opened_stores(lambda: SqliteStatusStore(path)) as open_store:
        store = await open_store()
        emails = [accepted(ANA).model_copy(update={"message_id": f"m-{n}"}) for n in range(50)]

        await asyncio.gather(*(store.add([row(email, n)]) for n, email in enumerate(emails)))

        for email in emails:
            assert len(await store.events_of(email.message_id)) == 1
