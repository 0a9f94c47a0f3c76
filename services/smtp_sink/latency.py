"""End-to-end latency: from the API's acceptance (the X-Accepted-At header) to the sink's arrival.

Pure: reading the header, and the p50/p99 of a rolling window of the latest latencies.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime

ACCEPTED_AT_HEADER = "X-Accepted-At"
WINDOW_SIZE = 1000


@dataclass(frozen=True)
class LatencySummary:
    count: int
    p50_seconds: float | None
    p99_seconds: float | None


def accepted_at(header_value: str) -> datetime | None:
    """The acceptance time in an X-Accepted-At header (ISO 8601 with a UTC offset), or None."""
    if not header_value:
        return None
    try:
        parsed = datetime.fromisoformat(header_value.strip())
    except ValueError:
        return None
    # Without an offset the instant is unknown; a guess would make a plausible wrong number.
    return parsed if parsed.tzinfo is not None else None


def latency_seconds(accepted: datetime | None, arrived: datetime) -> float | None:
    """Seconds from acceptance to arrival; None without an acceptance time or when the clocks
    disagree so far that arrival came first, as no latency can be read from that."""
    if accepted is None:
        return None
    seconds = (arrived - accepted).total_seconds()
    return seconds if seconds >= 0 else None


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of a sorted, non-empty list: a latency that was observed."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class LatencyWindow:
    """The latest latencies, at most `size` of them; appending is O(1) on the SMTP path, the
    sorting is left to whoever asks for the summary."""

    def __init__(self, size: int = WINDOW_SIZE) -> None:
        self._latest: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._latest.append(seconds)

    def clear(self) -> None:
        self._latest.clear()

    def summary(self) -> LatencySummary:
        if not self._latest:
            return LatencySummary(count=0, p50_seconds=None, p99_seconds=None)
        ordered = sorted(self._latest)
        return LatencySummary(
            count=len(ordered),
            p50_seconds=percentile(ordered, 0.50),
            p99_seconds=percentile(ordered, 0.99),
        )
