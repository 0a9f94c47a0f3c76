"""The dedupe store on a real PostgreSQL (DEDUPE_URL=postgresql://...): the same contract as
SQLite, shared by several hosts at once, failing cleanly while the server is away and working
again, without a restart, once it is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from deploy.local.postgres import LocalPostgres
from services.worker.dedupe import (
    CannotOpenDedupeStore,
    DeliveryState,
    PostgresDedupeStore,
    RecipientRow,
    open_dedupe_store,
)
from services.worker.mime import OutgoingEmail
from services.worker.retry import RetryPolicy
from services.worker.smtp import Transaction
from tests.conftest import free_port
from tests.integration.worker.test_start import start_worker
from tests.postgres import fresh_database
from tests.unit.worker.fakes import FakeMailer, email_processor, kafka_record
from tests.unit.worker.test_dedupe import (
    DedupeStoreContract,
    EarlierEmail,
    OpenStore,
    WriteEarlierVersion,
    opened_stores,
)

PASSWORD = "never-printed-at-start"


@pytest.fixture
async def dedupe_url(postgresql: LocalPostgres) -> AsyncIterator[str]:
    async with fresh_database(postgresql) as url:
        yield url


@pytest.fixture
async def store(dedupe_url: str) -> AsyncIterator[PostgresDedupeStore]:
    opened = await PostgresDedupeStore.connect(dedupe_url)
    yield opened
    await opened.close()


SENT = RecipientRow("ana@example.com", "sent", 0, b"sent")


class TestPostgresDedupeStore(DedupeStoreContract):
    @pytest.fixture
    async def open_store(self, dedupe_url: str) -> AsyncIterator[OpenStore]:
        async with opened_stores(lambda: open_dedupe_store(dedupe_url)) as open_store:
            yield open_store

    @pytest.fixture
    def write_earlier_version(self, dedupe_url: str) -> WriteEarlierVersion:
        async def write(emails: Sequence[EarlierEmail]) -> None:
            connection = await asyncpg.connect(dedupe_url)
            try:
                await connection.execute(
                    """CREATE TABLE email_delivery_states (
                           message_id text PRIMARY KEY,
                           outcome    text CHECK (outcome IN ('delivered', 'dead-lettered')),
                           accepted   text[] NOT NULL DEFAULT '{}',
                           source     text NOT NULL,
                           updated_at timestamptz NOT NULL DEFAULT now()
                       );
                       CREATE INDEX email_delivery_states_updated_at
                           ON email_delivery_states (updated_at)"""
                )
                await connection.executemany(
                    "INSERT INTO email_delivery_states VALUES ($1, $2, $3, $4, to_timestamp($5))",
                    [
                        (e.message_id, e.outcome, list(e.accepted), e.source, e.updated_at)
                        for e in emails
                    ],
                )
            finally:
                await connection.close()

        return write


async def test_workers_starting_together_create_the_table_once(dedupe_url: str) -> None:
    async with opened_stores(lambda: open_dedupe_store(dedupe_url)) as open_store:
        stores = await asyncio.gather(*(open_store() for _ in range(8)))

        await stores[0].record("m-1", [SENT], 0, "email.send-0 @1")
        expected = DeliveryState(recipients={SENT.recipient: SENT})
        assert [await store.state_of("m-1") for store in stores] == [expected] * 8


async def test_a_call_fails_while_postgresql_is_stopped_and_works_once_it_is_back(
    postgresql: LocalPostgres, store: PostgresDedupeStore
) -> None:
    await store.record("m-1", [SENT], 0, "email.send-0 @1")
    await asyncio.to_thread(postgresql.stop)
    try:
        async with asyncio.timeout(30):  # fails, and does not hang
            with pytest.raises(OSError, match=r"Connect call failed|Connection refused"):
                await store.record("m-2", [SENT], 0, "email.send-0 @2")
            with pytest.raises(OSError, match=r"Connect call failed|Connection refused"):
                await store.state_of("m-1")
            with pytest.raises(OSError, match=r"Connect call failed|Connection refused"):
                await store.record_dead_lettered("m-3", b"dead", "email.send-0 @3")
    finally:
        await asyncio.to_thread(postgresql.start)

    # The same store, the first call.
    written = await store.record("m-2", [SENT], 0, "email.send-0 @2")

    expected = DeliveryState(recipients={SENT.recipient: SENT})
    assert written == expected
    assert await store.state_of("m-1") == expected
    assert await store.state_of("m-2") == expected


class MailerThatStopsPostgres(FakeMailer):
    """Takes the email (250), but PostgreSQL stops just before the worker can record it."""

    def __init__(self, server: LocalPostgres) -> None:
        super().__init__()
        self.server = server
        self.stopped_postgres = asyncio.Event()

    async def send(self, email: OutgoingEmail, recipients: list[str]) -> Transaction:
        await asyncio.to_thread(self.server.stop)
        self.stopped_postgres.set()
        return await super().send(email, recipients)


async def test_the_worker_records_the_250_once_postgresql_is_back_without_a_restart(
    postgresql: LocalPostgres, store: PostgresDedupeStore
) -> None:
    processor = email_processor(store, retry=RetryPolicy(initial_seconds=0.2, max_seconds=0.5))
    mailer = MailerThatStopsPostgres(postgresql)

    async def restart_after_a_while() -> None:
        await mailer.stopped_postgres.wait()
        await asyncio.sleep(1.0)  # a few of the processor's retries fail meanwhile
        await asyncio.to_thread(postgresql.start)

    try:
        async with asyncio.timeout(60):
            outcome, _ = await asyncio.gather(
                processor.process(kafka_record(0, "m-1"), mailer, asyncio.Event()),
                restart_after_a_while(),
            )
    finally:
        await asyncio.to_thread(postgresql.start)

    assert outcome.finished == "delivered"
    assert mailer.attempts == 1, "sent once: the wait was for the store, not the server"
    state = await store.state_of("m-1")
    assert state is not None
    assert [row.state for row in state.recipients.values()] == ["sent"]


@pytest.mark.parametrize(
    ("url_of", "says"),
    [
        pytest.param(
            lambda server: f"postgresql://postgres@127.0.0.1:{free_port()}/dedupe",
            "cannot reach PostgreSQL at 127.0.0.1:",
            id="nothing_listens",
        ),
        pytest.param(
            lambda server: f"postgresql://postgres@127.0.0.1:{server.port}/no_such_database",
            "has no database no_such_database",
            id="no_database",
        ),
        pytest.param(
            lambda server: f"postgresql://nobody:{PASSWORD}@127.0.0.1:{server.port}/postgres",
            "refused DEDUPE_URL's user or password",
            id="unknown_user",
        ),
    ],
)
async def test_a_store_that_cannot_be_opened_is_one_clear_error(
    postgresql: LocalPostgres, url_of: Callable[[LocalPostgres], str], says: str
) -> None:
    with pytest.raises(CannotOpenDedupeStore) as raised:
        await open_dedupe_store(url_of(postgresql))

    message = str(raised.value)
    assert says in message
    assert "\n" not in message
    assert PASSWORD not in message


def test_the_worker_stops_with_one_line_when_postgresql_is_unreachable(tmp_path: Path) -> None:
    port = free_port()
    result = start_worker(
        tmp_path, DEDUPE_URL=f"postgresql://worker:{PASSWORD}@127.0.0.1:{port}/dedupe"
    )

    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"cannot open the dedupe store: cannot reach PostgreSQL at 127.0.0.1:{port}"
    )
    assert "DEDUPE_URL" in line
    assert PASSWORD not in line
