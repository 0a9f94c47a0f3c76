"""The back-off between attempts: doubling up to the longest, half of it random."""

from __future__ import annotations

from services.worker.retry import backoff_seconds


def test_backoff_doubles_up_to_the_maximum_with_jitter() -> None:
    without_jitter = [backoff_seconds(n, 0.5, 4.0, lambda: 1.0) for n in range(1, 7)]
    least = [backoff_seconds(n, 0.5, 4.0, lambda: 0.0) for n in range(1, 7)]

    assert without_jitter == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert least == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
