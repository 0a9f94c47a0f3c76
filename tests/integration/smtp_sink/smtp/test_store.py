"""The sink's SQLite store on a real file: sightings, pages, reads, deletes, stats, reopening."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.smtp_sink.api.search import parse_query, search_text
from services.smtp_sink.mailbox import Arrival, Envelope, summarize
from services.smtp_sink.mime import read_message
from services.smtp_sink.smtp.store import MessageStore, StoreClosedError

ENVELOPE = Envelope("ann@example.com", ("bob@example.com",))
START = datetime(2025, 11, 25, 18, 0, tzinfo=UTC)


def arrival(number: int, message_id: str | None = None) -> Arrival:
    header = f"Message-ID: <{message_id}>\r\n" if message_id is not None else ""
    raw = f"{header}Subject: number {number}\r\n\r\nbody {number}\r\n".encode()
    parsed = read_message(raw)
    return Arrival(
        id=f"id-{number}",
        created=START + timedelta(milliseconds=number),
        envelope=ENVELOPE,
        summary=summarize(parsed, ENVELOPE),
        raw=raw,
        search_text=search_text(parsed),
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[MessageStore]:
    opened = MessageStore(tmp_path / "sink" / "messages.sqlite3")
    await opened.open()
    yield opened
    await opened.close()


async def test_parent_directories_are_created(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "a" / "b" / "messages.sqlite3")

    await store.open()
    await store.close()

    assert (tmp_path / "a" / "b" / "messages.sqlite3").exists()


async def test_the_database_is_in_wal_mode(store: MessageStore) -> None:
    assert (store.db_path.parent / f"{store.db_path.name}-wal").exists()


async def test_sightings_count_each_message_id(store: MessageStore) -> None:
    first = await store.add(arrival(1, "same@example.com"))
    second = await store.add(arrival(2, "same@example.com"))
    other = await store.add(arrival(3, "other@example.com"))

    assert [s.message_id_count for s in (first, second, other)] == [1, 2, 1]
    assert (first.duplicate, second.duplicate, other.duplicate) == (False, True, False)


async def test_messages_without_message_id_are_never_duplicates(store: MessageStore) -> None:
    sightings = [await store.add(arrival(number)) for number in range(3)]

    assert [s.duplicate for s in sightings] == [False, False, False]
    assert (await store.stats()).duplicates == 0


async def test_page_is_newest_first_with_totals(store: MessageStore) -> None:
    for number in range(5):
        await store.add(arrival(number, f"m{number}@example.com"))

    page = await store.page(start=1, limit=2)

    assert [m.id for m in page.messages] == ["id-3", "id-2"]
    assert (page.total, page.unread) == (5, 5)
    assert page.messages[0].summary.subject == "number 3"
    assert page.messages[0].created == START + timedelta(milliseconds=3)
    assert page.messages[0].envelope == ENVELOPE


async def test_reading_a_message_marks_it_read(store: MessageStore) -> None:
    await store.add(arrival(1))

    found = await store.message("id-1", mark_read=True)

    assert found is not None
    stored, raw = found
    assert raw == arrival(1).raw
    assert not stored.read  # as it was when read
    assert (await store.page(0, 10)).unread == 0


async def test_unknown_ids_are_none(store: MessageStore) -> None:
    assert await store.message("nope", mark_read=True) is None
    assert await store.raw("nope") is None
    assert await store.latest_id() is None


async def test_delete_by_ids_and_all(store: MessageStore) -> None:
    for number in range(4):
        await store.add(arrival(number))

    assert await store.delete(["id-1", "id-2", "no-such-id"]) == 2
    assert await store.latest_id() == "id-3"
    assert await store.delete(None) == 2
    assert (await store.page(0, 10)).total == 0


async def test_stats_count_received_unique_and_duplicates(store: MessageStore) -> None:
    await store.add(arrival(1, "a@example.com"))
    await store.add(arrival(2, "a@example.com"))
    await store.add(arrival(3, "b@example.com"))
    await store.add(arrival(4))

    stats = await store.stats()

    assert (stats.received, stats.unique_message_ids, stats.duplicates) == (4, 3, 1)


async def test_concurrent_adds_are_all_committed(store: MessageStore) -> None:
    sightings = await asyncio.gather(
        *(store.add(arrival(number, "burst@example.com")) for number in range(200))
    )

    assert sorted(s.message_id_count for s in sightings) == list(range(1, 201))
    assert (await store.stats()).received == 200


async def test_a_failing_add_fails_alone(store: MessageStore) -> None:
    await store.add(arrival(1))

    results = await asyncio.gather(
        store.add(arrival(1)), store.add(arrival(2)), return_exceptions=True
    )

    assert isinstance(results[0], Exception)  # the id is taken
    assert not isinstance(results[1], BaseException)
    assert (await store.stats()).received == 2


async def test_messages_survive_reopening(tmp_path: Path) -> None:
    db_path = tmp_path / "messages.sqlite3"
    first = MessageStore(db_path)
    await first.open()
    await first.add(arrival(1, "kept@example.com"))
    await first.close()

    second = MessageStore(db_path)
    await second.open()
    sighting = await second.add(arrival(2, "kept@example.com"))
    latest = await second.latest_id()
    await second.close()

    assert sighting.message_id_count == 2
    assert latest == "id-2"


async def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "messages.sqlite3")

    with pytest.raises(StoreClosedError):
        await store.stats()


async def test_the_counts_follow_adds_reads_and_deletes(store: MessageStore) -> None:
    for number in range(4):
        await store.add(arrival(number))
    await store.message("id-1", mark_read=True)
    await store.message("id-1", mark_read=True)  # read twice: still one read
    await store.delete(["id-2"])
    counted = await store.page(0, 1)

    await store.delete(None)
    emptied = await store.page(0, 1)

    assert (counted.total, counted.unread) == (3, 2)
    assert (emptied.total, emptied.unread) == (0, 0)


async def test_a_database_from_before_the_counts_gets_them(tmp_path: Path) -> None:
    path = tmp_path / "messages.sqlite3"
    older = MessageStore(path)
    await older.open()
    for number in range(3):
        await older.add(arrival(number))
    await older.message("id-0", mark_read=True)
    await older.close()
    with sqlite3.connect(path) as connection:  # as the sink's schema was before the counts
        connection.executescript(
            "DROP TABLE mailbox_counts; DROP TRIGGER count_inserted;"
            " DROP TRIGGER count_deleted; DROP TRIGGER count_read;"
        )

    reopened = MessageStore(path)
    await reopened.open()
    page = await reopened.page(0, 1)
    await reopened.close()

    assert (page.total, page.unread) == (3, 2)


def arrival_of(number: int, headers: str, body: str = "body") -> Arrival:
    raw = f"{headers}\r\n\r\n{body}\r\n".encode()
    parsed = read_message(raw)
    return Arrival(
        id=f"id-{number}",
        created=START + timedelta(milliseconds=number),
        envelope=ENVELOPE,
        summary=summarize(parsed, ENVELOPE),
        raw=raw,
        search_text=search_text(parsed),
    )


async def subjects(store: MessageStore, query: str) -> list[str]:
    page = await store.search(parse_query(query), 0, 50)
    return [message.summary.subject for message in page.messages]


@pytest.fixture
async def mailbox(store: MessageStore) -> MessageStore:
    """Three messages that each filter tells apart."""
    await store.add(
        arrival_of(
            1,
            "From: Ann <ann@example.com>\r\nTo: Bob <bob@example.com>\r\n"
            "Subject: Order 100% shipped\r\nMessage-ID: <order-1@shop.example>",
            body="Your parcel left Köln today.",
        )
    )
    await store.add(
        arrival_of(
            2,
            "From: carol@example.com\r\nTo: dan@example.com\r\nCc: bob@example.com\r\n"
            "Subject: Weekly digest\r\nMessage-ID: <digest-2@news.example>",
            body="Nothing shipped this week.",
        )
    )
    await store.add(
        arrival_of(
            3,
            "From: Ann <ann@example.com>\r\nTo: erin@example.com\r\n"
            "Subject: Hello world\r\nMessage-ID: <hello-3@example.com>",
            body="Plain greetings.",
        )
    )
    return store


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("from:ann", ["Hello world", "Order 100% shipped"]),
        ("to:bob@example.com", ["Order 100% shipped"]),
        ("cc:bob", ["Weekly digest"]),
        ("addressed:carol", ["Weekly digest"]),
        ("bcc:bob", ["Hello world"]),  # the envelope's recipient, named in no header
        ('subject:"hello WORLD"', ["Hello world"]),
        ("subject:100%", ["Order 100% shipped"]),
        ("subject:1_0", []),
        ("message-id:<digest-2@news.example>", ["Weekly digest"]),
        ("shipped", ["Weekly digest", "Order 100% shipped"]),
        ("KÖLN", ["Order 100% shipped"]),
        ('"left köln"', ["Order 100% shipped"]),
        ("-shipped", ["Hello world"]),
        ("!from:ann", ["Weekly digest"]),
        ("from:ann -subject:order", ["Hello world"]),
        ("shipped is:unread", ["Weekly digest", "Order 100% shipped"]),
        ("is:read", []),
        ("tag:important", []),
        ("-tag:important from:carol", ["Weekly digest"]),
    ],
)
async def test_search_filters(mailbox: MessageStore, query: str, expected: list[str]) -> None:
    assert await subjects(mailbox, query) == expected


async def test_search_pages_count_the_matches_and_the_mailbox(mailbox: MessageStore) -> None:
    await mailbox.message("id-1", mark_read=True)

    first = await mailbox.search(parse_query("from:ann"), 0, 1)
    second = await mailbox.search(parse_query("from:ann"), 1, 1)

    assert [m.id for m in first.messages + second.messages] == ["id-3", "id-1"]
    assert (first.total, first.unread, first.matched, first.matched_unread) == (3, 2, 2, 1)


async def test_delete_matching_deletes_only_the_matches(tmp_path: Path) -> None:
    path = tmp_path / "messages.sqlite3"
    store = MessageStore(path)
    await store.open()
    for number in range(4):
        await store.add(arrival(number))

    deleted = await store.delete_matching(parse_query("-subject:2"))
    left = await store.page(0, 10)
    await store.close()

    assert deleted == 3
    assert [m.id for m in left.messages] == ["id-2"]
    with sqlite3.connect(path) as connection:  # the deleted messages' search text went too
        assert connection.execute("SELECT COUNT(*) FROM message_search").fetchone() == (1,)


async def test_a_database_from_before_searches_is_indexed_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "messages.sqlite3"
    older = MessageStore(path)
    await older.open()
    for number in range(3):
        await older.add(arrival(number))
    await older.close()
    with sqlite3.connect(path) as connection:  # as the sink's schema was before searches
        connection.executescript("DROP TABLE message_search; DROP TRIGGER search_deleted;")

    reopened = MessageStore(path)
    await reopened.open()
    found = await subjects(reopened, "body 1")
    await reopened.close()

    assert found == ["number 1"]
