"""Every dedupe store keeps, per email, a row per recipient (the outcome a stage reached, the
attempt that owns a deferred one, the event it made) and the dead-lettered mark, across
processes; lets only the owning stage move a deferred row and nothing change a final one; adopts
what an earlier version wrote; and prunes what no record can bring back. The contract below runs
here on SQLite and, unchanged, on a real PostgreSQL in
tests/integration/worker/test_postgres_store.py."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.worker.dedupe import (
    FINAL_STATES,
    CannotOpenDedupeStore,
    DeliveryState,
    Outcome,
    PostgresDedupeStore,
    RecipientRow,
    RecipientState,
    SqliteDedupeStore,
    open_dedupe_store,
)
from shared.settings import Settings

Store = SqliteDedupeStore | PostgresDedupeStore
OpenStore = Callable[[], Awaitable[Store]]
ANA, BO, CY = "ana@example.com", "bo@example.com", "cy@example.com"


@dataclass(frozen=True)
class EarlierEmail:
    """A row of the version before this one: the first outcome, and the recipients the server
    took while others were still owed the email."""

    message_id: str
    outcome: Outcome | None
    accepted: Sequence[str]
    updated_at: float
    source: str = "email.send-0 offset 4"


# Creates the earlier version's table in the store's database and writes these rows to it.
WriteEarlierVersion = Callable[[Sequence[EarlierEmail]], Awaitable[None]]


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


def row(recipient: str, state: RecipientState, attempt: int = 0) -> RecipientRow:
    """A row with an event that names what it holds, so a test can tell which write won."""
    return RecipientRow(recipient, state, attempt, f"{recipient} {state} {attempt}".encode())


def rows_of(*rows: RecipientRow) -> dict[str, RecipientRow]:
    return {row.recipient: row for row in rows}


class DedupeStoreContract:
    """What every store does. A subclass provides the fixtures `open_store`, where each call
    opens one more store on the same database, as another worker process, or another host,
    would; and `write_earlier_version`."""

    async def test_unknown_ids_have_no_state(self, open_store: OpenStore) -> None:
        store = await open_store()

        assert await store.state_of("m-1") is None

    async def test_a_write_returns_the_rows_it_wrote(self, open_store: OpenStore) -> None:
        store = await open_store()
        written = [row(ANA, "sent"), row(BO, "bounced"), row(CY, "deferred", attempt=1)]

        state = await store.record("m-1", written, 0, "email.send-0 offset 4")

        assert state == DeliveryState(recipients=rows_of(*written))
        assert await store.state_of("m-1") == state
        assert {r.recipient for r in state.recipients.values() if r.final} == {ANA, BO}

    async def test_rows_survive_reopening(self, open_store: OpenStore) -> None:
        store = await open_store()
        written = [
            RecipientRow(ANA, "sent", 0, b'{"type":"sent"}'),
            RecipientRow(BO, "deferred", 1, None),
        ]
        await store.record("m-1", written, 0, "email.send-0 offset 4")
        await store.close()

        state = await (await open_store()).state_of("m-1")

        assert state == DeliveryState(recipients=rows_of(*written))

    async def test_two_stores_on_one_database_see_each_other(self, open_store: OpenStore) -> None:
        first, second = await open_store(), await open_store()

        await first.record("m-1", [row(ANA, "sent")], 0, "email.send-0 offset 4")

        assert await second.state_of("m-1") == DeliveryState(recipients=rows_of(row(ANA, "sent")))

    async def test_the_state_returned_holds_every_recipient_of_the_email(
        self, open_store: OpenStore
    ) -> None:
        store = await open_store()
        await store.record("m-1", [row(ANA, "sent"), row(BO, "deferred", 1)], 0, "email.send-0 @4")

        state = await store.record("m-1", [row(BO, "sent", 1)], 1, "email.send.retry-1m-0 @7")

        assert state.recipients == rows_of(row(ANA, "sent"), row(BO, "sent", 1))

    @pytest.mark.parametrize(
        ("stage", "moved"), [(0, False), (1, True), (2, False)], ids=["main", "owner", "later"]
    )
    async def test_a_deferred_row_is_moved_only_by_the_stage_that_owns_it(
        self, open_store: OpenStore, stage: int, moved: bool
    ) -> None:
        store = await open_store()
        await store.record("m-1", [row(ANA, "deferred", 1)], 0, "email.send-0 @4")

        state = await store.record("m-1", [row(ANA, "sent", stage)], stage, f"stage {stage}")

        expected = row(ANA, "sent", stage) if moved else row(ANA, "deferred", 1)
        assert state.recipients == {ANA: expected}
        assert await store.state_of("m-1") == state

    async def test_the_owning_stage_may_defer_a_recipient_again(
        self, open_store: OpenStore
    ) -> None:
        store = await open_store()
        await store.record("m-1", [row(ANA, "deferred", 1)], 0, "email.send-0 @4")

        handed_on = await store.record("m-1", [row(ANA, "deferred", 2)], 1, "retry-1m-0 @7")
        taken_back = await store.record("m-1", [row(ANA, "sent", 1)], 1, "retry-1m-0 @7")

        assert handed_on.recipients == {ANA: row(ANA, "deferred", 2)}
        assert taken_back.recipients == {ANA: row(ANA, "deferred", 2)}, "stage 2 owns it now"

    @pytest.mark.parametrize("final", sorted(FINAL_STATES))
    @pytest.mark.parametrize("later", ["sent", "bounced", "suppressed", "deferred"])
    async def test_a_final_row_is_never_changed(
        self, open_store: OpenStore, final: RecipientState, later: RecipientState
    ) -> None:
        store = await open_store()
        await store.record("m-1", [row(ANA, final)], 0, "email.send-0 @4")

        for stage in (0, 1):
            state = await store.record("m-1", [row(ANA, later, stage)], stage, f"stage {stage}")

            assert state.recipients == {ANA: row(ANA, final)}

    async def test_one_write_inserts_moves_and_leaves_rows_at_once(
        self, open_store: OpenStore
    ) -> None:
        store = await open_store()
        first = [row(ANA, "sent"), row(BO, "deferred", 1), row(CY, "deferred", 2)]
        await store.record("m-1", first, 0, "email.send-0 @4")

        state = await store.record(
            "m-1",
            [
                row(ANA, "bounced", 1),  # final: left
                row(BO, "bounced", 1),  # owned by stage 1: moved
                row(CY, "sent", 1),  # owned by stage 2: left
                row("dee@example.com", "suppressed", 1),  # no row yet: inserted
            ],
            1,
            "email.send.retry-1m-0 @7",
        )

        assert state.recipients == rows_of(
            row(ANA, "sent"),
            row(BO, "bounced", 1),
            row(CY, "deferred", 2),
            row("dee@example.com", "suppressed", 1),
        )

    async def test_a_write_without_rows_changes_no_recipient(self, open_store: OpenStore) -> None:
        store = await open_store()
        await store.record("m-1", [row(ANA, "sent")], 0, "email.send-0 @4")

        state = await store.record("m-1", [], 0, "email.send-0 @4")

        assert state == DeliveryState(recipients={ANA: row(ANA, "sent")})

    async def test_a_recipient_given_twice_in_one_write_is_refused(
        self, open_store: OpenStore
    ) -> None:
        store = await open_store()

        with pytest.raises(ValueError, match="a recipient is given twice in one write") as raised:
            await store.record("m-1", [row(ANA, "sent"), row(ANA, "bounced")], 0, "@4")
        assert ANA not in str(raised.value), "no address may reach a log"
        assert await store.state_of("m-1") is None

    async def test_two_workers_writing_one_recipient_at_once_leave_one_outcome(
        self, open_store: OpenStore
    ) -> None:
        """A rebalance can hand a record to a second worker while the first still sends it."""
        first, second = await open_store(), await open_store()
        ids = [f"m-{number}" for number in range(200)]

        returned = await asyncio.gather(
            *(first.record(id_, [row(ANA, "sent")], 0, "host-a") for id_ in ids),
            *(second.record(id_, [row(ANA, "bounced")], 0, "host-b") for id_ in ids),
        )

        for number, message_id in enumerate(ids):
            state = await first.state_of(message_id)
            assert state is not None
            assert state.recipients[ANA] in (row(ANA, "sent"), row(ANA, "bounced"))
            assert returned[number] == returned[len(ids) + number] == state, "both see the winner"
            assert await second.state_of(message_id) == state

    async def test_two_stages_moving_one_deferred_row_at_once_leave_one_outcome(
        self, open_store: OpenStore
    ) -> None:
        """A retry record read twice (a copy after a crash) by two workers at once."""
        first, second = await open_store(), await open_store()
        ids = [f"m-{number}" for number in range(200)]
        for message_id in ids:
            await first.record(message_id, [row(ANA, "deferred", 1)], 0, "email.send-0")

        returned = await asyncio.gather(
            *(first.record(id_, [row(ANA, "sent", 1)], 1, "host-a") for id_ in ids),
            *(second.record(id_, [row(ANA, "deferred", 2)], 1, "host-b") for id_ in ids),
        )

        for number, message_id in enumerate(ids):
            state = await second.state_of(message_id)
            assert state is not None
            assert state.recipients[ANA] in (row(ANA, "sent", 1), row(ANA, "deferred", 2))
            assert returned[number] == returned[len(ids) + number] == state, "both see the winner"

    async def test_workers_writing_many_recipients_of_one_email_in_any_order_both_finish(
        self, open_store: OpenStore
    ) -> None:
        """The rows are written in one order whatever the order given: no worker waits on
        another's lock while holding one the other waits on."""
        first, second = await open_store(), await open_store()
        recipients = [f"user{n:02d}@example.com" for n in range(40)]

        async with asyncio.timeout(30):
            await asyncio.gather(
                *(
                    first.record(f"m-{n}", [row(r, "sent") for r in recipients], 0, "host-a")
                    for n in range(20)
                ),
                *(
                    second.record(f"m-{n}", [row(r, "bounced") for r in recipients[::-1]], 0, "b")
                    for n in range(20)
                ),
            )

        state = await first.state_of("m-0")
        assert state is not None
        assert sorted(state.recipients) == recipients

    async def test_the_first_dead_lettered_mark_stays(self, open_store: OpenStore) -> None:
        store = await open_store()
        await store.record("m-1", [row(ANA, "bounced")], 0, "email.send-0 @4")

        first = await store.record_dead_lettered("m-1", b"first", "retry-60m-0 @9")
        second = await store.record_dead_lettered("m-1", b"second", "retry-60m-0 @9")

        expected = DeliveryState("dead-lettered", {ANA: row(ANA, "bounced")}, b"first")
        assert first == second == expected
        assert await store.state_of("m-1") == expected

    async def test_an_email_unknown_before_may_be_dead_lettered(
        self, open_store: OpenStore
    ) -> None:
        store = await open_store()

        state = await store.record_dead_lettered("m-1", None, "email.send-0 @4")

        assert state == DeliveryState("dead-lettered")
        assert await store.state_of("m-1") == state

    async def test_emails_last_written_before_the_cutoff_are_pruned_with_their_rows(
        self, open_store: OpenStore
    ) -> None:
        store = await open_store()
        for number in range(2500):
            await store.record(f"old-{number}", [row(ANA, "sent")], 0, "email.send-0 @1")
        await store.record("written-again", [row(ANA, "deferred", 1)], 0, "email.send-0 @2")
        await asyncio.sleep(0.01)
        cutoff = time.time()
        await asyncio.sleep(0.01)
        await store.record("written-again", [row(BO, "sent", 1)], 1, "retry-1m-0 @3")
        await store.record("new", [row(ANA, "sent")], 0, "email.send-0 @9")
        await store.record_dead_lettered("dead", b"dead", "email.send-0 @10")

        deleted = await store.prune(older_than=cutoff)

        assert deleted == 2500
        assert await store.state_of("old-0") is None
        again = await store.record("old-0", [], 0, "email.send-0 @1")
        assert again.recipients == {}, "its recipients went with it"
        kept = await store.state_of("written-again")
        assert kept is not None
        assert kept.recipients == rows_of(row(ANA, "deferred", 1), row(BO, "sent", 1))
        assert await store.state_of("new") is not None
        assert await store.state_of("dead") is not None

    async def test_an_earlier_versions_outcomes_and_recipients_are_never_sent_again(
        self, open_store: OpenStore, write_earlier_version: WriteEarlierVersion
    ) -> None:
        """A store the version before wrote: its finished emails stay finished, and the
        recipients it had taken are sent rows, without an event (that version made none)."""
        long_ago = time.time() - 3600
        await write_earlier_version(
            [
                EarlierEmail("delivered", "delivered", [], long_ago),
                EarlierEmail("dead", "dead-lettered", [ANA], long_ago),
                EarlierEmail("partly", None, [ANA, BO], long_ago),
                EarlierEmail("recent", None, [CY], time.time() + 3600),
            ]
        )

        # Workers that start together adopt it once.
        stores = await asyncio.gather(*(open_store() for _ in range(4)))
        store = await open_store()

        assert await store.state_of("delivered") == DeliveryState("delivered")
        dead = await store.state_of("dead")
        assert dead == DeliveryState("dead-lettered", {ANA: RecipientRow(ANA, "sent", 0, None)})
        partly = await store.state_of("partly")
        assert partly == DeliveryState(
            recipients={
                ANA: RecipientRow(ANA, "sent", 0, None),
                BO: RecipientRow(BO, "sent", 0, None),
            }
        )
        state = await stores[0].record("partly", [row(ANA, "sent"), row(CY, "sent")], 0, "@4")
        assert state.recipients == {
            ANA: RecipientRow(ANA, "sent", 0, None),
            BO: RecipientRow(BO, "sent", 0, None),
            CY: row(CY, "sent"),
        }
        assert await store.prune(older_than=time.time() - 60) == 2, "their times came too"
        assert await store.state_of("recent") is not None


class TestSqliteDedupeStore(DedupeStoreContract):
    @pytest.fixture
    def path(self, tmp_path: Path) -> Path:
        return tmp_path / "worker" / "delivered.sqlite3"

    @pytest.fixture
    async def open_store(self, path: Path) -> AsyncIterator[OpenStore]:
        async with opened_stores(lambda: open_dedupe_store(path)) as open_store:
            yield open_store

    @pytest.fixture
    def write_earlier_version(self, path: Path) -> WriteEarlierVersion:
        async def write(emails: Sequence[EarlierEmail]) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None)
            try:
                db.execute(
                    """CREATE TABLE emails (
                           message_id TEXT PRIMARY KEY,
                           outcome    TEXT,
                           accepted   TEXT NOT NULL,
                           source     TEXT NOT NULL,
                           updated_at REAL NOT NULL
                       ) WITHOUT ROWID"""
                )
                db.executemany(
                    "INSERT INTO emails VALUES (?, ?, ?, ?, ?)",
                    [
                        (e.message_id, e.outcome, "\n".join(e.accepted), e.source, e.updated_at)
                        for e in emails
                    ],
                )
            finally:
                db.close()

        return write


async def test_the_finished_ids_of_an_even_earlier_version_are_carried_over(
    tmp_path: Path,
) -> None:
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


async def test_an_earlier_versions_without_rowid_recipients_are_adopted_into_a_rowid_table(
    tmp_path: Path,
) -> None:
    path = tmp_path / "delivered.sqlite3"
    SqliteDedupeStore(path)._db.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TABLE email_recipients")
    db.execute(
        """CREATE TABLE email_recipients (
               message_id TEXT NOT NULL, recipient TEXT NOT NULL, state TEXT NOT NULL,
               attempt INTEGER NOT NULL, event BLOB, source TEXT NOT NULL,
               updated_at REAL NOT NULL, PRIMARY KEY (message_id, recipient)
           ) WITHOUT ROWID"""
    )
    db.execute("INSERT INTO emails VALUES ('m-1', NULL, NULL, 'email.send-0 offset 4', 1.0)")
    db.execute(
        "INSERT INTO email_recipients VALUES "
        "('m-1', 'ana@example.com', 'sent', 0, x'7b7d', 'email.send-0 offset 4', 1.0)"
    )
    db.close()

    store = SqliteDedupeStore(path)

    assert await store.state_of("m-1") == DeliveryState(
        recipients={ANA: RecipientRow(ANA, "sent", 0, b"{}")}
    )
    (without_rowid,) = store._db.execute(
        "SELECT wr FROM pragma_table_list WHERE name = 'email_recipients'"
    ).fetchone()
    assert not without_rowid
    await store.close()


def test_a_store_opening_waits_while_another_process_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "delivered.sqlite3"
    SqliteDedupeStore(path)._db.close()
    locked = threading.Event()

    def adopt_for_half_a_second() -> None:  # as another process adopting an earlier version
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(0.5)  # five times the wait of a write on the loop
        other.execute("COMMIT")
        other.close()

    adopting = threading.Thread(target=adopt_for_half_a_second)
    adopting.start()
    locked.wait()
    try:
        store = SqliteDedupeStore(path)
    finally:
        adopting.join()
    store._db.close()


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
