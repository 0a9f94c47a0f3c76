"""Each service's /metrics, read with prometheus-client's own parser while emails go through the
running stack: the API's, the worker's and the sink's counters move by what was sent."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import DELIVERY_TIMEOUT_SECONDS, RunningStack, wait_until
from tests.kafka_tools import describe_group

EMAILS = 5
Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]


def scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, f"{url}/metrics: {response.status_code}"
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One series' value; a series not shown yet counts as 0."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str) -> dict[Labels, float]:
    return {labels: number for (sample, labels), number in samples.items() if sample == name}


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def committed_offsets(samples: Samples, topic: str) -> dict[int, float]:
    """Partition -> the worker's email_worker_committed_offset, for the stack's topic."""
    return {
        int(dict(labels)["partition"]): offset
        for labels, offset in series(samples, "email_worker_committed_offset").items()
        if dict(labels)["topic"] == topic
    }


def settled(stack: RunningStack, worker_url: str) -> bool:
    """The worker is ready and its group has committed every record of earlier tests: each
    partition empty or at its log end. The worker's own metrics cannot say it: a partition it
    has committed nothing on yet has neither a committed offset nor a lag to show."""
    if httpx.get(f"{worker_url}/readyz", timeout=10).status_code != 200:
        return False
    rows = describe_group(stack.settings.kafka_bootstrap_servers, stack.settings.consumer_group)
    return all(
        row.log_end_offset == (row.current_offset or 0)
        for row in rows
        if row.topic == stack.settings.email_topic
    )


def test_each_services_metrics_move_by_the_emails_sent(stack: RunningStack) -> None:
    topic = stack.settings.email_topic
    api_url, sink_url = stack.api_url, stack.sink_url
    worker_url = f"http://127.0.0.1:{stack.settings.worker_port}"
    wait_until(lambda: settled(stack, worker_url), 60, "the worker kept a lag from earlier tests")
    before = {url: scrape(url) for url in (api_url, worker_url, sink_url)}

    queued = [stack.send(subject=f"metrics {n}") for n in range(EMAILS)]
    invalid = stack.post_email({"from": "demo@example.com", "to": [], "subject": "s", "text": "t"})
    stack.wait_until_delivered(*(q["id"] for q in queued))

    def committed_total(samples: Samples) -> float:
        return sum(committed_offsets(samples, topic).values())

    # The worker commits within 100 ms of finishing, and counts a delivery before that.
    committed_before = committed_total(before[worker_url])
    wait_until(
        lambda: committed_total(scrape(worker_url)) >= committed_before + EMAILS,
        DELIVERY_TIMEOUT_SECONDS,
        "the worker's committed offsets did not move past the emails sent",
    )
    after = {url: scrape(url) for url in (api_url, worker_url, sink_url)}

    assert invalid.status_code == 422
    api_before, api_after = before[api_url], after[api_url]
    assert moved(api_before, api_after, "email_api_emails_accepted_total") == EMAILS
    assert moved(api_before, api_after, "email_api_emails_refused_total", reason="invalid") == 1
    assert moved(api_before, api_after, "email_api_produce_duration_seconds_count") == EMAILS
    for reason in ("too_large", "kafka_unavailable"):
        assert moved(api_before, api_after, "email_api_emails_refused_total", reason=reason) == 0
    assert value(api_after, "process_resident_memory_bytes") > 0

    worker_before, worker_after = before[worker_url], after[worker_url]
    assert_worker_counted(worker_before, worker_after)
    offsets = committed_offsets(worker_after, topic)
    assert committed_total(worker_after) == committed_before + EMAILS
    for email in queued:
        assert offsets[email["partition"]] >= email["offset"] + 1, (email, offsets)
    lags = series(worker_after, "email_worker_partition_lag")
    assert set(lags) == set(series(worker_after, "email_worker_committed_offset"))
    assert all(lag == 0 for lag in lags.values()), lags

    sink_before, sink_after = before[sink_url], after[sink_url]
    assert moved(sink_before, sink_after, "email_sink_messages_received_total") == EMAILS
    assert moved(sink_before, sink_after, "email_sink_duplicate_message_ids_total") == 0
    latency = "email_sink_end_to_end_latency_seconds"
    assert moved(sink_before, sink_after, f"{latency}_count") == EMAILS
    assert 0 < moved(sink_before, sink_after, f"{latency}_sum") < EMAILS * DELIVERY_TIMEOUT_SECONDS


def assert_worker_counted(before: Samples, after: Samples) -> None:
    """Each email delivered once, at the first try, and timed twice (SMTP, and since the API
    accepted it); nothing skipped or dead-lettered."""
    for name in (
        "email_worker_emails_delivered_total",
        "email_worker_delivery_duration_seconds_count",
        "email_worker_delivery_latency_seconds_count",
    ):
        assert moved(before, after, name) == EMAILS, name
    for name in (
        "email_worker_emails_skipped_duplicate_total",
        "email_worker_delivery_retries_total",
    ):
        assert moved(before, after, name) == 0, name
    dead_letters = "email_worker_emails_dead_lettered_total"
    assert series(after, dead_letters) == series(before, dead_letters)
    latency_sum = moved(before, after, "email_worker_delivery_latency_seconds_sum")
    assert 0 < latency_sum < EMAILS * DELIVERY_TIMEOUT_SECONDS
