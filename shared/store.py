"""What every store needs, whichever service keeps it. On PostgreSQL: a pool that connects when
first needed, a table created once by processes that start together, a call made once more on
a connection the server closed. On SQLite: a reader on the event loop and a writer in a thread
of its own. On both: one clear line when the store cannot be opened.

The location (a postgresql:// URL or a SQLite file) comes from shared.settings.store_location.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]

CONNECT_TIMEOUT_SECONDS = 5.0
STATEMENT_TIMEOUT_SECONDS = 10.0  # a call fails, and its caller decides, rather than hang
# The writer waits for another process's lock in the store's thread, never on the event loop.
WRITER_BUSY_TIMEOUT_MS = 5000
# A reader in WAL mode never waits for a writer; this bounds the rare wait for a recovery.
READER_BUSY_TIMEOUT_MS = 100

T = TypeVar("T")

# What a pooled connection raises once the server behind it has gone (a restart, a failover).
CONNECTION_LOST = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


class CannotOpenStore(Exception):
    """The store a setting names cannot be used; the message says why and what to change."""


async def open_pool(
    url: str, setting: str, table: str, create_table: str, application_name: str, max_size: int
) -> Any:
    """A pool on `url`, checked to answer, with `table` created if it is missing; or
    CannotOpenStore, naming `setting` (the variable that holds the URL)."""
    pool = asyncpg.create_pool(
        url,
        # Opened when first needed, then kept however long they idle: a new connection costs
        # several round trips. No floor: asyncpg would reconnect to it in the background while
        # the server is away, logging a traceback each time; a call reconnects on its own.
        min_size=0,
        max_size=max_size,
        max_inactive_connection_lifetime=0,
        timeout=CONNECT_TIMEOUT_SECONDS,
        command_timeout=STATEMENT_TIMEOUT_SECONDS,
        reset=_keep_session,
        server_settings={"application_name": application_name},
    )
    try:
        await pool
        async with pool.acquire() as connection:
            await create_table_once(connection, table, create_table)
    except Exception as error:
        await pool.close()
        raise CannotOpenStore(cannot_open_reason(error, url, setting, table)) from error
    return pool


class PostgresPool:
    """A store's pool (see open_pool) and its calls: each made once more if the server had
    closed its connection (once_more_if_lost), any failure raised as `unavailable`, naming the
    server but not the password."""

    def __init__(self, url: str, setting: str, unavailable: type[Exception]) -> None:
        self.url = url
        self.setting = setting  # the variable that holds the URL, for messages
        self.where = describe(url)  # host:port/database, for messages
        self._unavailable = unavailable
        self._pool: Any = None

    async def open(
        self, table: str, create_table: str, application_name: str, max_size: int
    ) -> None:
        """Open the pool, check that the server answers, create the table if it is missing."""
        self._pool = await open_pool(
            self.url, self.setting, table, create_table, application_name, max_size
        )

    async def call(self, call: Callable[[Any], Awaitable[T]]) -> T:
        """`call(pool)`; only idempotent statements, as once_more_if_lost says."""
        pool = self._pool
        if pool is None:
            raise self._unavailable(f"PostgreSQL at {self.where}: not open (yet)")
        try:
            return await once_more_if_lost(lambda: call(pool))
        except (TimeoutError, asyncpg.PostgresError, *CONNECTION_LOST) as error:
            reason = str(error) or type(error).__name__
            raise self._unavailable(f"PostgreSQL at {self.where} failed ({reason})") from error

    async def delete_in_batches(self, statement: str, older_than: float, batch: int) -> int:
        """Run `statement` ($1 older_than, $2 batch: a DELETE of at most `batch` rows) until it
        deletes fewer, so that no transaction holds many rows. Returns how many it deleted."""
        deleted = 0
        while True:
            status: str = await self.call(lambda pool: pool.execute(statement, older_than, batch))
            count = int(status.rpartition(" ")[2])  # "DELETE 1000"
            deleted += count
            if count < batch:
                return deleted

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


async def once_more_if_lost(call: Callable[[], Awaitable[T]]) -> T:
    """`call`, made once more at once if its pooled connection had been closed by the server
    (a restart): the pool replaces it on the next acquire. Only for idempotent statements: one
    that did commit may have lost only its answer."""
    try:
        return await call()
    except TimeoutError:
        raise  # a server that is slow or out of reach: a second wait would only double it
    except CONNECTION_LOST:
        return await call()


async def create_table_once(connection: Any, table: str, create_table: str) -> None:
    """CREATE TABLE IF NOT EXISTS alone can fail when processes start together (both see no
    table; one insert into the catalogue loses): a lock held until the commit lines them up.
    A table that exists already is left alone, so the user needs no CREATE privilege then."""
    if await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
        return
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", table)
        await connection.execute(create_table)


async def _keep_session(connection: Any) -> None:
    """The stores set no session state (no SET, LISTEN or session lock): asyncpg's default
    reset, one round trip more on every release, has nothing to undo."""


def describe(url: str) -> str:
    """host:port/database of a postgresql:// URL, without its user or password."""
    parts = urlsplit(url)
    return f"{parts.netloc.rpartition('@')[2] or 'localhost'}{parts.path}"


def cannot_open_reason(error: BaseException, url: str, setting: str, table: str) -> str:
    """One line: what went wrong opening the store at `url`, and what to change."""
    where = describe(url)
    database = urlsplit(url).path.lstrip("/") or "(the user's name)"
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        return (
            f"PostgreSQL at {where} has no database {database}: create it (createdb "
            f"{database}) or name an existing one in {setting}"
        )
    if isinstance(error, asyncpg.InvalidAuthorizationSpecificationError):
        return f"PostgreSQL at {where} refused {setting}'s user or password ({error})"
    if isinstance(error, asyncpg.ClientConfigurationError | ValueError):
        return f"{setting} is not a PostgreSQL URL asyncpg understands ({error})"
    if isinstance(error, OSError | TimeoutError | asyncpg.CannotConnectNowError):
        reason = str(error) or type(error).__name__
        return (
            f"cannot reach PostgreSQL at {where} ({reason}): check {setting}'s host and port "
            "and that PostgreSQL runs there (`python -m deploy.local.postgres start` runs one "
            "on this machine)"
        )
    if isinstance(error, asyncpg.InsufficientPrivilegeError):
        return (
            f"PostgreSQL at {where} refused to create the table {table} ({error}): grant "
            f"{setting}'s user CREATE on the schema, or create the table once as its owner"
        )
    return f"PostgreSQL at {where} failed to open the store ({type(error).__name__}: {error})"


class SqliteConnections:
    """Two connections to a SQLite file in WAL mode. Reads run on the event loop: a read in WAL
    mode never waits for a writer's lock and takes microseconds, less than a hop to a thread
    and back. Writes run in one thread of the store's own, where waiting for another process's
    lock, or a checkpoint's fsync, stalls nothing. synchronous=NORMAL: a write survives the
    process being killed; only a power loss just after it could lose it.

    A failure is raised as `unavailable`, naming the file; one opening it as CannotOpenStore,
    naming `setting` (the variable that holds the file's path)."""

    def __init__(
        self, path: Path, setting: str, unavailable: type[Exception], thread_name: str
    ) -> None:
        self.path = path
        self._setting = setting
        self._unavailable = unavailable
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None

    async def open(self, create: Callable[[sqlite3.Connection], object]) -> None:
        """Open the file, creating it and its directory if they are missing, and run `create`
        (CREATE ... IF NOT EXISTS) on the writer under the write lock, so that processes that
        start together create the tables once."""
        try:
            self._writer = await asyncio.get_running_loop().run_in_executor(
                self._thread, _open_writer, self.path, create
            )
            self._reader = _open_reader(self.path)
        except (OSError, sqlite3.Error) as error:
            await self.close()
            raise CannotOpenStore(
                f"cannot open the SQLite file {self.path} ({error}): check that its directory "
                f"is writable, or choose another with {self._setting}"
            ) from error

    def read(self, call: Callable[[sqlite3.Connection], T]) -> T:
        """`call(reader)` on the event loop; `call` reads every row it needs before it returns."""
        reader = self._reader
        if reader is None:
            raise self._unavailable(f"the SQLite file {self.path}: not open (yet)")
        try:
            return call(reader)
        except sqlite3.Error as error:
            raise self._unavailable(f"the SQLite file {self.path} failed ({error})") from error

    async def write(self, call: Callable[[sqlite3.Connection], T]) -> T:
        """`call(writer)` in the store's thread, after the calls made before it: writes, and
        reads too long for the event loop."""
        writer = self._writer
        if writer is None:
            raise self._unavailable(f"the SQLite file {self.path}: not open (yet)")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, call, writer)
        except sqlite3.Error as error:
            raise self._unavailable(f"the SQLite file {self.path} failed ({error})") from error

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        writer, self._writer = self._writer, None
        if writer is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, writer.close)
        self._thread.shutdown()


def _open_writer(path: Path, create: Callable[[sqlite3.Connection], object]) -> sqlite3.Connection:
    """In the store's thread, which is the only one to use it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(f"PRAGMA busy_timeout={WRITER_BUSY_TIMEOUT_MS}")  # first: WAL may wait too
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("BEGIN IMMEDIATE")
        create(db)
        db.execute("COMMIT")
    except BaseException:
        db.close()
        raise
    return db


def _open_reader(path: Path) -> sqlite3.Connection:
    """On the event loop's thread, which is the only one to use it."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA query_only=ON")
    db.execute(f"PRAGMA busy_timeout={READER_BUSY_TIMEOUT_MS}")
    return db
