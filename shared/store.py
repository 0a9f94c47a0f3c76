"""What every store on PostgreSQL needs, whichever service keeps it: a pool that connects when
first needed, a table created once by processes that start together, a call made once more on
a connection the server closed, and one clear line when the store cannot be opened.

The location (a postgresql:// URL or a SQLite file) comes from shared.settings.store_location.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]

CONNECT_TIMEOUT_SECONDS = 5.0
STATEMENT_TIMEOUT_SECONDS = 10.0  # a call fails, and its caller decides, rather than hang

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
