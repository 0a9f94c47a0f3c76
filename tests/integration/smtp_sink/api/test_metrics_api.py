"""The real sink's /metrics (Prometheus) and the latency in /api/v1/stats, moved by SMTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.smtp_sink.conftest import RunningSink, email, send

RECEIVED = "email_sink_messages_received_total"
DUPLICATES = "email_sink_duplicate_message_ids_total"
LATENCIES = "email_sink_end_to_end_latency_seconds_count"


async def scrape(api: httpx.AsyncClient) -> dict[str, float]:
    """The unlabelled samples of /metrics; the shared sink's counters only grow, so tests
    compare two scrapes."""
    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if not sample.labels
    }


def accepted(seconds_ago: float) -> dict[str, str]:
    """The header the worker adds: the API's acceptance time, ISO 8601 with microseconds."""
    return {"X-Accepted-At": (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()}


async def test_received_and_duplicates_move_as_messages_are_stored(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    before = await scrape(api)

    await send(sink, email(message_id="<metrics-twice@example.com>"))
    await send(sink, email(message_id="<metrics-twice@example.com>"))
    await send(sink, email())

    after = await scrape(api)
    assert after[RECEIVED] - before[RECEIVED] == 3
    assert after[DUPLICATES] - before[DUPLICATES] == 1


async def test_the_latency_histogram_counts_messages_with_x_accepted_at(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    before = await scrape(api)

    await send(sink, email(headers=accepted(seconds_ago=0.05)))
    await send(sink, email())  # no header: no latency
    await send(sink, email(headers={"X-Accepted-At": "not a time"}))

    after = await scrape(api)
    assert after[LATENCIES] - before[LATENCIES] == 1
    assert after[RECEIVED] - before[RECEIVED] == 3
    assert (
        0.05
        <= after["email_sink_end_to_end_latency_seconds_sum"]
        - before["email_sink_end_to_end_latency_seconds_sum"]
        < 5
    )


async def test_stats_show_p50_and_p99_of_the_latest_latencies(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    for seconds_ago in (10, 20, 30):
        await send(sink, email(headers=accepted(seconds_ago)))

    latency = (await api.get("/api/v1/stats")).json()["latency"]

    assert latency["count"] == 3
    assert latency["p50_seconds"] == pytest.approx(20, abs=2)
    assert latency["p99_seconds"] == pytest.approx(30, abs=2)


async def test_emptying_the_mailbox_starts_the_stats_latency_over(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    await send(sink, email(headers=accepted(seconds_ago=1)))

    await api.delete("/api/v1/messages")

    latency = (await api.get("/api/v1/stats")).json()["latency"]
    assert latency == {"count": 0, "p50_seconds": None, "p99_seconds": None}
