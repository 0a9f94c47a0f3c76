"""The worker's /metrics: what became of each record moves the right counter (the lane counts
the outcome), and what the processor and the configuration faults count as they happen (retries,
unknown outcomes, refusals) and the per-partition offsets are read from the worker at each
scrape."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition
from aiosmtplib import SMTPNotSupported, SMTPResponse
from prometheus_client.parser import text_string_to_metric_families

from services.worker.configuration_faults import ConfigurationFaults
from services.worker.dedupe.contract import RecipientRow
from services.worker.health import create_health_app
from services.worker.offsets import PartitionOffsets
from services.worker.partition import PartitionWorker
from services.worker.processor import AttemptCounts, EmailProcessor
from services.worker.retry import RetryPolicy, Stopped
from services.worker.smtp_failures import OutcomeUnknown, RelayUnavailable
from services.worker.store_outage import StoreOutage
from tests.unit.worker.fakes import (
    HELD,
    NO_WAIT,
    NOW,
    FakeMailer,
    FakeOwnedPartitions,
    InMemoryDedupeStore,
    consumer_record,
    email_processor,
    email_record,
    kafka_record,
    member_of_the_group,
)
from tests.unit.worker.test_processor import refused

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
COUNTERS = [
    "email_worker_emails_delivered_total",
    "email_worker_emails_skipped_duplicate_total",
    "email_worker_emails_deferred_total",
    "email_worker_emails_outcome_unknown_total",
    "email_worker_delivery_retries_total",
    "email_worker_delivery_latency_seconds_count",
]
CONFIGURATION_FAULT_KINDS = [
    "authentication",
    "authentication_required",
    "tls",
    "starttls_not_offered",
    "auth_not_offered",
    "session_refused",
]
DEAD_LETTER_REASONS = ["poison_record", "refused", "expired", "unsendable"]


async def scrape(
    owned: FakeOwnedPartitions | None = None,
    counts: AttemptCounts | None = None,
    faults: ConfigurationFaults | None = None,
) -> Samples:
    """One worker's /metrics: of its partitions, its processor's counts and its faults."""
    app = create_health_app(
        member_of_the_group(),
        owned or FakeOwnedPartitions(),
        "email-send-group",
        faults or ConfigurationFaults(0.001, 0.001),
        counts or AttemptCounts(),
        StoreOutage(),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as c:
        response = await c.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def test_metrics_answer_at_their_path_in_the_format_and_encoding_asked_for() -> None:
    app = create_health_app(
        member_of_the_group(),
        FakeOwnedPartitions(),
        "email-send-group",
        ConfigurationFaults(1, 1),
        AttemptCounts(),
        StoreOutage(),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as c:
        openmetrics = await c.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        gzipped = await c.get("/metrics", headers={"Accept-Encoding": "gzip"})
        posted = await c.post("/metrics")

    assert openmetrics.status_code == 200, "no redirect to /metrics/"
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")
    assert gzipped.headers["content-encoding"] == "gzip"
    assert "email_worker_emails_delivered_total" in gzipped.text
    assert posted.status_code == 405


def changes(before: Samples, after: Samples) -> dict[str, float]:
    """How much each email counter moved, by name (dead letters by reason), zeros left out."""
    moved = {name: after[(name, ())] - before[(name, ())] for name in COUNTERS}
    for reason in DEAD_LETTER_REASONS:
        key = ("email_worker_emails_dead_lettered_total", (("reason", reason),))
        moved[f"dead_lettered {reason}"] = after[key] - before[key]
    return {name: change for name, change in moved.items() if change}


def processor(
    counts: AttemptCounts, retry: RetryPolicy = NO_WAIT, now: datetime = NOW
) -> EmailProcessor:
    return email_processor(retry=retry, counts=counts, clock=lambda: now)


async def process_in_a_lane(
    email_processor: EmailProcessor, record: ConsumerRecord[bytes, bytes], mailer: FakeMailer
) -> None:
    """Process one record in a partition's lane, which counts what became of it."""
    partition = PartitionWorker(
        TopicPartition(record.topic, record.partition),
        email_processor,
        [mailer],
        max_ahead=10,
        stop_grace_seconds=1,
    )
    partition.enqueue([record])
    async with asyncio.timeout(2):
        while partition.next_offset_to_commit != record.offset + 1:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    await partition.stop()


async def test_every_counter_and_reason_shows_from_the_start_with_the_process() -> None:
    samples = await scrape()

    for name in COUNTERS:
        assert (name, ()) in samples
    for reason in DEAD_LETTER_REASONS:
        assert ("email_worker_emails_dead_lettered_total", (("reason", reason),)) in samples
    for kind in CONFIGURATION_FAULT_KINDS:
        assert ("email_worker_configuration_faults_total", (("kind", kind),)) in samples
    assert ("process_resident_memory_bytes", ()) in samples


# What a dashboard or an alert relies on: each family's name and type, and its samples' names
# and labels, in the Prometheus text format (histogram buckets left out).
EXPOSED = """\
# TYPE email_worker_emails_delivered_total counter
email_worker_emails_delivered_total
# TYPE email_worker_emails_delivered_created gauge
email_worker_emails_delivered_created
# TYPE email_worker_emails_skipped_duplicate_total counter
email_worker_emails_skipped_duplicate_total
# TYPE email_worker_emails_skipped_duplicate_created gauge
email_worker_emails_skipped_duplicate_created
# TYPE email_worker_emails_deferred_total counter
email_worker_emails_deferred_total
# TYPE email_worker_emails_deferred_created gauge
email_worker_emails_deferred_created
# TYPE email_worker_delivery_retries_total counter
email_worker_delivery_retries_total
# TYPE email_worker_delivery_retries_created gauge
email_worker_delivery_retries_created
# TYPE email_worker_throttled_total counter
email_worker_throttled_total
# TYPE email_worker_throttled_created gauge
email_worker_throttled_created
# TYPE email_worker_emails_outcome_unknown_total counter
email_worker_emails_outcome_unknown_total
# TYPE email_worker_emails_outcome_unknown_created gauge
email_worker_emails_outcome_unknown_created
# TYPE email_worker_emails_dead_lettered_total counter
email_worker_emails_dead_lettered_total{reason="poison_record"}
email_worker_emails_dead_lettered_total{reason="refused"}
email_worker_emails_dead_lettered_total{reason="expired"}
email_worker_emails_dead_lettered_total{reason="unsendable"}
# TYPE email_worker_emails_dead_lettered_created gauge
email_worker_emails_dead_lettered_created{reason="poison_record"}
email_worker_emails_dead_lettered_created{reason="refused"}
email_worker_emails_dead_lettered_created{reason="expired"}
email_worker_emails_dead_lettered_created{reason="unsendable"}
# TYPE email_worker_configuration_faults_total counter
email_worker_configuration_faults_total{kind="authentication"}
email_worker_configuration_faults_total{kind="authentication_required"}
email_worker_configuration_faults_total{kind="tls"}
email_worker_configuration_faults_total{kind="starttls_not_offered"}
email_worker_configuration_faults_total{kind="auth_not_offered"}
email_worker_configuration_faults_total{kind="session_refused"}
# TYPE email_worker_configuration_faults_created gauge
email_worker_configuration_faults_created{kind="authentication"}
email_worker_configuration_faults_created{kind="authentication_required"}
email_worker_configuration_faults_created{kind="tls"}
email_worker_configuration_faults_created{kind="starttls_not_offered"}
email_worker_configuration_faults_created{kind="auth_not_offered"}
email_worker_configuration_faults_created{kind="session_refused"}
# TYPE email_worker_delivery_duration_seconds histogram
email_worker_delivery_duration_seconds_count
email_worker_delivery_duration_seconds_sum
# TYPE email_worker_delivery_duration_seconds_created gauge
email_worker_delivery_duration_seconds_created
# TYPE email_worker_delivery_latency_seconds histogram
email_worker_delivery_latency_seconds_count
email_worker_delivery_latency_seconds_sum
# TYPE email_worker_delivery_latency_seconds_created gauge
email_worker_delivery_latency_seconds_created
# TYPE email_worker_committed_offset gauge
# TYPE email_worker_partition_lag gauge
"""


async def test_each_metric_keeps_its_name_type_and_labels() -> None:
    app = create_health_app(
        member_of_the_group(),
        FakeOwnedPartitions(),
        "email-send-group",
        ConfigurationFaults(1, 1),
        AttemptCounts(),
        StoreOutage(),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as c:
        text = (await c.get("/metrics")).text

    exposed = [
        line if line.startswith("#") else line.rpartition(" ")[0]  # the value left out
        for line in text.splitlines()
        if "email_worker_" in line and "_bucket{" not in line and not line.startswith("# HELP")
    ]
    assert exposed == EXPOSED.splitlines()


async def test_a_delivery_counts_once_with_its_latency_from_acceptance() -> None:
    accepted_at = datetime.now(UTC) - timedelta(seconds=2)
    value = email_record("m-latency", created_at=accepted_at).to_kafka()[1]
    before = await scrape()

    await process_in_a_lane(processor(AttemptCounts()), consumer_record(0, value), FakeMailer())
    after = await scrape()

    assert changes(before, after) == {
        "email_worker_emails_delivered_total": 1,
        "email_worker_delivery_latency_seconds_count": 1,
    }
    latency = "email_worker_delivery_latency_seconds_sum"
    assert 2 <= after[(latency, ())] - before[(latency, ())] < 3


async def test_a_duplicate_counts_as_skipped_not_delivered() -> None:
    store = InMemoryDedupeStore()
    store.rows["m-dup"] = {"ana@example.com": RecipientRow("ana@example.com", "sent", 0, None)}
    before = await scrape()

    await process_in_a_lane(email_processor(store), kafka_record(1, "m-dup"), FakeMailer())

    assert changes(before, await scrape()) == {"email_worker_emails_skipped_duplicate_total": 1}


DELIVERED = {
    "email_worker_emails_delivered_total": 1,
    "email_worker_delivery_latency_seconds_count": 1,
}


@pytest.mark.parametrize(
    ("script", "moved"),
    [
        pytest.param(
            [HELD, HELD, {}],
            {"email_worker_delivery_retries_total": 2, **DELIVERED},
            id="waited_for_the_relay_then_delivered",
        ),
        pytest.param(
            [refused(451, "4.7.1 greylisted", "ana@example.com", "bob@example.com")],
            {"email_worker_emails_deferred_total": 1},
            id="deferred",
        ),
        pytest.param(
            [OutcomeUnknown("the connection was lost after the end of DATA")],
            {
                "email_worker_emails_deferred_total": 1,
                "email_worker_emails_outcome_unknown_total": 1,
            },
            id="outcome_unknown",
        ),
        pytest.param(
            [refused(550, "5.1.1 no such user", "ana@example.com", "bob@example.com")],
            {"dead_lettered refused": 1},
            id="refused",
        ),
        pytest.param(
            [{"bob@example.com": SMTPResponse(550, "5.1.1 no such user")}],
            {**DELIVERED, "dead_lettered refused": 1},
            id="refused_for_some",
        ),
        pytest.param(
            [SMTPNotSupported("relay.test:25 does not offer SMTPUTF8")],
            {"dead_lettered unsendable": 1},
            id="unsendable",
        ),
        pytest.param(
            [{"bob@example.com": SMTPResponse(451, "4.7.1 greylisted")}],
            DELIVERED,
            id="a_greylisted_recipient_deferred_alone",
        ),
    ],
)
async def test_each_outcome_moves_its_counters(
    script: list[BaseException | dict[str, SMTPResponse]], moved: dict[str, float]
) -> None:
    value = email_record("m-1", to=["ana@example.com", "bob@example.com"]).to_kafka()[1]
    counts = AttemptCounts()
    before = await scrape(counts=counts)

    await process_in_a_lane(processor(counts), consumer_record(0, value), FakeMailer(script))

    assert changes(before, await scrape(counts=counts)) == moved


async def test_a_recipient_deferred_past_the_age_limit_counts_as_dead_lettered_expired() -> None:
    accepted_at = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
    almost_a_day_later = accepted_at + timedelta(hours=23, minutes=59, seconds=30)
    value = email_record("m-1", created_at=accepted_at).to_kafka()[1]
    before = await scrape()

    await process_in_a_lane(
        processor(AttemptCounts(), now=almost_a_day_later),
        consumer_record(0, value),
        FakeMailer([refused(451, "4.7.1 greylisted")]),
    )

    assert changes(before, await scrape()) == {"dead_lettered expired": 1}


async def test_retries_show_while_the_email_still_waits_for_the_relay() -> None:
    counts, stopping = AttemptCounts(), asyncio.Event()
    slow_retry = RetryPolicy(initial_seconds=60, max_seconds=60)
    away = RelayUnavailable("relay.test:25: ConnectionRefusedError")
    retried = asyncio.create_task(
        processor(counts, slow_retry).process(
            kafka_record(0, "m-held"), FakeMailer([away, away]), stopping
        )
    )
    async with asyncio.timeout(2):
        while not counts.retries:  # noqa: ASYNC110 - polling the processor's count is the point
            await asyncio.sleep(0.005)

    samples = await scrape(counts=counts)

    assert not retried.done(), "it waits 30 s or more before its next attempt"
    assert samples[("email_worker_delivery_retries_total", ())] == 1
    stopping.set()
    with pytest.raises(Stopped):
        await retried


async def test_refusals_of_the_settings_show_by_kind() -> None:
    faults = ConfigurationFaults(0.001, 0.001)
    for kind in ("tls", "tls", "authentication"):
        faults.refused(kind, "scripted")

    samples = await scrape(faults=faults)

    assert {
        kind: samples[("email_worker_configuration_faults_total", (("kind", kind),))]
        for kind in CONFIGURATION_FAULT_KINDS
    } == {kind: {"tls": 2, "authentication": 1}.get(kind, 0) for kind in CONFIGURATION_FAULT_KINDS}


async def test_a_poison_record_counts_as_dead_lettered_poison_record() -> None:
    before = await scrape()

    await process_in_a_lane(processor(AttemptCounts()), consumer_record(0, b"hello1"), FakeMailer())

    assert changes(before, await scrape()) == {"dead_lettered poison_record": 1}


async def test_partition_offsets_are_read_at_each_scrape_and_a_revoked_one_disappears() -> None:
    p0, p2 = TopicPartition("email.send", 0), TopicPartition("email.send", 2)
    owned = FakeOwnedPartitions()
    owned.offsets = [
        PartitionOffsets(p0, committed_offset=40, log_end_offset=42),
        PartitionOffsets(p2, committed_offset=7, log_end_offset=None),  # not fetched yet
    ]
    owning_both = await scrape(owned)
    owned.offsets = owned.offsets[1:]
    after_revocation = await scrape(owned)

    def offsets_of(samples: Samples, name: str) -> dict[str, float]:
        return {
            dict(labels)["partition"]: value
            for (sample, labels), value in samples.items()
            if sample == name and dict(labels)["topic"] == "email.send"
        }

    assert offsets_of(owning_both, "email_worker_committed_offset") == {"0": 40, "2": 7}
    assert offsets_of(owning_both, "email_worker_partition_lag") == {"0": 2}
    assert offsets_of(after_revocation, "email_worker_committed_offset") == {"2": 7}
    assert offsets_of(after_revocation, "email_worker_partition_lag") == {}


async def test_two_workers_in_one_process_each_show_their_own_partitions() -> None:
    first, second = FakeOwnedPartitions(), FakeOwnedPartitions()
    first.offsets = [PartitionOffsets(TopicPartition("t", 0), 1, 1)]
    second.offsets = [PartitionOffsets(TopicPartition("t", 1), 5, 9)]

    first_samples, second_samples = await scrape(first), await scrape(second)

    assert first_samples[("email_worker_committed_offset", (("partition", "0"), ("topic", "t")))]
    assert ("email_worker_committed_offset", (("partition", "1"), ("topic", "t"))) not in (
        first_samples
    )
    assert second_samples[("email_worker_partition_lag", (("partition", "1"), ("topic", "t")))] == 4
