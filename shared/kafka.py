"""Kafka clients configured once for every service, and topic provisioning.

Producers wait for every in-sync replica (acks=all) and are idempotent, so a retried send
never writes a record twice; consumers commit by hand, only what was finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from shared.retry_topics import retry_topic_retention, retry_topics
from shared.settings import Settings

TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno
RETRY_SECONDS = 1.0
# Beyond a worker's longest stop, for its commit and its JoinGroup to reach the coordinator.
REJOIN_MARGIN_SECONDS = 10.0
TOPIC_METADATA_POLLS = 100
TOPIC_METADATA_POLL_SECONDS = 0.1

log = logging.getLogger("kafka")


@dataclass(frozen=True)
class TopicState:
    name: str
    partitions: int
    created: bool
    replication_factor: int  # copies of each partition, as the topic has them


def create_producer(
    settings: Settings, client_id: str, request_timeout_ms: int, linger_ms: int = 1
) -> AIOKafkaProducer:
    """A producer whose send is acknowledged only once the record is durably in the log, which
    waits up to `linger_ms` for more records to send with it."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=request_timeout_ms,
        linger_ms=linger_ms,
    )


def create_consumer(
    settings: Settings,
    client_id: str,
    group_id: str | None = None,
    fetch_max_wait_ms: int = 5,
) -> AIOKafkaConsumer:
    """A member of the consumer group (CONSUMER_GROUP unless another is named) that commits
    offsets itself, after the work is done.

    With nothing committed yet, the group starts at the beginning of the log, as
    `kafka-console-consumer.sh --from-beginning --group` does.
    """
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group_id or settings.consumer_group,
        group_instance_id=settings.worker_instance_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.worker_max_batch_records,
        # How long the group waits for its members to finish their revoked partitions and
        # rejoin. aiokafka's default, the 10 s session timeout, is shorter than the worker's
        # grace: a member still stopping past it is dropped from the group, its commit refused,
        # and an email it is still finishing goes to the next owner too. Heartbeats go on
        # meanwhile, so a dead member is still found within the session timeout.
        rebalance_timeout_ms=round(
            (settings.worker_longest_stop_seconds + REJOIN_MARGIN_SECONDS) * 1000
        ),
        # Let the broker gather records a few milliseconds rather than answer each fetch with
        # the one or two that just arrived: far fewer fetches under load, +5 ms at most.
        fetch_min_bytes=64 * 1024,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )


async def start_when_kafka_answers(
    client: AIOKafkaProducer | AIOKafkaConsumer, bootstrap_servers: str, stopping: asyncio.Event
) -> bool:
    """Start a client, retrying every second while Kafka does not answer (one warning, not one
    a second). False if `stopping` was set first."""
    warned = False
    while not stopping.is_set():
        try:
            await client.start()
            return True
        except KafkaError as error:
            if not warned:
                log.warning(
                    "Kafka at %s does not answer (%s); retrying every second",
                    bootstrap_servers, error,
                )  # fmt: skip
                warned = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=RETRY_SECONDS)
    return False


def create_admin_client(
    bootstrap_servers: str, client_id: str, request_timeout_ms: int = 10_000
) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=request_timeout_ms,
        client_id=client_id,
    )


@asynccontextmanager
async def admin_client(
    bootstrap_servers: str, request_timeout_ms: int = 10_000
) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = create_admin_client(bootstrap_servers, "email-pipeline-admin", request_timeout_ms)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


def topic_names(settings: Settings) -> list[str]:
    """Every topic of the pipeline: `email.send`, its dead letters, the events and the retry
    topics of the schedule."""
    return [
        settings.email_topic,
        settings.dlq_topic,
        settings.events_topic,
        *retry_topics(settings.email_topic, settings.worker_retry_schedule),
    ]


def new_topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """The settings each topic is created with, by name."""
    # Unset, a topic follows the broker's min.insync.replicas, whatever it becomes.
    common = (
        {}
        if settings.topic_min_insync_replicas is None
        else {"min.insync.replicas": str(settings.topic_min_insync_replicas)}
    )
    retention_ms = retry_topic_retention(settings.worker_max_retry_age) // timedelta(milliseconds=1)
    configs = {name: dict(common) for name in topic_names(settings)}
    # Compaction would keep an email's last event only, and lose the history before it.
    configs[settings.events_topic]["cleanup.policy"] = "delete"
    # Whatever the broker's default, a retry topic keeps a record longer than it can wait.
    for name in retry_topics(settings.email_topic, settings.worker_retry_schedule):
        configs[name]["retention.ms"] = str(retention_ms)
    return configs


async def ensure_topics(settings: Settings) -> list[TopicState]:
    """Create the pipeline's topics (`topic_names`) unless they exist; safe to run again.

    Each gets TOPIC_PARTITIONS partitions, TOPIC_REPLICATION_FACTOR copies of every
    partition and, when it is set, TOPIC_MIN_INSYNC_REPLICAS as its min.insync.replicas: with
    3 and 2, an acks=all write succeeds while any one broker is down. An existing topic is left
    as it is, whatever its partition count: Kafka can add partitions but never remove them,
    and adding them would move keys to other partitions.
    """
    wanted = topic_names(settings)
    topic_configs = new_topic_configs(settings)
    async with admin_client(settings.kafka_bootstrap_servers) as admin:
        existing = {
            topic["topic"]
            for topic in await admin.describe_topics(wanted)
            if topic["error_code"] == 0
        }
        missing = [name for name in wanted if name not in existing]
        created = set()
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        name,
                        settings.topic_partitions,
                        settings.topic_replication_factor,
                        topic_configs=topic_configs[name],
                    )
                    for name in missing
                ]
            )
            for name, error_code, *error_message in response.topic_errors:
                if error_code == 0:
                    created.add(name)
                elif error_code != TOPIC_ALREADY_EXISTS:
                    raise for_code(error_code)(f"cannot create topic {name}: {error_message}")
        described = await admin.describe_topics(wanted)
        # The broker that answers may learn of a topic just created a moment after the
        # controller made it (several brokers): until then it describes no partitions.
        for _ in range(TOPIC_METADATA_POLLS):
            if all(topic["error_code"] == 0 and topic["partitions"] for topic in described):
                break
            await asyncio.sleep(TOPIC_METADATA_POLL_SECONDS)
            described = await admin.describe_topics(wanted)
    return [
        TopicState(
            topic["topic"],
            len(topic["partitions"]),
            topic["topic"] in created,
            replication_factor=max((len(p["replicas"]) for p in topic["partitions"]), default=0),
        )
        # In the order of topic_names, whatever order the broker describes them in.
        for topic in sorted(described, key=lambda topic: wanted.index(topic["topic"]))
    ]


async def topic_configs(bootstrap_servers: str, topic: str) -> dict[str, str]:
    """A topic's settings as the broker applies them (its own and the broker's defaults):
    `{"retention.ms": "604800000", "max.message.bytes": "1048588", ...}`."""
    async with admin_client(bootstrap_servers) as admin:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    [(error_code, error_message, _, _, entries)] = response.resources
    if error_code != 0:
        raise for_code(error_code)(f"cannot read the settings of topic {topic}: {error_message}")
    return {name: value for name, value, *_ in entries if value is not None}
