"""An EmailProcessor on fakes of every edge but the ones a test brings (a real store, a real
SMTP server): for the tests of the processor and of what drives it."""

from __future__ import annotations

from datetime import timedelta

from services.worker.configuration_faults import ConfigurationFaults
from services.worker.dedupe.contract import DedupeStore
from services.worker.outbox import Outbox
from services.worker.processor import AttemptCounts, EmailProcessor
from services.worker.recipient_outcomes import RetryPlan
from services.worker.retry import RetryPolicy
from services.worker.send_limiter import SendLimiter
from services.worker.store_outage import StoreOutage
from shared.retry_topics import parse_schedule
from tests.unit.worker.fakes import (
    FakeDeadLetters,
    FakeProducer,
    InMemoryDedupeStore,
    InMemorySuppressions,
)

RETRY_PLAN = RetryPlan(parse_schedule("1m,5m"), timedelta(hours=24), "email.send")


def processor_with_fakes(
    store: DedupeStore | None = None,
    *,
    dead_letters: FakeDeadLetters | None = None,
    producer: FakeProducer | None = None,
    suppressions: InMemorySuppressions | None = None,
    retry: RetryPolicy | None = None,
    faults: ConfigurationFaults | None = None,
    counts: AttemptCounts | None = None,
    domain: str = "pipeline.test",
) -> EmailProcessor:
    retry = retry or RetryPolicy(initial_seconds=0.01, max_seconds=0.05)
    return EmailProcessor(
        store=store or InMemoryDedupeStore(),
        suppressions=suppressions or InMemorySuppressions(),
        outbox=Outbox(producer or FakeProducer(), retry.delay),
        dead_letters=dead_letters or FakeDeadLetters(),
        retry=retry,
        retry_plan=RETRY_PLAN,
        events_topic="email.events",
        message_id_domain=domain,
        configuration_faults=faults
        or ConfigurationFaults(retry.initial_seconds, retry.max_seconds),
        counts=counts or AttemptCounts(),
        store_outage=StoreOutage(),
        pace=SendLimiter(None),
    )
