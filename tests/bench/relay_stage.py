"""The worker against a remote relay: the sink answering each reply SINK_REPLY_DELAY_MS late, as
a relay in another region would, and the worker's rate against the bound its concurrency allows.

Little's law: with partitions x lanes emails in flight, each holding its lane for one
transaction's time at the relay, no worker delivers more than partitions x lanes / that time.
The time is measured, not assumed: the direct client (the worker's own SMTP edge) sends emails
one after another over one open connection to the same slow sink."""

from __future__ import annotations

import time
from typing import Any

from services.worker.mime import render_email
from services.worker.smtp import SmtpConnection, SmtpServer
from tests.bench.stages import Bench, drain_once, email_record

DELAY_MS = 20  # a relay in another region
SECONDS_PER_DRAIN = {"full": 10.0, "quick": 1.5}  # each lanes row's backlog, at its bound
TRANSACTIONS = {"full": 100, "quick": 10}
MAX_LANES = 64  # WORKER_LANES_PER_PARTITION's own limit


async def remote_relay(bench: Bench) -> dict[str, Any]:
    size = "quick" if bench.sizes.emails < 1000 else "full"
    slow_sink = {"SINK_REPLY_DELAY_MS": str(DELAY_MS)}
    transaction = await transaction_seconds(bench, TRANSACTIONS[size], slow_sink)
    settings = bench.stack("relay-settings").settings
    partitions, default_lanes = settings.topic_partitions, settings.worker_lanes_per_partition
    by_lanes = {}
    tried = {2, default_lanes // 2, default_lanes, default_lanes * 2}
    for lanes in sorted({min(max(lanes, 1), MAX_LANES) for lanes in tried}):
        bound = partitions * lanes / transaction
        emails = max(100, round(bound * SECONDS_PER_DRAIN[size]))
        name = f"relay-{lanes}-lanes"
        # Peak RSS is judged on the default settings: the other rows' workers do not count.
        peak_rss = dict(bench.peak_rss_bytes)
        rate = await drain_once(
            bench.with_emails(emails), name, WORKER_LANES_PER_PARTITION=str(lanes), **slow_sink
        )
        if lanes != default_lanes:
            bench.peak_rss_bytes.clear()
            bench.peak_rss_bytes.update(peak_rss)
        by_lanes[lanes] = {
            "emails_per_second": rate,
            "bound": bound,
            "ratio": rate / bound,
            "emails": emails,
            "cpu_ms_per_email": bench.timelines.pop(name).cpu_ms_per_email(),
        }
    return {
        "delay_ms": DELAY_MS,
        "transaction_ms": transaction * 1000,
        "partitions": partitions,
        "default_lanes": default_lanes,
        "by_lanes": by_lanes,
        "relay/bound": by_lanes[default_lanes]["ratio"],
    }


async def transaction_seconds(bench: Bench, count: int, overrides: dict[str, str]) -> float:
    """One email's time at the slow sink, with the connection already open: the least time a
    lane can hold an email for."""
    stack = bench.stack("relay-client", **overrides)
    sink = stack.stack.sink()
    emails = [
        render_email(email_record(n, bench.run_id), stack.settings.message_id_domain)
        for n in range(count + 1)
    ]
    await stack.start(sink)
    connection = SmtpConnection(
        SmtpServer(host="127.0.0.1", port=stack.settings.sink_smtp_port, timeout_seconds=30)
    )
    try:
        await connection.send(emails[0], emails[0].recipients)  # opens the connection
        started = time.monotonic()
        for email in emails[1:]:
            await connection.send(email, email.recipients)
        return (time.monotonic() - started) / count
    finally:
        await connection.close()
        await stack.stop(sink)
