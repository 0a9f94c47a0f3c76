"""The SQLite dedupe store: the first outcome of a message id is kept, across processes."""

from __future__ import annotations

from pathlib import Path

from services.worker.dedupe import SqliteDedupeStore


async def test_unknown_ids_are_not_finished(tmp_path: Path) -> None:
    store = SqliteDedupeStore(tmp_path / "delivered.sqlite3")

    assert await store.outcome_of("m-1") is None


async def test_an_outcome_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "worker" / "delivered.sqlite3"
    store = SqliteDedupeStore(path)
    await store.record("m-1", "delivered", "email.send-0 offset 4")
    store.close()

    assert await SqliteDedupeStore(path).outcome_of("m-1") == "delivered"


async def test_two_stores_on_one_file_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "delivered.sqlite3"
    first, second = SqliteDedupeStore(path), SqliteDedupeStore(path)

    await first.record("m-1", "delivered", "email.send-0 offset 4")

    assert await second.outcome_of("m-1") == "delivered"


async def test_the_first_outcome_wins(tmp_path: Path) -> None:
    store = SqliteDedupeStore(tmp_path / "delivered.sqlite3")

    await store.record("m-1", "delivered", "email.send-0 offset 4")
    await store.record("m-1", "dead-lettered", "email.send-0 offset 9")

    assert await store.outcome_of("m-1") == "delivered"
