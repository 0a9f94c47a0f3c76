"""shared.kafka without a broker: the clients are made as its docstrings promise (acks=all and
idempotent producers; consumers of the group that commit by hand, from the beginning, with the
worker's static member id), a client is started again every second until Kafka answers, and the
topics are provisioned from the settings through a fake admin client.

Starting the clients against a real broker is tests/integration's (static membership:
tests/integration/shared/test_static_membership.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    InvalidReplicationFactorError,
    KafkaConnectionError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from shared import kafka
from shared.retry_topics import parse_schedule
from shared.settings import Settings

SETTINGS = Settings(
    _env_file=None,
    kafka_bootstrap_servers="kafka-1:9092,kafka-2:9092",
    consumer_group="email-send-group",
    worker_max_batch_records=123,
    worker_retry_schedule="1m,5m",
    worker_max_retry_age="24h",
)
TOPICS = [
    "email.send",
    "email.send.dlq",
    "email.events",
    "email.send.retry-1m",
    "email.send.retry-5m",
]
RETRY_TOPICS = TOPICS[3:]
WEEK_MS = str(7 * 24 * 3600 * 1000)


class MadeWith:
    """Stands in for an aiokafka client class: keeps the options each client was made with,
    once the real class's signature has taken them (a misspelled option fails here)."""

    def __init__(self, real: type) -> None:
        self._signature = inspect.signature(real)
        self.options: list[dict[str, Any]] = []

    def __call__(self, **options: Any) -> SimpleNamespace:
        self._signature.bind(**options)
        self.options.append(options)
        return SimpleNamespace(**options)


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> dict[str, MadeWith]:
    clients = {
        "producer": MadeWith(AIOKafkaProducer),
        "consumer": MadeWith(AIOKafkaConsumer),
        "admin": MadeWith(AIOKafkaAdminClient),
    }
    monkeypatch.setattr(kafka, "AIOKafkaProducer", clients["producer"])
    monkeypatch.setattr(kafka, "AIOKafkaConsumer", clients["consumer"])
    monkeypatch.setattr(kafka, "AIOKafkaAdminClient", clients["admin"])
    return clients


def test_a_producer_waits_for_every_in_sync_replica_and_is_idempotent(
    made: dict[str, MadeWith],
) -> None:
    kafka.create_producer(SETTINGS, client_id="email-api", request_timeout_ms=5000)

    [options] = made["producer"].options
    assert options["acks"] == "all"
    assert options["enable_idempotence"] is True
    assert options["bootstrap_servers"] == "kafka-1:9092,kafka-2:9092"
    assert options["client_id"] == "email-api"
    assert options["request_timeout_ms"] == 5000


def test_a_consumer_joins_the_group_commits_by_hand_and_starts_at_the_beginning(
    made: dict[str, MadeWith],
) -> None:
    kafka.create_consumer(SETTINGS, client_id="email-worker")

    [options] = made["consumer"].options
    assert options["group_id"] == "email-send-group"
    assert options["enable_auto_commit"] is False
    assert options["auto_offset_reset"] == "earliest"
    assert options["bootstrap_servers"] == "kafka-1:9092,kafka-2:9092"
    assert options["client_id"] == "email-worker"
    assert options["max_poll_records"] == 123


@pytest.mark.parametrize("instance_id", ["worker-1", None], ids=["static", "dynamic"])
def test_a_consumer_is_a_static_member_exactly_when_the_worker_has_an_instance_id(
    made: dict[str, MadeWith], instance_id: str | None
) -> None:
    settings = SETTINGS.model_copy(update={"worker_instance_id": instance_id})

    kafka.create_consumer(settings, client_id="email-worker")

    [options] = made["consumer"].options
    assert options["group_instance_id"] == instance_id


def test_the_group_waits_for_a_members_longest_stop_before_rebalancing_without_it(
    made: dict[str, MadeWith],
) -> None:
    settings = SETTINGS.model_copy(
        update={"worker_shutdown_timeout_seconds": 20.0, "smtp_data_end_timeout_seconds": 300.0}
    )

    kafka.create_consumer(settings, client_id="email-worker")

    [options] = made["consumer"].options
    assert options["rebalance_timeout_ms"] == (20 + 300 + kafka.REJOIN_MARGIN_SECONDS) * 1000
    assert options["rebalance_timeout_ms"] > options.get("session_timeout_ms", 10_000)


def test_an_admin_client_is_made_for_the_servers_and_timeout_given(
    made: dict[str, MadeWith],
) -> None:
    kafka.create_admin_client("kafka-3:9092", "email-console", request_timeout_ms=2500)

    [options] = made["admin"].options
    assert options == {
        "bootstrap_servers": "kafka-3:9092",
        "client_id": "email-console",
        "request_timeout_ms": 2500,
    }


class StartsAfter:
    """A client whose start fails as a Kafka that does not answer does, `failures` times."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0

    async def start(self) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise KafkaConnectionError("Unable to bootstrap from [('kafka-1', 9092)]")


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka, "RETRY_SECONDS", 0.01)


async def start(client: StartsAfter, stopping: asyncio.Event) -> bool:
    return await kafka.start_when_kafka_answers(client, "kafka-1:9092", stopping)


@pytest.mark.usefixtures("quick_retries")
async def test_a_client_is_started_again_until_kafka_answers_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = StartsAfter(failures=3)

    with caplog.at_level(logging.WARNING, logger="kafka"):
        started = await start(client, asyncio.Event())

    assert started is True
    assert client.attempts == 4
    [warning] = [record.getMessage() for record in caplog.records]
    assert warning.startswith("Kafka at kafka-1:9092 does not answer (")
    assert warning.endswith("); retrying every second")


@pytest.mark.usefixtures("quick_retries")
async def test_a_stop_while_kafka_does_not_answer_ends_the_retries() -> None:
    client = StartsAfter(failures=1_000_000)
    stopping = asyncio.Event()

    retrying = asyncio.create_task(start(client, stopping))
    await asyncio.sleep(0.05)
    stopping.set()
    started = await asyncio.wait_for(retrying, timeout=1)

    assert started is False
    assert client.attempts >= 2


async def test_a_client_is_not_started_once_stopping() -> None:
    client = StartsAfter(failures=0)
    stopping = asyncio.Event()
    stopping.set()

    started = await start(client, stopping)

    assert started is False
    assert client.attempts == 0


class FakeAdmin:
    """The admin client's answers for topics, as aiokafka hands them over: `partitions` and
    `replicas` per topic that exists, and whatever error each creation is told to meet."""

    def __init__(
        self,
        existing: dict[str, tuple[int, int]] | None = None,
        creation_errors: dict[str, int] | None = None,
        polls_before_described: int = 0,
    ) -> None:
        self.topics = dict(existing or {})  # name: (partitions, replicas)
        self.creation_errors = creation_errors or {}
        self.polls_before_described = polls_before_described  # after a creation
        self.created: list[NewTopic] = []

    async def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        undescribed = bool(self.created) and self.polls_before_described > 0
        if undescribed:
            self.polls_before_described -= 1
        return [self._description(name, undescribed) for name in names]

    def _description(self, name: str, undescribed: bool) -> dict[str, Any]:
        if name not in self.topics:
            missing = UnknownTopicOrPartitionError.errno
            return {"topic": name, "error_code": missing, "partitions": []}
        partitions, replicas = self.topics[name]
        described = [] if undescribed else [{"replicas": list(range(replicas))}] * partitions
        return {"topic": name, "error_code": 0, "partitions": described}

    async def create_topics(self, new_topics: list[NewTopic]) -> SimpleNamespace:
        errors = []
        for topic in new_topics:
            error_code = self.creation_errors.get(topic.name, 0)
            if error_code in (0, TopicAlreadyExistsError.errno):
                self.topics.setdefault(topic.name, (topic.num_partitions, topic.replication_factor))
            if error_code == 0:
                self.created.append(topic)
            errors.append((topic.name, error_code, None))
        return SimpleNamespace(topic_errors=errors)


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeAdmin]:
    """Makes the admin client shared.kafka will talk to; it polls for metadata at once."""
    monkeypatch.setattr(kafka, "TOPIC_METADATA_POLL_SECONDS", 0)

    def install(**answers: Any) -> FakeAdmin:
        fake = FakeAdmin(**answers)

        @contextlib.asynccontextmanager
        async def admin_client(
            bootstrap_servers: str, request_timeout_ms: int = 10_000
        ) -> AsyncIterator[FakeAdmin]:
            assert bootstrap_servers == SETTINGS.kafka_bootstrap_servers
            yield fake

        monkeypatch.setattr(kafka, "admin_client", admin_client)
        return fake

    return install


async def test_missing_topics_are_created_with_the_settings_partitions_and_copies(
    admin: Callable[..., FakeAdmin],
) -> None:
    fake = admin()
    copies = {"topic_replication_factor": 3, "topic_min_insync_replicas": 2}
    settings = SETTINGS.model_copy(update={"topic_partitions": 6, **copies})

    states = await kafka.ensure_topics(settings)

    assert [(t.name, t.num_partitions, t.replication_factor) for t in fake.created] == [
        (name, 6, 3) for name in TOPICS
    ]
    assert all(t.topic_configs["min.insync.replicas"] == "2" for t in fake.created)
    assert states == [
        kafka.TopicState(name, 6, created=True, replication_factor=3) for name in TOPICS
    ]


async def test_without_min_insync_replicas_a_topic_follows_the_brokers(
    admin: Callable[..., FakeAdmin],
) -> None:
    fake = admin()

    await kafka.ensure_topics(SETTINGS)

    assert [t.topic_configs for t in fake.created] == [
        {},
        {},
        {"cleanup.policy": "delete"},
        {"retention.ms": WEEK_MS},
        {"retention.ms": WEEK_MS},
    ]


async def test_every_retry_topic_of_the_schedule_is_created_each_once(
    admin: Callable[..., FakeAdmin],
) -> None:
    fake = admin()
    settings = SETTINGS.model_copy(
        update={"worker_retry_schedule": parse_schedule("1m,5m,15m,30m,60m,60m")}
    )

    await kafka.ensure_topics(settings)

    assert [t.name for t in fake.created][3:] == [
        "email.send.retry-1m",
        "email.send.retry-5m",
        "email.send.retry-15m",
        "email.send.retry-30m",
        "email.send.retry-60m",
    ]


@pytest.mark.parametrize(
    ("max_age", "retention"),
    [
        (timedelta(hours=24), timedelta(days=7)),
        (timedelta(days=6), timedelta(days=7)),
        (timedelta(days=6, seconds=1), timedelta(days=7, seconds=1)),
        (timedelta(days=30), timedelta(days=31)),
    ],
)
async def test_a_retry_topic_keeps_its_records_a_day_longer_than_they_can_wait(
    admin: Callable[..., FakeAdmin], max_age: timedelta, retention: timedelta
) -> None:
    """Its records wait at most WORKER_MAX_RETRY_AGE; never less than email.send's week."""
    fake = admin()
    settings = SETTINGS.model_copy(update={"worker_max_retry_age": max_age})

    await kafka.ensure_topics(settings)

    retention_ms = str(retention // timedelta(milliseconds=1))
    assert [t.topic_configs for t in fake.created if t.name in RETRY_TOPICS] == [
        {"retention.ms": retention_ms}
    ] * 2


async def test_an_existing_topic_is_left_as_it_is_whatever_its_partition_count(
    admin: Callable[..., FakeAdmin],
) -> None:
    fake = admin(existing={"email.send": (12, 1), "email.events": (1, 1)})

    states = await kafka.ensure_topics(SETTINGS)

    assert [t.name for t in fake.created] == [
        "email.send.dlq",
        "email.send.retry-1m",
        "email.send.retry-5m",
    ]
    assert states == [
        kafka.TopicState("email.send", 12, created=False, replication_factor=1),
        kafka.TopicState("email.send.dlq", 3, created=True, replication_factor=1),
        kafka.TopicState("email.events", 1, created=False, replication_factor=1),
        kafka.TopicState("email.send.retry-1m", 3, created=True, replication_factor=1),
        kafka.TopicState("email.send.retry-5m", 3, created=True, replication_factor=1),
    ]


async def test_a_topic_another_client_created_meanwhile_is_no_error(
    admin: Callable[..., FakeAdmin],
) -> None:
    admin(creation_errors={"email.send": TopicAlreadyExistsError.errno})

    states = await kafka.ensure_topics(SETTINGS)

    assert [(state.name, state.created) for state in states] == [
        ("email.send", False),
        *[(name, True) for name in TOPICS[1:]],
    ]


async def test_a_topic_that_cannot_be_created_raises_the_brokers_error(
    admin: Callable[..., FakeAdmin],
) -> None:
    admin(creation_errors={"email.send.retry-5m": InvalidReplicationFactorError.errno})

    refused = r"cannot create topic email\.send\.retry-5m"
    with pytest.raises(InvalidReplicationFactorError, match=refused):
        await kafka.ensure_topics(SETTINGS)


async def test_new_topics_are_described_again_until_their_partitions_show(
    admin: Callable[..., FakeAdmin],
) -> None:
    admin(polls_before_described=3)

    states = await kafka.ensure_topics(SETTINGS)

    assert [state.partitions for state in states] == [3] * len(TOPICS)


class ConfigsAdmin:
    """describe_configs as aiokafka answers it: one response holding one resource."""

    def __init__(self, error_code: int, entries: list[tuple[str, str | None]]) -> None:
        self.error_code = error_code
        self.entries = entries

    async def describe_configs(self, resources: list[Any]) -> list[SimpleNamespace]:
        [resource] = resources
        assert resource.name == "email.send"
        entries = [(name, value, True, 5, False) for name, value in self.entries]
        return [SimpleNamespace(resources=[(self.error_code, "", 2, "email.send", entries)])]


def configs_admin(monkeypatch: pytest.MonkeyPatch, fake: ConfigsAdmin) -> None:
    @contextlib.asynccontextmanager
    async def admin_client(
        bootstrap_servers: str, request_timeout_ms: int = 10_000
    ) -> AsyncIterator[ConfigsAdmin]:
        yield fake

    monkeypatch.setattr(kafka, "admin_client", admin_client)


async def test_a_topics_settings_are_read_by_name_without_the_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entries = [("max.message.bytes", "1048588"), ("retention.ms", "604800000"), ("x", None)]
    configs_admin(monkeypatch, ConfigsAdmin(0, entries))

    configs = await kafka.topic_configs("kafka-1:9092", "email.send")

    assert configs == {"max.message.bytes": "1048588", "retention.ms": "604800000"}


async def test_a_topics_settings_that_cannot_be_read_raise_the_brokers_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configs_admin(monkeypatch, ConfigsAdmin(UnknownTopicOrPartitionError.errno, []))

    with pytest.raises(UnknownTopicOrPartitionError, match=r"settings of topic email\.send"):
        await kafka.topic_configs("kafka-1:9092", "email.send")
