"""Relay etiquette against the real sink as a rate-limited relay (SINK_RATE_LIMIT: 421 above N
MAIL FROMs in any second, and the sink's own count of its busiest second, max_rate_1s): the
worker's lanes, sharing one SendLimiter and one SmtpPool, never send it more than N, and a
"slow down" reply slows them all until every email is taken, each once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.worker.mime import render_email
from services.worker.processor import AttemptCounts
from services.worker.retry import RetryPolicy
from services.worker.send_limiter import SendLimiter
from services.worker.smtp import SmtpServer
from services.worker.smtp_pool import SmtpPool
from tests.integration.smtp_sink.conftest import RunningSink, running_sink
from tests.unit.worker.fakes import InMemoryDedupeStore, email_processor, email_record, kafka_record

LIMIT = 10  # emails a second, the relay's and the worker's
LANES = 8
EMAILS = 40


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RunningSink]:
    with running_sink(tmp_path, SINK_RATE_LIMIT=str(LIMIT)) as sink:
        yield sink


async def stats(sink: RunningSink) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=sink.api) as api:
        answer: dict[str, Any] = (await api.get("/api/v1/stats")).json()
        return answer


async def test_a_relay_limited_to_n_a_second_is_never_sent_more_than_n(relay: RunningSink) -> None:
    limiter = SendLimiter(LIMIT)
    pool = SmtpPool(SmtpServer("127.0.0.1", relay.smtp_port, timeout_seconds=5), limiter, None)
    emails = [render_email(email_record(f"rate-{n}"), "pipeline.test") for n in range(EMAILS)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(EMAILS):
        queue.put_nowait(number)

    async def lane() -> None:
        mailer = pool.lane()
        while not queue.empty():
            email = emails[queue.get_nowait()]
            transaction = await mailer.send(email, email.recipients)  # a 421 would raise
            assert transaction.reply.code == 250

    try:
        await asyncio.gather(*(lane() for _ in range(LANES)))
    finally:
        await pool.close()

    sink = await stats(relay)
    assert sink["max_rate_1s"] <= LIMIT
    assert sink["max_rate_1s"] >= LIMIT // 2, "and it kept near the limit, not far below"


async def test_a_slow_down_reply_slows_every_lane_and_each_email_arrives_once(
    relay: RunningSink,
) -> None:
    """No SMTP_MAX_RATE: the relay's 421s teach the worker its rate (AIMD); the emails that
    got them wait in their lanes, none deferred to a retry topic."""
    limiter = SendLimiter(None)
    pool = SmtpPool(SmtpServer("127.0.0.1", relay.smtp_port, timeout_seconds=5), limiter, None)
    store, counts = InMemoryDedupeStore(), AttemptCounts()
    processor = email_processor(store, pace=limiter, retry=RetryPolicy(0.25, 1.0), counts=counts)
    records = [kafka_record(n, f"slow-down-{n}") for n in range(EMAILS)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(EMAILS):
        queue.put_nowait(number)
    stopping = asyncio.Event()

    limits_seen: list[int | None] = []  # the worker's limit as each email finished

    async def lane() -> list[str]:
        mailer, finished = pool.lane(), list[str]()
        while not queue.empty():
            outcome = await processor.process(records[queue.get_nowait()], mailer, stopping)
            finished.append(outcome.finished)
            limits_seen.append(limiter.rate_limit)
        return finished

    try:
        async with asyncio.timeout(60):
            outcomes = [f for lane_outcomes in await asyncio.gather(
                *(lane() for _ in range(LANES))
            ) for f in lane_outcomes]  # fmt: skip
    finally:
        await pool.close()

    assert outcomes == ["delivered"] * EMAILS
    assert all(row.state == "sent" for rows in store.rows.values() for row in rows.values())
    sink = await stats(relay)
    assert (sink["received"], sink["duplicates"]) == (EMAILS, 0), "each email once"
    assert counts.throttled > 0, "the relay did say slow down"
    # AIMD's sawtooth: cut below what the relay takes, then a step a second back up until the
    # relay refuses again, so the limit when the last email finishes may be a step above it.
    cut_at = next((n for n, limit in enumerate(limits_seen) if limit is not None), None)
    assert cut_at is not None, "the relay's slow-down set a limit"
    paced = [limit for limit in limits_seen[cut_at:] if limit is not None]
    assert len(paced) == len(limits_seen) - cut_at, "and every lane kept to it"
    assert paced[0] <= LIMIT, "the rate came down to what the relay takes"
    assert max(paced) > paced[0], "then it climbed back, probing for more"
