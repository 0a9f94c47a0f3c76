"""The sink's Prometheus metrics (GET /metrics) and the latency window behind /api/v1/stats.

The SMTP handler records each stored message here; the HTTP API reads what it has recorded.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from services.smtp_sink.latency import WINDOW_SIZE, LatencySummary, LatencyWindow
from services.smtp_sink.mailbox import Sighting

# 1 ms (a worker on the same host with nothing queued) to 30 s (a backlog or retries).
LATENCY_BUCKETS_SECONDS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class SinkMetrics:
    """One sink's metrics in a registry of their own: two sinks built in one process (as the
    tests build them) never collide in prometheus_client's global registry."""

    def __init__(self, window_size: int = WINDOW_SIZE) -> None:
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

    def stored(self, sighting: Sighting, latency_seconds: float | None) -> None:
        """A message was stored; its latency is None when it carried no acceptance time."""
        self._received.inc()
        if sighting.duplicate:
            self._duplicates.inc()
        if latency_seconds is not None:
            self._latency.observe(latency_seconds)
            self._latest.add(latency_seconds)

    def latency(self) -> LatencySummary:
        return self._latest.summary()

    def forget_latencies(self) -> None:
        """The mailbox was emptied: the stats' window describes the mailbox, so it starts over.
        The Prometheus histogram keeps counting, as counters must."""
        self._latest.clear()

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """Every metric and the content type, in the format the Accept header asks for:
        Prometheus's text format unless it names OpenMetrics, as prometheus_client serves."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type
