"""The console's Kafka reader against the real broker: the same offsets, members and hosts as
Kafka's own `kafka-consumer-groups.sh --describe`, the broker and each partition's leader and
in-sync replicas, for a few requests a look."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError, LeaderNotAvailableError, NotLeaderForPartitionError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from services.console.kafka_reader import KafkaReader, create_kafka_reader
from services.console.snapshot import KafkaReading, Replicas
from shared.kafka import admin_client
from shared.settings import Settings
from tests.conftest import free_port
from tests.kafka_tools import run_kafka_tool


def reader_for(
    bootstrap_servers: str, topic: str, dlq_topic: str, group: str, timeout_ms: int = 5000
) -> KafkaReader:
    return create_kafka_reader(
        bootstrap_servers, "console-test", timeout_ms, topic, dlq_topic, group
    )


@pytest.fixture
async def topics(kafka: Settings) -> AsyncIterator[tuple[str, str]]:
    topic = f"email.send.console-{uuid.uuid4().hex[:8]}"
    dlq_topic = f"{topic}.dlq"
    async with admin_client(kafka.kafka_bootstrap_servers) as admin:
        await admin.create_topics([NewTopic(topic, 3, 1), NewTopic(dlq_topic, 3, 1)])
        for _ in range(50):  # until the broker's metadata has them
            described = await admin.describe_topics([topic, dlq_topic])
            if not any(t["error_code"] for t in described):
                break
            await asyncio.sleep(0.1)
    yield topic, dlq_topic
    async with admin_client(kafka.kafka_bootstrap_servers) as admin:
        await admin.delete_topics([topic, dlq_topic])


async def produce(bootstrap_servers: str, topic: str, per_partition: dict[int, int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers)
    await producer.start()
    try:
        for partition, count in per_partition.items():
            for number in range(count):
                await producer.send_and_wait(topic, f"{number}".encode(), partition=partition)
    finally:
        await producer.stop()


async def first_reading(reader: KafkaReader) -> KafkaReading:
    """Read as the console's loop does, tick after tick, until the new topics' partitions have
    their leaders (a moment after they are created)."""
    for _ in range(50):
        try:
            return await reader.read()
        except (NotLeaderForPartitionError, LeaderNotAvailableError):
            await asyncio.sleep(0.1)
    return await reader.read()


def describe_rows(bootstrap_servers: str, group: str) -> dict[int, dict[str, str]]:
    """The tool's table, every column, by partition."""
    result = run_kafka_tool(
        "kafka-consumer-groups.sh", "--bootstrap-server", bootstrap_servers,
        "--group", group, "--describe",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines() if line.strip()]
    header = next(line for line in lines if "CURRENT-OFFSET" in line)
    rows = [dict(zip(header, line, strict=True)) for line in lines[lines.index(header) + 1 :]]
    return {int(row["PARTITION"]): row for row in rows}


async def test_the_reader_sees_what_kafka_consumer_groups_describe_sees(
    kafka: Settings, topics: tuple[str, str]
) -> None:
    topic, dlq_topic = topics
    bootstrap = kafka.kafka_bootstrap_servers
    group = f"email-send-group.{topic}"
    await produce(bootstrap, topic, {0: 6, 1: 3, 2: 1})
    await produce(bootstrap, dlq_topic, {1: 2})
    member = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, client_id="console-test-worker",
        enable_auto_commit=False, auto_offset_reset="earliest",
    )  # fmt: skip
    await member.start()
    reader = reader_for(bootstrap, topic, dlq_topic, group)
    try:
        while not member.assignment():
            await member.getmany(timeout_ms=200)
        # The seed's picture: partition 0 read up to 4 (CURRENT-OFFSET 4), 1 all read, 2 not.
        await member.commit(
            {TopicPartition(topic, 0): OffsetAndMetadata(4, ""),
             TopicPartition(topic, 1): OffsetAndMetadata(3, "")}
        )  # fmt: skip

        reading = await first_reading(reader)
        described = describe_rows(bootstrap, group)
        requests_before = reader.requests_sent
        await reader.read()
        requests_per_look = reader.requests_sent - requests_before
    finally:
        await reader.close()
        await member.stop()

    for offsets in reading.partitions:
        row = described[offsets.partition]
        current = reading.committed_offsets.get(offsets.partition)
        assert row["CURRENT-OFFSET"] == ("-" if current is None else str(current))
        assert row["LOG-END-OFFSET"] == str(offsets.log_end_offset)
        assert row["LAG"] == ("-" if current is None else str(offsets.log_end_offset - current))
    assert [(p.partition, p.log_start_offset, p.log_end_offset) for p in reading.partitions] == [
        (0, 0, 6), (1, 0, 3), (2, 0, 1),
    ]  # fmt: skip
    assert reading.committed_offsets == {0: 4, 1: 3}
    [owner] = reading.members
    assert (owner.member_id, owner.client_id) == (
        described[0]["CONSUMER-ID"],
        described[0]["CLIENT-ID"],
    )
    assert f"/{owner.host}" == described[0]["HOST"]
    assert owner.partitions == (0, 1, 2)
    assert reading.group_state == "Stable"
    assert [p.log_end_offset for p in reading.dlq_partitions] == [0, 2, 0]
    [broker] = reading.brokers
    assert broker.address == bootstrap
    assert reading.replicas == tuple(
        Replicas(name, partition, broker.node_id, (broker.node_id,), (broker.node_id,))
        for name in sorted((topic, dlq_topic))
        for partition in range(3)
    )
    assert owner.group_instance_id is None
    assert reading.coordinator == broker.node_id
    assert reading.unanswered == {}
    assert reading.group_generation is not None
    assert reading.group_generation >= 1
    # Metadata, ListOffsets twice (the consumer's end_offsets and beginning_offsets),
    # OffsetFetch, DescribeGroups and a Fetch of the group's record in __consumer_offsets,
    # whatever the pages open; ListOffsets twice a leader on a cluster.
    assert requests_per_look == 6


async def test_a_group_that_never_ran_reads_as_nothing_committed(
    kafka: Settings, topics: tuple[str, str]
) -> None:
    topic, dlq_topic = topics
    reader = reader_for(kafka.kafka_bootstrap_servers, topic, dlq_topic, "nobody")
    try:
        reading = await first_reading(reader)
    finally:
        await reader.close()

    assert reading.committed_offsets == {}
    assert reading.members == ()
    assert reading.group_state in ("Dead", "Empty")


async def test_no_broker_is_an_error_not_a_hang() -> None:
    reader = reader_for(f"127.0.0.1:{free_port()}", "t", "t.dlq", "g", timeout_ms=1000)
    with pytest.raises((KafkaError, OSError)):
        await reader.read()
    await reader.close()


async def test_a_missing_topic_says_how_to_create_it(kafka: Settings) -> None:
    missing = f"email.send.missing-{uuid.uuid4().hex[:8]}"
    reader = reader_for(kafka.kafka_bootstrap_servers, missing, f"{missing}.dlq", "g")
    with pytest.raises(KafkaError, match=f"topic {missing} does not exist .*make topics"):
        await reader.read()
    await reader.close()
