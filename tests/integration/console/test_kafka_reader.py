"""The console's Kafka reader against the real broker: the same offsets, members and hosts as
Kafka's own `kafka-consumer-groups.sh --describe` for each of the three groups, the broker and
each partition's leader and in-sync replicas, the due times in the retry records' headers, and
retry topics an earlier schedule left behind, for a few requests a look."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError, LeaderNotAvailableError, NotLeaderForPartitionError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from services.console.kafka_reader import KafkaReader, create_kafka_reader
from services.console.snapshot import DueRecord, KafkaReading, Replicas, Watch
from shared.kafka import admin_client
from shared.settings import Settings
from tests.conftest import free_port
from tests.integration.console.watched import create_watched, delete_watched, watch_named
from tests.kafka_tools import run_kafka_tool


def reader_for(bootstrap_servers: str, watch: Watch, timeout_ms: int = 5000) -> KafkaReader:
    return create_kafka_reader(bootstrap_servers, "console-test", timeout_ms, watch)


@pytest.fixture
async def watch(kafka: Settings) -> AsyncIterator[Watch]:
    watched = await create_watched(kafka.kafka_bootstrap_servers, "console")
    yield watched
    await delete_watched(kafka.kafka_bootstrap_servers, watched)


async def produce(
    bootstrap_servers: str,
    topic: str,
    per_partition: dict[int, int],
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers)
    await producer.start()
    try:
        for partition, count in per_partition.items():
            for number in range(count):
                await producer.send_and_wait(
                    topic, f"{number}".encode(), partition=partition, headers=headers
                )
    finally:
        await producer.stop()


async def commit(bootstrap_servers: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit as a member of no generation would: the group's CURRENT-OFFSETs, set."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()})
    finally:
        await consumer.stop()


async def first_reading(reader: KafkaReader) -> KafkaReading:
    """Read as the console's loop does, tick after tick, until the new topics' partitions have
    their leaders (a moment after they are created)."""
    for _ in range(50):
        try:
            return await reader.read()
        except (NotLeaderForPartitionError, LeaderNotAvailableError):
            await asyncio.sleep(0.1)
    return await reader.read()


def describe_rows(bootstrap_servers: str, group: str) -> dict[tuple[str, int], dict[str, str]]:
    """The tool's table, every column, by topic and partition."""
    result = run_kafka_tool(
        "kafka-consumer-groups.sh", "--bootstrap-server", bootstrap_servers,
        "--group", group, "--describe",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines() if line.strip()]
    header = next(line for line in lines if "CURRENT-OFFSET" in line)
    rows = [dict(zip(header, line, strict=True)) for line in lines[lines.index(header) + 1 :]]
    return {(row["TOPIC"], int(row["PARTITION"])): row for row in rows}


async def test_the_reader_sees_what_kafka_consumer_groups_describe_sees(
    kafka: Settings, watch: Watch
) -> None:
    bootstrap = kafka.kafka_bootstrap_servers
    await produce(bootstrap, watch.topic, {0: 6, 1: 3, 2: 1})
    await produce(bootstrap, watch.dlq_topic, {1: 2})
    await produce(bootstrap, watch.events_topic, {0: 4, 2: 2})
    member = AIOKafkaConsumer(
        watch.topic, bootstrap_servers=bootstrap, group_id=watch.group,
        client_id="console-test-worker", enable_auto_commit=False, auto_offset_reset="earliest",
    )  # fmt: skip
    await member.start()
    await commit(bootstrap, watch.status_group, {TopicPartition(watch.events_topic, 0): 3})
    reader = reader_for(bootstrap, watch)
    try:
        while not member.assignment():
            await member.getmany(timeout_ms=200)
        # The seed's picture: partition 0 read up to 4 (CURRENT-OFFSET 4), 1 all read, 2 not.
        await member.commit(
            {TopicPartition(watch.topic, 0): OffsetAndMetadata(4, ""),
             TopicPartition(watch.topic, 1): OffsetAndMetadata(3, "")}
        )  # fmt: skip

        reading = await first_reading(reader)
        described = {
            group: describe_rows(bootstrap, group) for group in (watch.group, watch.status_group)
        }
        requests_before = reader.requests_sent
        await reader.read()
        requests_per_look = reader.requests_sent - requests_before
    finally:
        await reader.close()
        await member.stop()

    for topic, group in ((watch.topic, watch.group), (watch.events_topic, watch.status_group)):
        committed = reading.groups[group].committed(topic)
        for offsets in reading.partitions_of(topic):
            row = described[group].get((topic, offsets.partition))
            current = committed.get(offsets.partition)
            if row is None:  # the tool leaves out what a memberless group never committed
                assert current is None
                continue
            assert row["CURRENT-OFFSET"] == ("-" if current is None else str(current))
            assert row["LOG-END-OFFSET"] == str(offsets.log_end_offset)
            assert row["LAG"] == ("-" if current is None else str(offsets.log_end_offset - current))
    main = reading.groups[watch.group]
    assert [
        (p.partition, p.log_start_offset, p.log_end_offset)
        for p in reading.partitions_of(watch.topic)
    ] == [(0, 0, 6), (1, 0, 3), (2, 0, 1)]
    assert main.committed(watch.topic) == {0: 4, 1: 3}
    [owner] = main.members
    row = described[watch.group][(watch.topic, 0)]
    assert (owner.member_id, owner.client_id) == (row["CONSUMER-ID"], row["CLIENT-ID"])
    assert f"/{owner.host}" == row["HOST"]
    assert owner.partitions_of(watch.topic) == (0, 1, 2)
    assert main.state == "Stable"
    assert reading.groups[watch.status_group].committed(watch.events_topic) == {0: 3}
    assert reading.groups[watch.status_group].members == ()
    assert reading.groups[watch.retry_group].committed_offsets == {}
    assert [p.log_end_offset for p in reading.partitions_of(watch.dlq_topic)] == [0, 2, 0]
    assert [p.log_end_offset for p in reading.partitions_of(watch.events_topic)] == [4, 0, 2]
    [broker] = reading.brokers
    assert broker.address == bootstrap
    assert reading.replicas == tuple(
        Replicas(name, partition, broker.node_id, (broker.node_id,), (broker.node_id,))
        for name in sorted(watch.topics)
        for partition in range(3)
    )
    assert owner.group_instance_id is None
    assert {group.coordinator for group in reading.groups.values()} == {broker.node_id}
    assert reading.unanswered == {}
    assert main.generation is not None
    assert main.generation >= 1
    # Metadata, ListOffsets twice (the consumer's end_offsets and beginning_offsets), one
    # OffsetFetch and one DescribeGroups for the three groups, and a Fetch of the worker's
    # group's record in __consumer_offsets, whatever the pages open; ListOffsets twice a
    # leader on a cluster. Nothing waits in the retry topics: no Fetch of them.
    assert requests_per_look == 6


async def test_groups_that_never_ran_read_as_nothing_committed(
    kafka: Settings, watch: Watch
) -> None:
    reader = reader_for(kafka.kafka_bootstrap_servers, watch)
    try:
        reading = await first_reading(reader)
    finally:
        await reader.close()

    for group in watch.groups:
        assert reading.groups[group].committed_offsets == {}
        assert reading.groups[group].members == ()
        assert reading.groups[group].state in ("Dead", "Empty")


async def test_the_due_times_are_the_retry_records_due_at_headers_from_the_groups_offset(
    kafka: Settings, watch: Watch
) -> None:
    bootstrap = kafka.kafka_bootstrap_servers
    due_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=43)
    headers = [("schema_version", b"1"), ("due_at", due_at.isoformat().encode())]
    retry_topic = watch.retry_topics[0]
    await produce(bootstrap, retry_topic, {1: 3}, headers)
    await produce(bootstrap, retry_topic, {1: 1}, [("schema_version", b"1")])
    await commit(bootstrap, watch.retry_group, {TopicPartition(retry_topic, 1): 1})
    reader = reader_for(bootstrap, watch)
    try:
        reading = await first_reading(reader)
        requests_before = reader.requests_sent
        again = await reader.read()
        requests_then = reader.requests_sent - requests_before
    finally:
        await reader.close()

    assert reading.due == {
        (retry_topic, 1): (
            DueRecord(1, due_at.timestamp()),
            DueRecord(2, due_at.timestamp()),
            DueRecord(3, None),  # no due_at header
        )
    }
    assert reading.groups[watch.retry_group].committed(retry_topic) == {1: 1}
    assert again.due == reading.due
    assert requests_then == 6  # nothing changed: not read again


async def test_a_retry_topic_an_earlier_schedule_left_is_watched_too(
    kafka: Settings, watch: Watch
) -> None:
    bootstrap = kafka.kafka_bootstrap_servers
    left_behind = f"{watch.topic}.retry-1m"
    async with admin_client(bootstrap) as admin:
        await admin.create_topics([NewTopic(left_behind, 3, 1)])
    await produce(bootstrap, left_behind, {2: 1})
    reader = reader_for(bootstrap, watch)
    try:
        reading = await first_reading(reader)
    finally:
        await reader.close()
        async with admin_client(bootstrap) as admin:
            await admin.delete_topics([left_behind])

    assert [p.log_end_offset for p in reading.partitions_of(left_behind)] == [0, 0, 1]
    assert watch.is_retry_topic(left_behind)


async def test_no_broker_is_an_error_not_a_hang() -> None:
    reader = reader_for(f"127.0.0.1:{free_port()}", watch_named("t"), timeout_ms=1000)
    with pytest.raises((KafkaError, OSError)):
        await reader.read()
    await reader.close()


async def test_a_missing_topic_says_how_to_create_it(kafka: Settings) -> None:
    missing = watch_named("missing")
    reader = reader_for(kafka.kafka_bootstrap_servers, missing)
    with pytest.raises(KafkaError, match=f"topic {missing.topic} does not exist .*make topics"):
        await reader.read()
    await reader.close()
