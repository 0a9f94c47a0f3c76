"""The seed's claims about offsets and consumer groups, asserted against a real broker.

Each test writes hello1.. to a one-partition topic and checks what the seed says Kafka does,
reading group offsets with Kafka's own kafka-consumer-groups.sh --describe.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from deploy.local.kafka import GroupOffsetRow
from shared.settings import Settings
from tests.kafka_tools import describe_group

HELLOS = [f"hello{n}" for n in range(1, 6)]


async def produce(settings: Settings, topic: str, values: list[str]) -> list[int]:
    """Produce values to partition 0 in order and return the offset Kafka gave each."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        offsets = []
        for value in values:
            metadata = await producer.send_and_wait(topic, value.encode(), partition=0)
            offsets.append(metadata.offset)
        return offsets
    finally:
        await producer.stop()


def consumer_for(settings: Settings, topic: str, group: str | None) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def read(consumer: AIOKafkaConsumer, count: int) -> list[str]:
    """Read exactly `count` records, then make sure nothing else is waiting."""
    values: list[str] = []
    async with asyncio.timeout(20):
        while len(values) < count:
            batches = await consumer.getmany(timeout_ms=500)
            values += [record.value.decode() for records in batches.values() for record in records]
    extra = await consumer.getmany(timeout_ms=1000)
    values += [record.value.decode() for records in extra.values() for record in records]
    return values


def offsets_of(settings: Settings, group: str, topic: str) -> GroupOffsetRow:
    [row] = [
        row for row in describe_group(settings.kafka_bootstrap_servers, group) if row.topic == topic
    ]
    return row


async def test_offsets_start_at_zero(kafka: Settings, one_partition_topic: str) -> None:
    offsets = await produce(kafka, one_partition_topic, HELLOS)

    assert offsets == [0, 1, 2, 3, 4]


async def test_reading_does_not_remove_records(kafka: Settings, one_partition_topic: str) -> None:
    await produce(kafka, one_partition_topic, HELLOS)

    reads = []
    for _ in range(2):
        consumer = consumer_for(kafka, one_partition_topic, group=None)
        await consumer.start()
        try:
            reads.append(await read(consumer, count=5))
        finally:
            await consumer.stop()

    assert reads == [HELLOS, HELLOS]


async def test_current_offset_is_the_next_offset_the_group_reads(
    kafka: Settings, one_partition_topic: str
) -> None:
    topic, group = one_partition_topic, kafka.consumer_group
    await produce(kafka, topic, HELLOS[:4])
    first = consumer_for(kafka, topic, group)
    await first.start()
    try:
        assert await read(first, count=4) == HELLOS[:4]
        await first.commit()
    finally:
        await first.stop()

    after_four = offsets_of(kafka, group, topic)
    assert (after_four.current_offset, after_four.log_end_offset, after_four.lag) == (4, 4, 0)

    await produce(kafka, topic, HELLOS[4:])
    waiting = offsets_of(kafka, group, topic)
    assert (waiting.current_offset, waiting.log_end_offset, waiting.lag) == (4, 5, 1)

    second = consumer_for(kafka, topic, group)
    await second.start()
    try:
        assert await read(second, count=1) == ["hello5"]
        await second.commit()
    finally:
        await second.stop()

    after_five = offsets_of(kafka, group, topic)
    assert (after_five.current_offset, after_five.log_end_offset, after_five.lag) == (5, 5, 0)


async def test_another_group_reads_everything_from_the_beginning(
    kafka: Settings, one_partition_topic: str
) -> None:
    topic = one_partition_topic
    await produce(kafka, topic, HELLOS)
    done = consumer_for(kafka, topic, kafka.consumer_group)
    await done.start()
    try:
        await read(done, count=5)
        await done.commit()
    finally:
        await done.stop()

    another = consumer_for(kafka, topic, group="another-group")
    await another.start()
    try:
        assert await read(another, count=5) == HELLOS
    finally:
        await another.stop()
