"""The API's Prometheus metrics, served at `GET /metrics`: emails accepted, emails refused and
why, how long Kafka took to acknowledge each record, and the event loop's lag."""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from shared.loop_lag import LoopLag

RefusalReason = Literal[
    "invalid", "too_large", "kafka_unavailable", "key_conflict", "key_store_unavailable"
]
REFUSAL_REASONS: Final[tuple[RefusalReason, ...]] = (
    "invalid", "too_large", "kafka_unavailable", "key_conflict", "key_store_unavailable",
)  # fmt: skip

# From a broker on the same host (a millisecond) to API_PRODUCE_TIMEOUT_SECONDS and beyond.
SECONDS_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

# Not in prometheus_client's default registry: each app gets a registry of its own (below), so
# building several apps in one process (the tests) never clashes. The counters themselves are
# the process's: apps built in one process share them.
EMAILS_ACCEPTED = Counter(
    "email_api_emails_accepted_total",
    "Emails answered 202: Kafka acknowledged their record.",
    registry=None,
)
EMAILS_REFUSED = Counter(
    "email_api_emails_refused_total",
    "Requests to send an email that were refused, by reason: invalid (400 not JSON or an "
    "invalid Idempotency-Key, 422 a field is invalid), too_large (413: over API_MAX_BODY_BYTES, "
    "or a record larger than the topic takes), kafka_unavailable (503, Kafka did not "
    "acknowledge), key_conflict (409 the key's first request is in flight, 422 the key was "
    "used with another body), key_store_unavailable (503, the key could not be checked). In "
    "a batch, each email refused counts.",
    ["reason"],
    registry=None,
)
IDEMPOTENT_REPLAYS = Counter(
    "email_api_idempotent_replays_total",
    "Requests answered with the kept answer of an earlier request with the same "
    "Idempotency-Key and body (Idempotent-Replayed: true).",
    registry=None,
)
PRODUCE_DURATION = Histogram(
    "email_api_produce_duration_seconds",
    "From handing a record to the Kafka producer to the broker's acknowledgement (or the "
    "produce's failure).",
    buckets=SECONDS_BUCKETS,
    registry=None,
)

for reason in REFUSAL_REASONS:
    EMAILS_REFUSED.labels(reason=reason)  # every reason shows from the start, at 0


def refused(reason: RefusalReason) -> None:
    EMAILS_REFUSED.labels(reason=reason).inc()


def metrics_registry() -> CollectorRegistry:
    """What one API app's `/metrics` shows: its metrics and the process's (memory, CPU, GC)."""
    registry = CollectorRegistry()
    for collector in (EMAILS_ACCEPTED, EMAILS_REFUSED, IDEMPOTENT_REPLAYS, PRODUCE_DURATION):
        registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def event_loop_lag(registry: CollectorRegistry) -> LoopLag:
    """email_api_event_loop_lag_seconds and email_api_event_loop_lag_max_seconds in one app's
    registry, sampled while the app runs."""
    return LoopLag("email_api", registry)
