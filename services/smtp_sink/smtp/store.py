"""The sink's SQLite store: every accepted message, its raw source and its summary, in WAL mode.

One thread owns the only connection; jobs queued together share one transaction and one commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from services.smtp_sink.api.search import (
    Filter,
    envelope_search_text,
    search_text,
    sql_condition,
)
from services.smtp_sink.mailbox import (
    Arrival,
    Envelope,
    MailboxPage,
    SearchPage,
    Sighting,
    SinkStats,
    StoredMessage,
    Summary,
    sight,
)
from services.smtp_sink.mime import Address, read_message

# Written out: its log lines keep this name wherever the module is (readers and tests look for it).
log = logging.getLogger("services.smtp_sink.store")

T = TypeVar("T")

_MAX_JOBS_PER_TRANSACTION = 512
_IDS_PER_DELETE = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    message_id_count INTEGER NOT NULL,
    subject TEXT NOT NULL,
    addresses TEXT NOT NULL,
    snippet TEXT NOT NULL,
    first_line TEXT NOT NULL,
    attachments INTEGER NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt_tos TEXT NOT NULL,
    size INTEGER NOT NULL,
    read INTEGER NOT NULL DEFAULT 0,
    raw BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_message_id ON messages (message_id);

-- The mailbox's counts, kept by triggers: every listing reports them, and counting the rows
-- (whose raw sources are inline) on each of a client's frequent polls would hold up the
-- single writer that stores arriving messages.
CREATE TABLE IF NOT EXISTS mailbox_counts (total INTEGER NOT NULL, unread INTEGER NOT NULL);
INSERT INTO mailbox_counts
    SELECT COUNT(*), COALESCE(SUM(read = 0), 0) FROM messages
    WHERE NOT EXISTS (SELECT 1 FROM mailbox_counts);
CREATE TRIGGER IF NOT EXISTS count_inserted AFTER INSERT ON messages BEGIN
    UPDATE mailbox_counts SET total = total + 1, unread = unread + (NEW.read = 0);
END;
CREATE TRIGGER IF NOT EXISTS count_deleted AFTER DELETE ON messages BEGIN
    UPDATE mailbox_counts SET total = total - 1, unread = unread - (OLD.read = 0);
END;
CREATE TRIGGER IF NOT EXISTS count_read AFTER UPDATE OF read ON messages BEGIN
    UPDATE mailbox_counts SET unread = unread + (NEW.read = 0) - (OLD.read = 0);
END;

-- The text a search's free words match, in a table of its own: as a column of messages, it
-- would come after the raw source in databases made before it existed, and searching it
-- would read every raw source.
CREATE TABLE IF NOT EXISTS message_search (seq INTEGER PRIMARY KEY, text TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS search_deleted AFTER DELETE ON messages BEGIN
    DELETE FROM message_search WHERE seq = OLD.seq;
END;
"""

# Every column but the raw source, which stays last in the row so listings never read it.
_SUMMARY_COLUMNS = (
    "id, created_ms, message_id, message_id_count, subject, addresses, snippet, first_line, "
    "attachments, mail_from, rcpt_tos, size, read"
)


class StoreClosedError(RuntimeError):
    pass


@dataclass
class _Job:
    work: Callable[[sqlite3.Connection], Any]
    done: asyncio.Future[Any]


class MessageStore:
    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        connection = await asyncio.to_thread(_connect, self.db_path)
        self._thread = threading.Thread(
            target=self._serve_jobs, args=(connection,), name="sink-sqlite", daemon=True
        )
        self._thread.start()

    async def close(self) -> None:
        """Finish the queued jobs, then close the connection."""
        if self._thread is None:
            return
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    def add(self, arrival: Arrival) -> asyncio.Future[Sighting]:
        """Store the message; the future is done once it is committed to disk."""
        return self._submit(lambda connection: _insert(connection, arrival))

    async def page(self, start: int, limit: int) -> MailboxPage:
        return await self._run(lambda connection: _page(connection, start, limit))

    async def latest_id(self) -> str | None:
        return await self._run(_latest_id)

    async def message(
        self, message_id: str, *, mark_read: bool
    ) -> tuple[StoredMessage, bytes] | None:
        return await self._run(lambda connection: _message(connection, message_id, mark_read))

    async def raw(self, message_id: str) -> bytes | None:
        return await self._run(lambda connection: _raw(connection, message_id))

    async def delete(self, message_ids: Sequence[str] | None) -> int:
        """Delete these messages, or all of them when message_ids is None; returns how many."""
        return await self._run(lambda connection: _delete(connection, message_ids))

    async def search(self, filters: tuple[Filter, ...], start: int, limit: int) -> SearchPage:
        """A page of the messages matching every filter, newest first."""
        return await self._run(lambda connection: _search(connection, filters, start, limit))

    async def delete_matching(self, filters: tuple[Filter, ...]) -> int:
        """Delete the messages matching every filter; returns how many."""
        return await self._run(lambda connection: _delete_matching(connection, filters))

    async def stats(self) -> SinkStats:
        return await self._run(_stats)

    async def ping(self) -> None:
        await self._run(lambda connection: connection.execute("SELECT 1").fetchone())

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(work)

    def _submit(self, work: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """A future of the work's result, done when the transaction it ran in has committed."""
        loop = self._loop or asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            done.set_exception(StoreClosedError("the message store is not open"))
        else:
            self._jobs.put(_Job(work, done))
        return done

    def _serve_jobs(self, connection: sqlite3.Connection) -> None:
        try:
            while True:
                first = self._jobs.get()
                batch = [first]
                while first is not None and len(batch) < _MAX_JOBS_PER_TRANSACTION:
                    try:
                        batch.append(self._jobs.get_nowait())
                    except queue.Empty:
                        break
                jobs = [job for job in batch if job is not None]
                if jobs:
                    self._run_in_one_transaction(connection, jobs)
                if len(jobs) < len(batch):
                    return
        finally:
            connection.close()

    def _run_in_one_transaction(self, connection: sqlite3.Connection, jobs: list[_Job]) -> None:
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            for job in jobs:
                # A savepoint per job: a job that fails leaves nothing behind, and the
                # others in the transaction still commit.
                connection.execute("SAVEPOINT job")
                try:
                    outcomes.append((job.done, job.work(connection), None))
                except Exception as error:
                    connection.execute("ROLLBACK TO job")
                    outcomes.append((job.done, None, error))
                connection.execute("RELEASE job")
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            log.error("SQLite transaction of %d jobs failed: %s", len(jobs), error)
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            outcomes = [(job.done, None, error) for job in jobs]
        assert self._loop is not None
        # RuntimeError: the event loop has closed, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_settle, outcomes)


def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for done, result, error in outcomes:
        if done.cancelled():
            continue
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)


def _connect(db_path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    # NORMAL, as Mailpit's: in WAL mode a committed message survives a crash of the sink (the
    # promise of its 250), and only a power cut may take the last ones back; FULL would add an
    # fsync to every commit, which every client waits for (a tenth of the rate at 8 sessions).
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=5000")
    connection.executescript(_SCHEMA)
    _index_unsearched(connection)
    return connection


def _index_unsearched(connection: sqlite3.Connection) -> None:
    """Give the messages of a database made before searches existed their search text."""
    unsearched = [
        int(row[0])
        for row in connection.execute(
            "SELECT seq FROM messages WHERE seq NOT IN (SELECT seq FROM message_search)"
        )
    ]
    if not unsearched:
        return
    log.info("indexing %d stored messages for search", len(unsearched))
    connection.execute("BEGIN IMMEDIATE")
    for seq in unsearched:
        mail_from, rcpt_tos_json, raw = connection.execute(
            "SELECT mail_from, rcpt_tos, raw FROM messages WHERE seq = ?", (seq,)
        ).fetchone()
        try:
            text = search_text(read_message(bytes(raw)))
        except Exception:
            # As when it arrived: a message that cannot be read is found by its envelope.
            text = envelope_search_text(Envelope(mail_from, tuple(json.loads(rcpt_tos_json))))
        connection.execute("INSERT INTO message_search (seq, text) VALUES (?, ?)", (seq, text))
    connection.execute("COMMIT")


def _insert(connection: sqlite3.Connection, arrival: Arrival) -> Sighting:
    summary = arrival.summary
    earlier_count = 0
    if summary.message_id:
        row = connection.execute(
            "SELECT COUNT(*) FROM messages WHERE message_id = ?", (summary.message_id,)
        ).fetchone()
        earlier_count = int(row[0])
    sighting = sight(summary.message_id, earlier_count)
    inserted = connection.execute(
        "INSERT INTO messages (id, created_ms, message_id, message_id_count, subject, addresses,"
        " snippet, first_line, attachments, mail_from, rcpt_tos, size, raw)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            arrival.id,
            round(arrival.created.timestamp() * 1000),
            summary.message_id,
            sighting.message_id_count,
            summary.subject,
            _addresses_json(summary),
            summary.snippet,
            summary.first_line,
            summary.attachments,
            arrival.envelope.mail_from,
            json.dumps(arrival.envelope.rcpt_tos, ensure_ascii=False),
            len(arrival.raw),
            arrival.raw,
        ),
    )
    connection.execute(
        "INSERT INTO message_search (seq, text) VALUES (?, ?)",
        (inserted.lastrowid, arrival.search_text),
    )
    return sighting


def _page(connection: sqlite3.Connection, start: int, limit: int) -> MailboxPage:
    rows = connection.execute(
        f"SELECT {_SUMMARY_COLUMNS} FROM messages ORDER BY seq DESC LIMIT ? OFFSET ?",
        (limit, start),
    ).fetchall()
    total, unread = connection.execute("SELECT total, unread FROM mailbox_counts").fetchone()
    return MailboxPage(tuple(_stored(row) for row in rows), int(total), int(unread))


def _search(
    connection: sqlite3.Connection, filters: tuple[Filter, ...], start: int, limit: int
) -> SearchPage:
    condition, parameters = sql_condition(filters)
    rows = connection.execute(
        f"SELECT {_SUMMARY_COLUMNS} FROM messages m WHERE {condition}"
        " ORDER BY m.seq DESC LIMIT ? OFFSET ?",
        (*parameters, limit, start),
    ).fetchall()
    matched, matched_unread = connection.execute(
        f"SELECT COUNT(*), COALESCE(SUM(m.read = 0), 0) FROM messages m WHERE {condition}",
        parameters,
    ).fetchone()
    total, unread = connection.execute("SELECT total, unread FROM mailbox_counts").fetchone()
    return SearchPage(
        messages=tuple(_stored(row) for row in rows),
        total=int(total),
        unread=int(unread),
        matched=int(matched),
        matched_unread=int(matched_unread),
    )


def _delete_matching(connection: sqlite3.Connection, filters: tuple[Filter, ...]) -> int:
    condition, parameters = sql_condition(filters)
    return connection.execute(
        f"DELETE FROM messages WHERE seq IN (SELECT m.seq FROM messages m WHERE {condition})",
        parameters,
    ).rowcount


def _latest_id(connection: sqlite3.Connection) -> str | None:
    row = connection.execute("SELECT id FROM messages ORDER BY seq DESC LIMIT 1").fetchone()
    return str(row[0]) if row else None


def _message(
    connection: sqlite3.Connection, message_id: str, mark_read: bool
) -> tuple[StoredMessage, bytes] | None:
    row = connection.execute(
        f"SELECT {_SUMMARY_COLUMNS}, raw FROM messages WHERE id = ?", (message_id,)
    ).fetchone()
    if row is None:
        return None
    if mark_read:
        connection.execute("UPDATE messages SET read = 1 WHERE id = ? AND read = 0", (message_id,))
    return _stored(row[:-1]), bytes(row[-1])


def _raw(connection: sqlite3.Connection, message_id: str) -> bytes | None:
    row = connection.execute("SELECT raw FROM messages WHERE id = ?", (message_id,)).fetchone()
    return bytes(row[0]) if row else None


def _delete(connection: sqlite3.Connection, message_ids: Sequence[str] | None) -> int:
    if message_ids is None:
        return connection.execute("DELETE FROM messages").rowcount
    deleted = 0
    # In chunks: SQLite limits the number of parameters in one statement.
    for first in range(0, len(message_ids), _IDS_PER_DELETE):
        chunk = tuple(message_ids[first : first + _IDS_PER_DELETE])
        placeholders = ",".join("?" * len(chunk))
        deleted += connection.execute(
            f"DELETE FROM messages WHERE id IN ({placeholders})", chunk
        ).rowcount
    return deleted


def _stats(connection: sqlite3.Connection) -> SinkStats:
    # A message without a Message-ID counts as unique: it cannot be recognised again.
    received, unique = connection.execute(
        "SELECT COUNT(*),"
        " COUNT(DISTINCT NULLIF(message_id, '')) + COALESCE(SUM(message_id = ''), 0)"
        " FROM messages"
    ).fetchone()
    return SinkStats(received=int(received), unique_message_ids=int(unique))


def _addresses_json(summary: Summary) -> str:
    def pairs(addresses: tuple[Address, ...]) -> list[list[str]]:
        return [[address.name, address.address] for address in addresses]

    return json.dumps(
        {
            "From": [summary.sender.name, summary.sender.address],
            "To": pairs(summary.to),
            "Cc": pairs(summary.cc),
            "Bcc": pairs(summary.bcc),
            "ReplyTo": pairs(summary.reply_to),
        },
        ensure_ascii=False,
    )


def _stored(row: Sequence[Any]) -> StoredMessage:
    (
        message_db_id,
        created_ms,
        message_id,
        message_id_count,
        subject,
        addresses_json,
        snippet,
        first_line,
        attachments,
        mail_from,
        rcpt_tos_json,
        size,
        read,
    ) = row
    addresses = json.loads(addresses_json)

    def listed(key: str) -> tuple[Address, ...]:
        return tuple(Address(name, address) for name, address in addresses[key])

    return StoredMessage(
        id=message_db_id,
        created=datetime.fromtimestamp(created_ms / 1000, tz=UTC),
        envelope=Envelope(mail_from=mail_from, rcpt_tos=tuple(json.loads(rcpt_tos_json))),
        summary=Summary(
            message_id=message_id,
            subject=subject,
            sender=Address(*addresses["From"]),
            to=listed("To"),
            cc=listed("Cc"),
            bcc=listed("Bcc"),
            reply_to=listed("ReplyTo"),
            snippet=snippet,
            first_line=first_line,
            attachments=attachments,
        ),
        size=size,
        read=bool(read),
        sighting=Sighting(message_id_count),
    )
