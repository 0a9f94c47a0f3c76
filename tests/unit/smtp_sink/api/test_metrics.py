"""The sink's Prometheus metrics: what each stored message moves, and one registry per sink."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.smtp_sink.api.metrics import LATENCY_BUCKETS_SECONDS, SinkMetrics
from services.smtp_sink.mailbox import Sighting


def samples(metrics: SinkMetrics) -> dict[str, float]:
    body = generate_latest(metrics.registry)
    return {
        sample.name
        + "".join(f"{{{k}={v}}}" for k, v in sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_two_sinks_in_one_process_have_their_own_metrics() -> None:
    first, second = SinkMetrics(), SinkMetrics()

    first.stored(Sighting(1), None)

    assert samples(first)["email_sink_messages_received_total"] == 1
    assert samples(second)["email_sink_messages_received_total"] == 0


def test_stored_messages_duplicates_and_latencies_are_counted() -> None:
    metrics = SinkMetrics()

    metrics.stored(Sighting(1), 0.004)
    metrics.stored(Sighting(2), 0.2)
    metrics.stored(Sighting(3), None)

    counted = samples(metrics)
    assert counted["email_sink_messages_received_total"] == 3
    assert counted["email_sink_duplicate_message_ids_total"] == 2
    assert counted["email_sink_end_to_end_latency_seconds_count"] == 2
    assert counted["email_sink_end_to_end_latency_seconds_sum"] == pytest.approx(0.204)
    assert counted["email_sink_end_to_end_latency_seconds_bucket{le=0.005}"] == 1
    assert counted["email_sink_end_to_end_latency_seconds_bucket{le=0.25}"] == 2


def test_latency_buckets_span_a_millisecond_to_thirty_seconds() -> None:
    counted = samples(SinkMetrics())

    buckets = [
        name for name in counted if name.startswith("email_sink_end_to_end_latency_seconds_bucket")
    ]
    assert (LATENCY_BUCKETS_SECONDS[0], LATENCY_BUCKETS_SECONDS[-1]) == (0.001, 30.0)
    assert len(buckets) == len(LATENCY_BUCKETS_SECONDS) + 1  # and +Inf


def test_the_stats_window_forgets_but_the_histogram_keeps_counting() -> None:
    metrics = SinkMetrics()
    metrics.stored(Sighting(1), 0.01)
    metrics.stored(Sighting(1), 0.03)
    metrics.mail_from()

    before = metrics.latency()
    metrics.start_over()

    assert (before.count, before.p50_seconds, before.p99_seconds) == (2, 0.01, 0.03)
    assert metrics.latency().count == 0
    assert metrics.max_rate_1s() == 0
    assert samples(metrics)["email_sink_end_to_end_latency_seconds_count"] == 2


def test_the_peak_rate_is_the_most_mail_froms_in_one_sliding_second() -> None:
    now = [100.0]
    metrics = SinkMetrics(clock=lambda: now[0])

    for moment in (100.0, 100.5, 100.9, 101.4, 101.45, 103.0):
        now[0] = moment
        metrics.mail_from()

    assert metrics.max_rate_1s() == 4  # 100.5 to 101.45


def test_runtime_stats_count_since_the_start() -> None:
    now = [100.0]
    metrics = SinkMetrics(clock=lambda: now[0])
    metrics.stored(Sighting(1), None, size=1200)
    metrics.stored(Sighting(2), None, size=300)
    metrics.rejected()
    metrics.deleted(2)
    metrics.deleted(0)
    now[0] = 161.9

    runtime = metrics.runtime()

    assert (
        runtime.uptime_seconds,
        runtime.smtp_accepted,
        runtime.smtp_accepted_bytes,
        runtime.smtp_rejected,
        runtime.messages_deleted,
    ) == (61, 2, 1500, 1, 2)
    assert runtime.memory_bytes > 1024 * 1024, "a Python process holds more than a MiB"
