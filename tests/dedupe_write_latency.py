"""`python -m tests.dedupe_write_latency`: how long after the server's 250 the dedupe store holds
the outcome (the one window where a crash sends an email twice), for SQLite and PostgreSQL.

Each email goes through the worker's own EmailProcessor with a mailer that answers at once:
the clock starts when the mailer returns the 250 and stops when the store's write returns,
committed. PostgreSQL is a private server on a free port (default settings, so
synchronous_commit=on), or the one --url names. Prints p50, p99 and max per store and lanes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from deploy.local.postgres import LocalPostgres
from services.worker.dedupe import (
    DeliveryState,
    PostgresDedupeStore,
    RecipientRow,
    SqliteDedupeStore,
    open_dedupe_store,
)
from services.worker.mime import OutgoingEmail
from services.worker.retry import RetryPolicy
from services.worker.smtp import Transaction
from shared.event_loop import run
from tests.postgres import fresh_database, private_postgres
from tests.unit.worker.fakes import QUEUED, email_processor, kafka_record, message_id_of

WARM_UP_EMAILS = 200  # not counted: each pooled connection prepares its statements once


@dataclass
class Clock:
    replied_at: dict[str, int] = field(default_factory=dict)  # message id -> perf_counter_ns
    committed_at: dict[str, int] = field(default_factory=dict)

    def milliseconds(self) -> list[float]:
        return [
            (self.committed_at[message_id] - replied) / 1e6
            for message_id, replied in self.replied_at.items()
        ]


class AnsweringMailer:
    """Takes every email at once; notes the instant it hands the 250 back."""

    awaiting_final_reply = False

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def send(self, email: OutgoingEmail, recipients: list[str]) -> Transaction:
        self._clock.replied_at[message_id_of(email)] = time.perf_counter_ns()
        return Transaction(QUEUED, {})

    async def close(self) -> None:
        pass


class TimedStore:
    """The store under test; notes the instant each outcome's write returns."""

    def __init__(self, store: SqliteDedupeStore | PostgresDedupeStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def state_of(self, message_id: str) -> DeliveryState | None:
        return await self._store.state_of(message_id)

    async def record(
        self, message_id: str, rows: Sequence[RecipientRow], stage: int, source: str
    ) -> DeliveryState:
        state = await self._store.record(message_id, rows, stage, source)
        self._clock.committed_at[message_id] = time.perf_counter_ns()
        return state

    async def record_dead_lettered(
        self, message_id: str, event: bytes | None, source: str
    ) -> DeliveryState:
        return await self._store.record_dead_lettered(message_id, event, source)


async def measure(location: str | Path, emails: int, lanes: int) -> list[float]:
    """Milliseconds from 250 to committed, for `emails` emails over `lanes` concurrent lanes."""
    store = await open_dedupe_store(location)
    clock = Clock()
    processor = email_processor(
        TimedStore(store, clock),
        retry=RetryPolicy(initial_seconds=0.1, max_seconds=1.0),
        domain="latency.test",
    )
    run = uuid.uuid4().hex[:8]
    records = [kafka_record(offset, f"{run}-{offset}") for offset in range(emails)]
    never = asyncio.Event()

    async def lane(number: int) -> None:
        mailer = AnsweringMailer(clock)
        for record in records[number::lanes]:
            await processor.process(record, mailer, never)

    try:
        await asyncio.gather(*(lane(number) for number in range(lanes)))
    finally:
        await store.close()
    return clock.milliseconds()


def summary(name: str, lanes: int, milliseconds: list[float]) -> str:
    percentiles = statistics.quantiles(milliseconds, n=100)
    return (
        f"{name:<11} {lanes:>5} {len(milliseconds):>7} {percentiles[49]:>8.3f} "
        f"{percentiles[98]:>8.3f} {max(milliseconds):>8.3f}"
    )


async def report(postgres_url: str, emails: int) -> None:
    connection = await asyncpg.connect(postgres_url)
    synchronous_commit = await connection.fetchval("SHOW synchronous_commit")
    await connection.close()
    print(
        f"250 read -> outcome committed, through EmailProcessor; PostgreSQL with "
        f"synchronous_commit={synchronous_commit}; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores; {WARM_UP_EMAILS} emails of warm-up not counted"
    )
    print(f"{'store':<11} {'lanes':>5} {'emails':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    with tempfile.TemporaryDirectory() as directory:
        sqlite_path = Path(directory) / "delivered.sqlite3"
        for lanes in (1, 8):
            for name, location in (("sqlite", sqlite_path), ("postgresql", postgres_url)):
                await measure(location, WARM_UP_EMAILS, lanes)
                print(summary(name, lanes, await measure(location, emails, lanes)), flush=True)


async def report_on_a_fresh_database(server: LocalPostgres, emails: int) -> None:
    async with fresh_database(server) as url:
        await report(url, emails)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.dedupe_write_latency")
    parser.add_argument("--emails", type=int, default=3000, help="per store and lanes")
    parser.add_argument("--url", help="a PostgreSQL database to use instead of a private one")
    arguments = parser.parse_args()
    # On uvloop where it is installed, as the worker runs.
    if arguments.url:
        run(report(arguments.url, arguments.emails))
    else:
        with private_postgres() as server:
            run(report_on_a_fresh_database(server, arguments.emails))


if __name__ == "__main__":
    main()
