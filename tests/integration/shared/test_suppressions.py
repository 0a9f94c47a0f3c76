"""The suppression list on both stores it can live in, a SQLite file and a real PostgreSQL: the
same contract (case-insensitive addresses, the first reason staying, keyset pages, lifting),
shared by several processes at once, beside the dedupe store in its location."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deploy.local.postgres import LocalPostgres
from services.worker.dedupe import DeliveryState, RecipientRow, open_dedupe_store
from shared.store import CannotOpenStore
from shared.suppressions import (
    MAX_PAGE_SIZE,
    PostgresSuppressionList,
    SqliteSuppressionList,
    SuppressionsUnavailable,
    open_suppression_list,
)
from tests.conftest import free_port
from tests.postgres import fresh_database

Suppressions = SqliteSuppressionList | PostgresSuppressionList
OpenList = Callable[[], Awaitable[Suppressions]]
BOUNCE = "550 5.1.1 <ana@example.com>: Recipient address rejected: User unknown"


@asynccontextmanager
async def opened_lists(location: str | Path) -> AsyncIterator[OpenList]:
    """Opens lists at `location`, as more processes would, closing each on leaving."""
    opened: list[Suppressions] = []

    async def open_one() -> Suppressions:
        opened.append(await open_suppression_list(location, application_name="email-test"))
        return opened[-1]

    try:
        yield open_one
    finally:
        for suppressions in opened:
            await suppressions.close()


class SuppressionListContract:
    """What both stores do. A subclass provides `location`: a SQLite file or a database."""

    @pytest.fixture
    async def open_list(self, location: str | Path) -> AsyncIterator[OpenList]:
        async with opened_lists(location) as open_list:
            yield open_list

    async def test_no_address_is_suppressed_at_first(self, open_list: OpenList) -> None:
        suppressions = await open_list()

        assert await suppressions.suppressed(["ana@example.com", "bob@example.com"]) == {}
        assert await suppressions.suppressed([]) == {}

    async def test_a_suppressed_address_is_found_whatever_its_case(
        self, open_list: OpenList
    ) -> None:
        suppressions = await open_list()
        before = datetime.now(UTC)

        await suppressions.suppress("Ana@Example.COM", BOUNCE, "m-1")

        found = await suppressions.suppressed(
            ["ana@example.com", "ANA@EXAMPLE.COM", "bob@example.com"]
        )
        assert set(found) == {"ana@example.com", "ANA@EXAMPLE.COM"}, "keyed as asked"
        suppression = found["ANA@EXAMPLE.COM"]
        assert (suppression.address, suppression.reply, suppression.message_id) == (
            "ana@example.com",
            BOUNCE,
            "m-1",
        )
        assert suppression.created_at.tzinfo is not None
        assert before - timedelta(seconds=5) <= suppression.created_at <= datetime.now(UTC)

    async def test_one_address_asked_about_is_found_as_in_a_list(self, open_list: OpenList) -> None:
        suppressions = await open_list()
        await suppressions.suppress("ana@example.com", BOUNCE, "m-1")

        assert set(await suppressions.suppressed(["Ana@Example.com"])) == {"Ana@Example.com"}
        assert set(await suppressions.suppressed(["ana@example.com", "ANA@EXAMPLE.COM"])) == {
            "ana@example.com",
            "ANA@EXAMPLE.COM",
        }
        assert await suppressions.suppressed(["bob@example.com"]) == {}

    async def test_the_first_reason_stays(self, open_list: OpenList) -> None:
        suppressions = await open_list()

        await suppressions.suppress("ana@example.com", BOUNCE, "m-1")
        await suppressions.suppress("ANA@example.com", "550 No such user here", "m-2")

        found = await suppressions.suppressed(["ana@example.com"])
        assert (found["ana@example.com"].reply, found["ana@example.com"].message_id) == (
            BOUNCE,
            "m-1",
        )

    async def test_one_call_answers_for_every_recipient_of_an_email(
        self, open_list: OpenList
    ) -> None:
        suppressions = await open_list()
        recipients = [f"user{n}@example.com" for n in range(100)]
        for address in recipients[::3]:
            await suppressions.suppress(address, BOUNCE, "m-1")

        found = await suppressions.suppressed(recipients)

        assert sorted(found) == sorted(recipients[::3])

    async def test_every_process_sharing_the_store_sees_a_suppression_at_once(
        self, open_list: OpenList
    ) -> None:
        first, second = await open_list(), await open_list()

        await first.suppress("ana@example.com", BOUNCE, "m-1")

        assert "ana@example.com" in await second.suppressed(["ana@example.com"])

    async def test_a_suppression_survives_reopening(self, open_list: OpenList) -> None:
        suppressions = await open_list()
        await suppressions.suppress("ana@example.com", BOUNCE, "m-1")
        await suppressions.close()

        assert "ana@example.com" in await (await open_list()).suppressed(["ana@example.com"])

    async def test_pages_follow_the_addresses_in_order_until_the_last(
        self, open_list: OpenList
    ) -> None:
        suppressions = await open_list()
        addresses = [f"user{n:02d}@example.com" for n in range(25)]
        for address in reversed(addresses):
            await suppressions.suppress(address, BOUNCE, "m-1")

        listed: list[str] = []
        after: str | None = None
        sizes = []
        while True:
            page = await suppressions.page(after, 10)
            sizes.append(len(page.suppressions))
            listed += [suppression.address for suppression in page.suppressions]
            if page.next_after is None:
                break
            after = page.next_after

        assert sizes == [10, 10, 5]
        assert listed == addresses

    async def test_a_full_last_page_says_it_is_the_last(self, open_list: OpenList) -> None:
        suppressions = await open_list()
        for n in range(4):
            await suppressions.suppress(f"user{n}@example.com", BOUNCE, "m-1")

        first = await suppressions.page(None, 2)
        last = await suppressions.page(first.next_after, 2)

        assert first.next_after == "user1@example.com"
        assert [s.address for s in last.suppressions] == ["user2@example.com", "user3@example.com"]
        assert last.next_after is None
        assert (await suppressions.page("user3@example.com", 2)).suppressions == []

    async def test_both_stores_sort_addresses_byte_by_byte(self, open_list: OpenList) -> None:
        suppressions = await open_list()
        addresses = ["zoë@example.com", "émile@example.com", "a.b@example.com", "a_b@example.com"]
        for address in addresses:
            await suppressions.suppress(address, BOUNCE, "m-1")

        page = await suppressions.page("A", MAX_PAGE_SIZE)

        assert [s.address for s in page.suppressions] == sorted(
            addresses, key=lambda address: address.encode()
        )

    @pytest.mark.parametrize("limit", [0, -1, MAX_PAGE_SIZE + 1])
    async def test_a_page_size_out_of_range_is_refused_clearly(
        self, open_list: OpenList, limit: int
    ) -> None:
        suppressions = await open_list()

        with pytest.raises(ValueError, match=f"a page holds 1 to {MAX_PAGE_SIZE} suppressions"):
            await suppressions.page(None, limit)

    async def test_a_lifted_address_is_sent_to_again_and_may_bounce_again(
        self, open_list: OpenList
    ) -> None:
        suppressions = await open_list()
        await suppressions.suppress("ana@example.com", BOUNCE, "m-1")

        assert await suppressions.lift("ANA@example.com")
        assert await suppressions.suppressed(["ana@example.com"]) == {}
        assert not await suppressions.lift("ana@example.com"), "not suppressed any more"

        await suppressions.suppress("ana@example.com", "550 5.2.1 disabled", "m-2")
        found = await suppressions.suppressed(["ana@example.com"])
        assert found["ana@example.com"].message_id == "m-2", "a new reason after the lift"

    async def test_two_processes_suppressing_at_once_agree_on_one_reason(
        self, open_list: OpenList
    ) -> None:
        first, second = await open_list(), await open_list()
        addresses = [f"user{n}@example.com" for n in range(200)]

        await asyncio.gather(
            *(first.suppress(address, "550 first", "m-1") for address in addresses),
            *(second.suppress(address, "550 second", "m-2") for address in addresses),
        )

        seen_by_first = await first.suppressed(addresses)
        assert len(seen_by_first) == 200
        assert await second.suppressed(addresses) == seen_by_first

    async def test_processes_starting_together_create_the_table_once(
        self, location: str | Path
    ) -> None:
        async with opened_lists(location) as open_list:
            lists = await asyncio.gather(*(open_list() for _ in range(8)))

            await lists[0].suppress("ana@example.com", BOUNCE, "m-1")
            for suppressions in lists:
                assert "ana@example.com" in await suppressions.suppressed(["ana@example.com"])

    async def test_the_list_lives_beside_the_dedupe_store(
        self, open_list: OpenList, location: str | Path
    ) -> None:
        dedupe = await open_dedupe_store(location)
        try:
            suppressions = await open_list()
            bounced = RecipientRow("ana@example.com", "bounced", 0, b"bounced")
            await dedupe.record("m-1", [bounced], 0, "email.send-0 offset 4")
            await suppressions.suppress("ana@example.com", BOUNCE, "m-1")

            state = await dedupe.state_of("m-1")
            assert state == DeliveryState(recipients={"ana@example.com": bounced})
            assert "ana@example.com" in await suppressions.suppressed(["ana@example.com"])
        finally:
            await dedupe.close()

    async def test_a_closed_list_says_so(self, open_list: OpenList) -> None:
        suppressions = await open_list()
        await suppressions.close()

        with pytest.raises(SuppressionsUnavailable, match="not open"):
            await suppressions.suppressed(["ana@example.com"])
        with pytest.raises(SuppressionsUnavailable, match="not open"):
            await suppressions.suppress("ana@example.com", BOUNCE, "m-1")


class TestSqliteSuppressionList(SuppressionListContract):
    @pytest.fixture
    def location(self, tmp_path: Path) -> Path:
        return tmp_path / "worker" / "delivered.sqlite3"


class TestPostgresSuppressionList(SuppressionListContract):
    @pytest.fixture
    async def location(self, postgresql: LocalPostgres) -> AsyncIterator[str]:
        async with fresh_database(postgresql) as url:
            yield url


async def test_reading_the_sqlite_list_never_waits_for_a_writer(tmp_path: Path) -> None:
    """`suppressed` runs on the event loop: it must not wait while another process writes."""
    location = tmp_path / "delivered.sqlite3"
    async with opened_lists(location) as open_list:
        suppressions = await open_list()
        await suppressions.suppress("ana@example.com", BOUNCE, "m-1")
        writer = sqlite3.connect(location, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("INSERT INTO suppressions VALUES ('bob@example.com', '550', 'm-2', 0.0)")
            loop = asyncio.get_running_loop()
            started = loop.time()

            found = await suppressions.suppressed(["ana@example.com", "bob@example.com"])

            assert loop.time() - started < 0.05
            assert set(found) == {"ana@example.com"}, "the other's write is not committed yet"
        finally:
            writer.execute("ROLLBACK")
            writer.close()


async def test_a_sqlite_file_that_cannot_be_made_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file, where the directory should be")

    with pytest.raises(CannotOpenStore) as raised:
        await open_suppression_list(tmp_path / "taken" / "x.sqlite3", "email-test")

    message = str(raised.value)
    assert message.startswith(f"cannot open the SQLite file {tmp_path / 'taken' / 'x.sqlite3'}")
    assert "DEDUPE_DB_PATH" in message


async def test_postgresql_out_of_reach_is_one_clear_error() -> None:
    url = f"postgresql://worker:secret-password@127.0.0.1:{free_port()}/dedupe"

    with pytest.raises(CannotOpenStore) as raised:
        await open_suppression_list(url, "email-test")

    message = str(raised.value)
    assert "cannot reach PostgreSQL at 127.0.0.1:" in message
    assert "DEDUPE_URL" in message
    assert "secret-password" not in message


async def test_calls_fail_clearly_while_postgresql_is_stopped_and_work_once_it_is_back(
    postgresql: LocalPostgres,
) -> None:
    async with fresh_database(postgresql) as url, opened_lists(url) as open_list:
        suppressions = await open_list()
        await suppressions.suppress("ana@example.com", BOUNCE, "m-1")
        await asyncio.to_thread(postgresql.stop)
        try:
            async with asyncio.timeout(30):
                with pytest.raises(SuppressionsUnavailable, match=r"PostgreSQL at 127\.0\.0\.1"):
                    await suppressions.suppressed(["ana@example.com"])
                with pytest.raises(SuppressionsUnavailable):
                    await suppressions.suppress("bob@example.com", BOUNCE, "m-2")
        finally:
            await asyncio.to_thread(postgresql.start)

        await suppressions.suppress("bob@example.com", BOUNCE, "m-2")  # the same list

        found = await suppressions.suppressed(["ana@example.com", "bob@example.com"])
        assert set(found) == {"ana@example.com", "bob@example.com"}
