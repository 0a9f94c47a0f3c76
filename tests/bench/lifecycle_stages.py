"""The stages of an email's life after the 202: the main partitions' drain while some
recipients are deferred (they leave for a retry topic and must not slow the rest), and how long
the status API trails the sink."""

from __future__ import annotations

import statistics
from typing import Any

from tests.bench.stages import Bench, email_record, percentile, preload
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


def status_delay_figures(delays_ms: list[float]) -> dict[str, Any]:
    return {
        "emails": len(delays_ms),
        "p50_ms": statistics.median(delays_ms),
        "p99_ms": percentile(delays_ms, 0.99),
        "max_ms": max(delays_ms),
    }
