"""A private PostgreSQL for tests and measurements, and fresh databases in it: its own directory
and a free port, stopped by its pid at the end; never the one `make up` runs."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from deploy.local.postgres import LocalPostgres
from tests.conftest import free_port


@contextmanager
def private_postgres() -> Iterator[LocalPostgres]:
    """A server started in a new directory under /tmp, stopped and deleted on leaving."""
    # Not under pytest's base temporary directory: only root may enter that one, and as root
    # the server runs as the postgres user, which must reach its own directory.
    directory = Path(tempfile.mkdtemp(prefix="email-pipeline-postgres-"))
    server = LocalPostgres(directory, port=free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@asynccontextmanager
async def fresh_database(server: LocalPostgres) -> AsyncIterator[str]:
    """A new, empty database on `server` (its URL), dropped on leaving."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    await _as_superuser(server, f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@{server.host}:{server.port}/{name}"
    finally:
        # WITH (FORCE): a store that a failed test left open still has connections there.
        await _as_superuser(server, f"DROP DATABASE {name} WITH (FORCE)")


async def _as_superuser(server: LocalPostgres, statement: str) -> None:
    """On a connection of its own: a test may have restarted the server since the last one."""
    connection = await asyncpg.connect(
        host=server.host, port=server.port, user="postgres", database="postgres"
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()
