"""End-to-end latency: the X-Accepted-At header read, and the rolling window's p50 and p99."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.smtp_sink.latency import (
    LatencySummary,
    LatencyWindow,
    accepted_at,
    latency_seconds,
    percentile,
)

ARRIVED = datetime(2026, 11, 25, 23, 10, 41, 373000, tzinfo=UTC)


def test_the_workers_header_is_read_to_the_microsecond() -> None:
    assert accepted_at("2026-11-25T23:10:41.123456+00:00") == datetime(
        2026, 11, 25, 23, 10, 41, 123456, tzinfo=UTC
    )


def test_any_utc_offset_is_the_same_instant() -> None:
    assert accepted_at(" 2026-11-26T00:10:41.123456+01:00 ") == accepted_at(
        "2026-11-25T23:10:41.123456Z"
    )
    assert accepted_at("2026-11-26T00:10:41+01:00") == datetime(
        2026, 11, 26, 0, 10, 41, tzinfo=timezone(timedelta(hours=1))
    )


@pytest.mark.parametrize("value", ["", "yesterday", "2026-11-25T23:10:41.123456", "25/11/2026"])
def test_a_missing_unparsable_or_offsetless_header_gives_no_time(value: str) -> None:
    assert accepted_at(value) is None


def test_latency_is_arrival_minus_acceptance() -> None:
    accepted = accepted_at("2026-11-25T23:10:41.123456+00:00")

    assert latency_seconds(accepted, ARRIVED) == pytest.approx(0.249544)
    assert latency_seconds(None, ARRIVED) is None


def test_an_arrival_before_its_acceptance_gives_no_latency() -> None:
    assert latency_seconds(ARRIVED + timedelta(milliseconds=5), ARRIVED) is None


def test_percentiles_are_nearest_rank_so_always_an_observed_value() -> None:
    ordered = [float(n) for n in range(1, 101)]

    assert (percentile(ordered, 0.5), percentile(ordered, 0.99)) == (50.0, 99.0)
    assert (percentile([7.0], 0.5), percentile([7.0], 0.99)) == (7.0, 7.0)
    assert percentile([1.0, 2.0], 0.99) == 2.0


def test_an_empty_window_has_no_percentiles() -> None:
    assert LatencyWindow().summary() == LatencySummary(0, None, None)


def test_the_window_keeps_only_the_latest_latencies() -> None:
    window = LatencyWindow(size=3)
    for seconds in (9.0, 9.0, 0.3, 0.1, 0.2):
        window.add(seconds)

    assert window.summary() == LatencySummary(count=3, p50_seconds=0.2, p99_seconds=0.3)


def test_a_full_window_of_a_thousand() -> None:
    window = LatencyWindow()
    for millisecond in range(1500, 0, -1):
        window.add(millisecond / 1000)

    assert window.summary() == LatencySummary(count=1000, p50_seconds=0.5, p99_seconds=0.99)


def test_a_cleared_window_starts_over() -> None:
    window = LatencyWindow()
    window.add(0.5)

    window.clear()

    assert window.summary().count == 0
