"""The SQLite dedupe store: per email, the recipients the server took and the first outcome,
kept across processes, pruned once no record of the email can be read again."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from services.worker.dedupe import DeliveryState, SqliteDedupeStore


async def test_unknown_ids_have_no_state(tmp_path: Path) -> None:
    store = SqliteDedupeStore(tmp_path / "delivered.sqlite3")

    assert await store.state_of("m-1") is None


async def test_an_outcome_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "worker" / "delivered.sqlite3"
    store = SqliteDedupeStore(path)
    await store.record("m-1", "delivered", "email.send-0 offset 4")
    store.close()

    assert await SqliteDedupeStore(path).state_of("m-1") == DeliveryState("delivered")


async def test_two_stores_on_one_file_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "delivered.sqlite3"
    first, second = SqliteDedupeStore(path), SqliteDedupeStore(path)

    await first.record_accepted("m-1", ["ana@example.com"], "email.send-0 offset 4")

    assert await second.state_of("m-1") == DeliveryState(None, frozenset({"ana@example.com"}))


async def test_the_first_outcome_wins(tmp_path: Path) -> None:
    store = SqliteDedupeStore(tmp_path / "delivered.sqlite3")

    await store.record("m-1", "delivered", "email.send-0 offset 4")
    await store.record("m-1", "dead-lettered", "email.send-0 offset 9")

    state = await store.state_of("m-1")
    assert state is not None
    assert state.finished == "delivered"


async def test_accepted_recipients_add_up_until_the_email_is_finished(tmp_path: Path) -> None:
    store = SqliteDedupeStore(tmp_path / "delivered.sqlite3")

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


async def test_states_older_than_the_cutoff_are_pruned(tmp_path: Path) -> None:
    store = SqliteDedupeStore(tmp_path / "delivered.sqlite3")
    for number in range(2500):
        await store.record(f"old-{number}", "delivered", "email.send-0 @1")
    cutoff = time.time()
    await asyncio.sleep(0.01)
    await store.record_accepted("new-1", ["ana@example.com"], "email.send-0 @9")
    await store.record("new-2", "dead-lettered", "email.send-0 @10")

    deleted = store.prune(older_than=cutoff)

    assert deleted == 2500
    assert await store.state_of("old-0") is None
    assert await store.state_of("new-1") is not None
    assert await store.state_of("new-2") is not None


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
    assert store.prune(older_than=time.time()) == 1, "its time was carried over too"
