"""The worker's Prometheus metrics, served at `GET /metrics` on its health port: what became of
each email, how long SMTP and the whole trip took, and each owned partition's offsets and lag.
What the processor and the configuration faults count as plain integers is read at each scrape."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from services.worker.configuration_faults import ConfigurationFaults
from services.worker.offsets import PartitionOffsets
from services.worker.outcome import DEAD_LETTER_REASONS, RecordOutcome
from services.worker.processor import AttemptCounts

if TYPE_CHECKING:  # smtp.py, which smtp_pool.py imports, counts in this module
    from services.worker.send_limiter import SendLimiter
    from services.worker.smtp_pool import SmtpPool

# One SMTP transaction: a millisecond on the same host, up to SMTP_TIMEOUT_SECONDS and beyond.
SECONDS_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
# Acceptance to delivery also spans a backlog, retries and outages: minutes are worth telling
# apart from the rest of +Inf.
LATENCY_BUCKETS: Final = (*SECONDS_BUCKETS, 60.0, 300.0, 900.0)

# Not in prometheus_client's default registry: each health app gets a registry of its own
# (below), so several workers in one process (the tests) never clash.
EMAILS_DELIVERED = Counter(
    "email_worker_emails_delivered_total",
    "Emails the SMTP server took (250) for at least one recipient.",
    registry=None,
)
EMAILS_DEFERRED = Counter(
    "email_worker_emails_deferred_total",
    "Tries that handed some recipients to a retry topic (a 4xx, a connection lost after MAIL "
    'FROM, no reply to the final ".") and sent to none.',
    registry=None,
)
EMAILS_SKIPPED_DUPLICATE = Counter(
    "email_worker_emails_skipped_duplicate_total",
    "Records skipped because the dedupe store says their message id is finished already "
    "(delivered or dead-lettered): a record read again, or a client's retry.",
    registry=None,
)
EMAILS_DEAD_LETTERED = Counter(
    "email_worker_emails_dead_lettered_total",
    "Records copied to the dead-letter topic, by reason: poison_record (not a readable email), "
    "refused (some recipient bounced: a 5xx), expired (still deferred at WORKER_MAX_RETRY_AGE), "
    "unsendable (the worker could not send it to this relay, e.g. no SMTPUTF8).",
    ["reason"],
    registry=None,
)
DELIVERY_DURATION = Histogram(
    "email_worker_delivery_duration_seconds",
    "One SMTP transaction the server took: from MAIL FROM to its 250 after DATA.",
    buckets=SECONDS_BUCKETS,
    registry=None,
)
DELIVERY_LATENCY = Histogram(
    "email_worker_delivery_latency_seconds",
    "From the API's acceptance of an email (the record's created_at) to the SMTP server's 250.",
    buckets=LATENCY_BUCKETS,
    registry=None,
)

for reason in DEAD_LETTER_REASONS:
    EMAILS_DEAD_LETTERED.labels(reason=reason)  # every reason shows from the start, at 0


def count(outcome: RecordOutcome) -> None:
    """What became of a record, counted by the lane that processed it."""
    if outcome.finished == "duplicate":
        EMAILS_SKIPPED_DUPLICATE.inc()
    if outcome.finished == "deferred":
        EMAILS_DEFERRED.inc()
    if outcome.dead_letter_reason is not None:
        EMAILS_DEAD_LETTERED.labels(reason=outcome.dead_letter_reason).inc()
    if outcome.finished == "delivered" and outcome.accepted_at is not None:
        EMAILS_DELIVERED.inc()
        # Clocks of two hosts can disagree by a little: never a negative latency.
        latency = (datetime.now(UTC) - outcome.accepted_at).total_seconds()
        DELIVERY_LATENCY.observe(max(0.0, latency))


class AttemptCountsCollector:
    """`email_worker_delivery_retries_total` and `email_worker_emails_outcome_unknown_total`,
    read at each scrape from what the processor counts (processor.AttemptCounts): an email
    being retried shows its retries before it has an outcome."""

    def __init__(self, counts: AttemptCounts) -> None:
        self._counts = counts
        self._created = time.time()  # as a Counter's: when counting began

    def describe(self) -> Iterator[Metric]:
        yield from self.collect()

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "email_worker_delivery_retries_total",
            "Tries that failed for the relay's sake (unreachable, lost before MAIL FROM was "
            "answered, a reply asking to slow down), after which the email waits and is tried "
            "again in place.",
            value=self._counts.retries,
            created=self._created,
        )
        yield CounterMetricFamily(
            "email_worker_throttled_total",
            "Replies asking the worker to slow down (421, or a 450/451/452/454 about rates or "
            "load): each may halve the send rate of every lane (AIMD).",
            value=self._counts.throttled,
            created=self._created,
        )
        yield CounterMetricFamily(
            "email_worker_emails_outcome_unknown_total",
            'Transactions whose reply to the final "." of DATA never came (the connection was '
            "lost, or SMTP_DATA_END_TIMEOUT_SECONDS passed): the server may have stored the "
            "email. The worker sends it again to the recipients still owed, so they may receive "
            "it twice.",
            value=self._counts.outcome_unknown,
            created=self._created,
        )


class ConfigurationFaultsCollector:
    """`email_worker_configuration_faults_total{kind}`, read at each scrape from the refusals
    ConfigurationFaults counts, every kind from the start."""

    def __init__(self, configuration_faults: ConfigurationFaults) -> None:
        self._configuration_faults = configuration_faults
        self._created = time.time()

    def describe(self) -> Iterator[Metric]:
        yield from self.collect()

    def collect(self) -> Iterator[Metric]:
        refusals = CounterMetricFamily(
            "email_worker_configuration_faults_total",
            "Tries the SMTP server refused for the worker's own settings, not an email's, by "
            "kind: authentication (login refused: SMTP_USERNAME/SMTP_PASSWORD), "
            "authentication_required (mail refused without AUTH or TLS), tls (handshake or "
            "certificate: SMTP_TLS, SMTP_CA_FILE), starttls_not_offered, auth_not_offered, "
            "session_refused (a 5xx before any email). The emails wait, neither dead-lettered "
            "nor committed past, and /readyz answers 503.",
            labels=["kind"],
        )
        for kind, count in self._configuration_faults.refusals.items():
            refusals.add_metric([kind], count, created=self._created)
        yield refusals


class PartitionOffsetsCollector:
    """`email_worker_committed_offset` and `email_worker_partition_lag` per owned partition,
    read from the worker at each scrape: a partition given up leaves no stale series behind."""

    def __init__(self, partition_offsets: Callable[[], list[PartitionOffsets]]) -> None:
        self._partition_offsets = partition_offsets

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        committed, lag = self._families()
        for offsets in self._partition_offsets():
            labels = [offsets.partition.topic, str(offsets.partition.partition)]
            if offsets.committed_offset is not None:
                committed.add_metric(labels, offsets.committed_offset)
            if offsets.lag is not None:
                lag.add_metric(labels, offsets.lag)
        yield committed
        yield lag

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        committed = GaugeMetricFamily(
            "email_worker_committed_offset",
            "The consumer group's committed offset (CURRENT-OFFSET) of each partition this "
            "worker owns: the next record to process after a restart.",
            labels=["topic", "partition"],
        )
        lag = GaugeMetricFamily(
            "email_worker_partition_lag",
            "LAG of each partition this worker owns, as kafka-consumer-groups.sh computes it: "
            "log end offset (at the last fetch) minus committed offset.",
            labels=["topic", "partition"],
        )
        return committed, lag


def metrics_registry(
    partition_offsets: Callable[[], list[PartitionOffsets]],
    attempt_counts: AttemptCounts,
    configuration_faults: ConfigurationFaults,
) -> CollectorRegistry:
    """What one worker's `/metrics` shows: its metrics, its partitions' offsets, and the
    process's own (memory, CPU, GC)."""
    registry = CollectorRegistry()
    for collector in (
        EMAILS_DELIVERED,
        EMAILS_SKIPPED_DUPLICATE,
        EMAILS_DEFERRED,
        AttemptCountsCollector(attempt_counts),
        EMAILS_DEAD_LETTERED,
        ConfigurationFaultsCollector(configuration_faults),
        DELIVERY_DURATION,
        DELIVERY_LATENCY,
    ):
        registry.register(collector)
    registry.register(PartitionOffsetsCollector(partition_offsets))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class RelayEtiquetteCollector:
    """`email_worker_send_rate_limit` and `email_worker_smtp_connections_open`, read at each
    scrape from the shared send limiter and connection pool."""

    def __init__(self, limiter: SendLimiter, pool: SmtpPool) -> None:
        self._limiter = limiter
        self._pool = pool

    def describe(self) -> Iterator[Metric]:
        yield from self.collect()

    def collect(self) -> Iterator[Metric]:
        limit = self._limiter.rate_limit
        yield GaugeMetricFamily(
            "email_worker_send_rate_limit",
            "Emails a second this worker may start now: SMTP_MAX_RATE, or less after the relay "
            "asked to slow down; -1 while there is no limit.",
            value=-1 if limit is None else limit,
        )
        yield GaugeMetricFamily(
            "email_worker_smtp_connections_open",
            "SMTP connections this worker holds, in a transaction or idle (at most "
            "SMTP_MAX_CONNECTIONS).",
            value=self._pool.open_connections,
        )
