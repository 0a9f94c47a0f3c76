"""The benchmark's stages beyond one machine: the backlog drain on a three-broker cluster (topics
of three replicas, min.insync.replicas=2) and with the dedupe store every host shares
(PostgreSQL), each against the single-broker, SQLite drain of the same run; and the instant
between the server's 250 and the store's committed write, for both stores."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from pathlib import Path
from typing import Any

from tests.bench.stages import Bench, drain_once
from tests.dedupe_write_latency import WARM_UP_EMAILS, measure
from tests.postgres import fresh_database, private_postgres
from tests.private_cluster import private_cluster

REPLICATED = {"TOPIC_REPLICATION_FACTOR": "3", "TOPIC_MIN_INSYNC_REPLICAS": "2"}
WRITE_INSTANT_EMAILS = {"full": 3000, "quick": 200}  # per store and number of lanes
WRITE_INSTANT_LANES = (1, 8)


async def cluster_drain(bench: Bench) -> dict[str, Any]:
    """The backlog drain on a private three-node cluster, best of two as the single broker's."""
    cluster = private_cluster(bench.run_dir / "cluster", bench.broker.settings.kafka_libs_dir)
    started = await asyncio.to_thread(cluster.start)
    try:
        rates = [
            await drain_once(bench, f"cluster-{attempt}", cluster.bootstrap_servers, **REPLICATED)
            for attempt in (1, 2)
        ]
    finally:
        await asyncio.to_thread(cluster.stop)
    return {
        "emails_per_second": max(rates),
        "emails_per_second_each_run": rates,
        "brokers": 3,
        "cluster_start_seconds": started.seconds,
    }


async def postgres_store(bench: Bench) -> dict[str, Any]:
    """The backlog drain with DEDUPE_URL on a private PostgreSQL (best of two, each on a fresh
    database), and the 250-to-committed instant of both stores through the worker's processor."""
    emails = WRITE_INSTANT_EMAILS["quick" if bench.sizes.emails < 1000 else "full"]
    with private_postgres() as server:
        rates = []
        for attempt in (1, 2):
            async with fresh_database(server) as url:
                rates.append(await drain_once(bench, f"postgres-{attempt}", DEDUPE_URL=url))
        async with fresh_database(server) as url:
            instants = await write_instants(url, emails)
    return {
        "emails_per_second": max(rates),
        "emails_per_second_each_run": rates,
        "write_instant_ms": instants,
    }


async def write_instants(postgres_url: str, emails: int) -> dict[str, dict[str, float]]:
    """{"sqlite, 1 lane": {"p50": ms, "p99": ms, "max": ms}, ...}, after a warm-up each."""
    instants = {}
    with tempfile.TemporaryDirectory() as directory:
        sqlite_path = Path(directory) / "delivered.sqlite3"
        for lanes in WRITE_INSTANT_LANES:
            for store, location in (("sqlite", sqlite_path), ("postgresql", postgres_url)):
                await measure(location, WARM_UP_EMAILS, lanes)
                milliseconds = await measure(location, emails, lanes)
                percentiles = statistics.quantiles(milliseconds, n=100)
                instants[f"{store}, {lanes} lane{'s' if lanes > 1 else ''}"] = {
                    "p50": percentiles[49],
                    "p99": percentiles[98],
                    "max": max(milliseconds),
                }
    return instants
