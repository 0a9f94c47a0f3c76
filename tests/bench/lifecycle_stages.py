"""The stages of an email's life after the 202: the main partitions' drain while some
recipients are deferred (they leave for a retry topic and must not slow the rest), and how long
the status API trails the sink."""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from tests.bench.http_load import post_many
from tests.bench.stages import (
    Bench,
    answer_id,
    email_record,
    email_request,
    percentile,
    preload,
)
from tests.private_stack import read_sink

DEFERRED_SHARE = 0.01  # the 1 %
SIMULATOR_DOMAIN = "simulator.example.com"


async def drain_with_deferrals(bench: Bench) -> dict[str, Any]:
    """The backlog drain with 1 % of the emails to a `deferred+n@` simulator address (450 on
    its first try): the rate at which the other 99 % are stored, first to last. Their
    deferrals wait a minute in the retry topic, past the end of the drain. Best of two, as
    the plain drain; compared with it as deferred/plain."""
    rates = [await _drain_once(bench, f"deferred-{attempt}") for attempt in (1, 2)]
    return {
        "emails_per_second": max(rates),
        "emails_per_second_each_run": rates,
        "deferred_share": DEFERRED_SHARE,
    }


async def _drain_once(bench: Bench, name: str) -> float:
    stack = bench.stack(name, WORKER_RETRY_SCHEDULE="1m")
    sink, worker = stack.stack.sink(), stack.stack.worker()
    await stack.up_topics()
    await stack.start(sink)
    try:
        count = bench.sizes.emails
        every = round(1 / DEFERRED_SHARE)
        records = [email_record(n, bench.run_id) for n in range(count)]
        deferred = {
            n: record.model_copy(update={"to": [f"deferred+{bench.run_id}-{n}@{SIMULATOR_DOMAIN}"]})
            for n, record in enumerate(records)
            if n % every == every // 2
        }
        records = [deferred.get(n, record) for n, record in enumerate(records)]
        plain = {record.message_id for n, record in enumerate(records) if n not in deferred}
        await preload(stack, records)
        await stack.start(worker)
        await bench.until_stored(stack, len(plain), seconds=count / 50 + 60, timeline=name)
        bench.note_peak_rss(stack, [worker, sink])
        arrivals = (await read_sink(stack)).arrivals
        stored_at = [at for message_id in plain for at in arrivals.get(message_id, [])]
        return (len(stored_at) - 1) / max(max(stored_at) - min(stored_at), 1e-3)
    finally:
        await stack.down()


async def status_delay(bench: Bench) -> dict[str, Any]:
    """A steady rate through the API, as the latency stage offers it: for each email, from the
    sink storing it to the API's read model applying its `sent` event, the moment from which
    `GET /emails/{id}` says delivered. The read model's own clock (applied_at) and the sink's
    are the same host's."""
    stack = bench.stack("status")
    await stack.up()
    try:
        count = int(bench.sizes.rate * bench.sizes.latency_seconds)
        answers = await post_many(
            "127.0.0.1", stack.settings.api_port, "/emails", count, bench.sizes.clients,
            lambda n: (email_request(n, bench.run_id), {}), rate=bench.sizes.rate,
        )  # fmt: skip
        ids = [answer_id(answer) for answer in answers if answer.status == 202]
        await bench.until_stored(stack, len(ids), seconds=60)
        applied = await _sent_applied_at(stack.settings.api_db_path, ids, seconds=60)
        stored = (await read_sink(stack)).arrivals
        # The sink keeps milliseconds: its time rounded up to the next one, as the latency stage.
        delays_ms = [
            (applied[message_id] - (stored[message_id][0] + 0.001)) * 1000
            for message_id in ids
            if message_id in applied and message_id in stored
        ]
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as client:
            answer = await client.get(f"/emails/{ids[-1]}")
        return {
            "offered_per_second": bench.sizes.rate,
            "emails": len(delays_ms),
            "p50_ms": statistics.median(delays_ms),
            "p99_ms": percentile(delays_ms, 0.99),
            "max_ms": max(delays_ms),
            "last_status": answer.json()["status"],
        }
    finally:
        await stack.down()


async def _sent_applied_at(database: Path, ids: list[str], seconds: float) -> dict[str, float]:
    """Message id -> when the read model applied its `sent` event, once all have one."""
    wanted = set(ids)
    deadline = time.monotonic() + seconds
    while True:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT message_id, applied_at FROM email_events WHERE type = 'sent'"
            ).fetchall()
        applied = {message_id: at for message_id, at in rows if message_id in wanted}
        if len(applied) == len(wanted) or time.monotonic() > deadline:
            return applied
        await asyncio.sleep(0.5)
