"""The sink's Prometheus metrics (GET /metrics), the latency window and the peak rate behind
/api/v1/stats, and the run-time counts of /api/v1/info. The SMTP handler records here; the API
reads.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from services.smtp_sink.latency import WINDOW_SIZE, LatencySummary, LatencyWindow
from services.smtp_sink.mailbox import Sighting
from services.smtp_sink.peak_rate import PeakRate

# 1 ms (a worker on the same host with nothing queued) to 30 s (a backlog or retries).
LATENCY_BUCKETS_SECONDS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


@dataclass(frozen=True)
class RuntimeStats:
    """Mailpit's RuntimeStats, counted since this sink started."""

    uptime_seconds: int
    memory_bytes: int
    messages_deleted: int  # through the HTTP API
    smtp_accepted: int  # messages stored and answered 250
    smtp_accepted_bytes: int
    smtp_rejected: int  # recipients and messages refused: injected faults and chaos


class SinkMetrics:
    """One sink's metrics in a registry of their own: two sinks built in one process (as the
    tests build them) never collide in prometheus_client's global registry."""

    def __init__(
        self, window_size: int = WINDOW_SIZE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._started = clock()
        self._accepted = 0
        self._accepted_bytes = 0
        self._rejected = 0
        self._deleted = 0
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._received = Counter(
            "email_sink_messages_received",
            "Messages the sink stored (and answered 250 for).",
            registry=self.registry,
        )
        self._duplicates = Counter(
            "email_sink_duplicate_message_ids",
            "Stored messages whose Message-ID an earlier stored message already had.",
            registry=self.registry,
        )
        self._latency = Histogram(
            "email_sink_end_to_end_latency_seconds",
            "From the API's acceptance (X-Accepted-At) to the sink's arrival, in seconds.",
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self._latest = LatencyWindow(window_size)
        self._mail_from_rate = PeakRate(clock)

    def mail_from(self) -> None:
        """A MAIL FROM reached the sink: an email begun, whatever the answer to it."""
        self._mail_from_rate.add()

    def stored(self, sighting: Sighting, latency_seconds: float | None, size: int = 0) -> None:
        """A message of size bytes was stored; its latency is None when it carried no
        acceptance time."""
        self._accepted += 1
        self._accepted_bytes += size
        self._received.inc()
        if sighting.duplicate:
            self._duplicates.inc()
        if latency_seconds is not None:
            self._latency.observe(latency_seconds)
            self._latest.add(latency_seconds)

    def rejected(self) -> None:
        """The SMTP server refused a recipient or a message."""
        self._rejected += 1

    def deleted(self, count: int) -> None:
        """The HTTP API deleted count messages."""
        self._deleted += count

    def runtime(self) -> RuntimeStats:
        return RuntimeStats(
            uptime_seconds=int(self._clock() - self._started),
            memory_bytes=resident_memory_bytes(),
            messages_deleted=self._deleted,
            smtp_accepted=self._accepted,
            smtp_accepted_bytes=self._accepted_bytes,
            smtp_rejected=self._rejected,
        )

    def latency(self) -> LatencySummary:
        return self._latest.summary()

    def max_rate_1s(self) -> int:
        """The most MAIL FROMs in any one sliding second, refused ones included: a client that
        kept to a relay's limit of N a second shows N or fewer."""
        return self._mail_from_rate.peak

    def start_over(self) -> None:
        """The mailbox was emptied: the stats describe the mailbox, so their latency window and
        peak rate start over. The Prometheus histogram keeps counting, as counters must."""
        self._latest.clear()
        self._mail_from_rate.clear()


def resident_memory_bytes() -> int:
    """The process's resident memory now; where /proc is missing (macOS), its peak so far."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes there, KiB elsewhere
