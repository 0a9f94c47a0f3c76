"""`python -m services.worker`: the worker's composition root.

It builds the dedupe store and the suppression list, the producer of events, retry records and
dead letters, the consumers of email.send and of the retry topics and the per-partition SMTP
connections, then runs both consume loops until SIGTERM or SIGINT, and exits 0 after a clean
stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import sys

from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from services.worker.assignment import Assignment, Assignments
from services.worker.configuration_faults import ConfigurationFaults
from services.worker.consumer import CLEANUP_SECONDS, consume, finish_within
from services.worker.dead_letters import DeadLetters
from services.worker.dedupe import CannotOpenDedupeStore, open_dedupe_store
from services.worker.health import create_health_app
from services.worker.membership import GroupMembership
from services.worker.metrics import RelayEtiquetteCollector
from services.worker.outbox import Outbox
from services.worker.partition import PartitionWorker
from services.worker.processor import AttemptCounts, EmailProcessor
from services.worker.recipient_outcomes import RetryPlan
from services.worker.retention import prune_until_stopped, retention_seconds
from services.worker.retry import RetryPolicy
from services.worker.send_limiter import SendLimiter
from services.worker.smtp import SmtpServer, SmtpSettingsError, smtp_server
from services.worker.smtp_pool import SmtpPool
from services.worker.store_outage import StoreOutage
from shared.event_loop import run
from shared.http_server import embedded_server
from shared.kafka import (
    create_consumer,
    create_producer,
    start_when_kafka_answers,
    topic_configs,
)
from shared.logs import configure_logging
from shared.loop_lag import LoopLag
from shared.settings import Settings, load_settings
from shared.signals import stop_on_signals
from shared.store import CannotOpenStore
from shared.suppressions import open_suppression_list

log = logging.getLogger("worker")

RETRY_FETCH_MAX_WAIT_MS = 100


async def serve(settings: Settings, smtp: SmtpServer) -> None:
    client_id = f"email-worker-{socket.gethostname()}-{os.getpid()}"
    store_location = settings.dedupe_url or settings.dedupe_db_path
    try:
        store = await open_dedupe_store(store_location)
        suppressions = await open_suppression_list(store_location, "email-worker")
    except (CannotOpenDedupeStore, CannotOpenStore) as error:
        sys.exit(f"cannot open the dedupe store: {error}")
    # One producer for dead letters, events and retry records: one connection, one batch.
    producer = create_producer(
        settings,
        client_id=client_id,
        request_timeout_ms=30_000,
        linger_ms=settings.worker_producer_linger_ms,
    )
    consumer = create_consumer(settings, client_id=client_id)
    # Retries wait minutes: a fetch may wait 100 ms for records, not 5, so the mostly empty
    # retry topics cost ten fetches a second, not two hundred.
    retry_consumer = create_consumer(
        settings,
        client_id=f"{client_id}-retry",
        group_id=settings.retry_consumer_group,
        fetch_max_wait_ms=RETRY_FETCH_MAX_WAIT_MS,
    )
    configuration_faults = ConfigurationFaults(
        settings.worker_retry_initial_seconds, settings.worker_retry_max_seconds
    )
    store_outage = StoreOutage()
    attempt_counts = AttemptCounts()
    retry = RetryPolicy(
        initial_seconds=settings.worker_retry_initial_seconds,
        max_seconds=settings.worker_retry_max_seconds,
    )
    send_limiter = SendLimiter(settings.smtp_max_rate)
    smtp_pool = SmtpPool(smtp, send_limiter, settings.smtp_max_connections)
    processor = EmailProcessor(
        store=store,
        suppressions=suppressions,
        outbox=Outbox(producer, backoff=retry.delay),
        dead_letters=DeadLetters(producer, settings.dlq_topic),
        retry=retry,
        retry_plan=RetryPlan(
            settings.worker_retry_schedule, settings.worker_max_retry_age, settings.email_topic
        ),
        events_topic=settings.events_topic,
        message_id_domain=settings.message_id_domain,
        configuration_faults=configuration_faults,
        counts=attempt_counts,
        store_outage=store_outage,
        pace=send_limiter,
    )

    def start_partition(partition: TopicPartition) -> PartitionWorker:
        retrying = partition.topic != settings.email_topic
        lanes_per_partition = (
            settings.worker_retry_lanes_per_partition
            if retrying
            else settings.worker_lanes_per_partition
        )
        lanes = [smtp_pool.lane() for _ in range(lanes_per_partition)]
        return PartitionWorker(
            partition,
            processor,
            lanes,
            max_ahead=settings.worker_max_batch_records,
            stop_grace_seconds=settings.worker_shutdown_timeout_seconds,
        )

    assignment = Assignment(
        consumer, start_partition, max_backlog=settings.worker_max_batch_records
    )
    retry_assignment = Assignment(
        retry_consumer,
        start_partition,
        max_backlog=settings.worker_max_batch_records,
        waits_until_due=True,
    )
    membership = GroupMembership()
    health_app = create_health_app(
        membership,
        Assignments(assignment, retry_assignment),
        settings.consumer_group,
        configuration_faults,
        attempt_counts,
        store_outage,
    )
    health_app.state.metrics_registry.register(RelayEtiquetteCollector(send_limiter, smtp_pool))
    loop_lag = LoopLag("email_worker", health_app.state.metrics_registry)
    health = embedded_server(health_app, settings.worker_host, settings.worker_port)
    health_task = asyncio.create_task(health.serve())

    stopping = stop_on_signals()

    pruning: asyncio.Task[None] | None = None
    async with loop_lag.sampling():
        try:
            bootstrap = settings.kafka_bootstrap_servers
            # Events and dead letters must be publishable before the first record is taken.
            if await start_when_kafka_answers(producer, bootstrap, stopping):
                log.info(
                    "consuming %s as %s (client id %s), delivering to %s",
                    settings.email_topic, settings.consumer_group, client_id, smtp.describe(),
                )  # fmt: skip
                keep_seconds = await dedupe_retention_seconds(settings)
                if keep_seconds is not None:
                    pruning = asyncio.create_task(
                        prune_until_stopped(store, keep_seconds, stopping)
                    )
            # Also when asked to stop before Kafka answered: consume() then returns at once,
            # and stops the consumer either way.
            consuming = asyncio.create_task(
                consume(consumer, bootstrap, settings.email_topic, assignment, membership, stopping)
            )
            retrying = asyncio.create_task(
                consume(
                    retry_consumer, bootstrap, f"{settings.email_topic}.retry-*",
                    retry_assignment, GroupMembership(), stopping,
                    pattern=f"^{re.escape(settings.email_topic)}\\.retry-",
                )
            )  # fmt: skip
            stop_requested = asyncio.create_task(stopping.wait())
            await asyncio.wait(
                {consuming, retrying, stop_requested}, return_when=asyncio.FIRST_COMPLETED
            )
            stop_requested.cancel()
            stopping.set()  # one consumer ended (a lane failed): the other stops too
            # consume() returns once the emails in flight are finished, their offsets committed
            # and the group left: within the shutdown timeout, or, for an email whose final "."
            # was sent, when its reply comes (at most SMTP_DATA_END_TIMEOUT_SECONDS later).
            # Both consumers finish their emails in flight before the shared producer, pool and
            # store close below, even when one of them ended with an error.
            await finish_within(
                asyncio.gather(consuming, retrying, return_exceptions=True),
                settings.worker_longest_stop_seconds + 2 * CLEANUP_SECONDS,
                "finishing the email in flight",
            )
            for ended in (consuming, retrying):
                if ended.done() and not ended.cancelled() and ended.exception() is not None:
                    raise ended.exception()  # type: ignore[misc]
        finally:
            await finish_within(producer.stop(), CLEANUP_SECONDS, "closing the producer")
            stopping.set()
            if pruning is not None:
                await pruning
            await smtp_pool.close()
            await store.close()
            await suppressions.close()
            health.should_exit = True
            await health_task
            log.info(
                "stopped (the event loop lagged %.0f ms at most)", 1000 * loop_lag.max_lag_seconds
            )


async def dedupe_retention_seconds(settings: Settings) -> float | None:
    """DEDUPE_RETENTION_HOURS, or what the topic's retention.ms implies; None: keep for ever."""
    topic_retention_ms = None
    if settings.dedupe_retention_hours is None:
        try:
            configs = await topic_configs(settings.kafka_bootstrap_servers, settings.email_topic)
            topic_retention_ms = int(configs.get("retention.ms", "-1"))
        except (KafkaError, ValueError) as error:
            log.warning(
                "cannot read the retention.ms of %s (%r): the dedupe store is not pruned; set "
                "DEDUPE_RETENTION_HOURS to prune it anyway",
                settings.email_topic, error,
            )  # fmt: skip
            return None
    keep_seconds = retention_seconds(settings.dedupe_retention_hours, topic_retention_ms)
    if keep_seconds is None:
        log.info("%s keeps records for ever: so does the dedupe store", settings.email_topic)
    else:
        log.info("the dedupe store keeps each email's state %.0f h", keep_seconds / 3600)
    return keep_seconds


def main() -> None:
    settings = load_settings()
    try:
        smtp = smtp_server(settings)
    except SmtpSettingsError as error:
        sys.exit(f"invalid SMTP settings: {error}")
    configure_logging(settings.log_level)
    run(serve(settings, smtp))


if __name__ == "__main__":
    main()
