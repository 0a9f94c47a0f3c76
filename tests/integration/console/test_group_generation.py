"""The group's generation as the console reads it from __consumer_offsets, against the real broker
and checked by Kafka's own GroupMetadataMessageFormatter: the guard on the record layout that
services/console/group_generation.py parses by hand."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import NewTopic

from services.console.aiokafka_protocol import ProtocolClient
from services.console.group_generation import OFFSETS_TOPIC, GenerationReader
from shared.kafka import admin_client
from shared.settings import Settings
from tests.kafka_tools import run_kafka_tool

PARTITIONS = 2


def formatter_generations(bootstrap_servers: str, group: str) -> list[int]:
    """Every generation of `group` that Kafka's own formatter prints from __consumer_offsets."""
    result = run_kafka_tool(
        "kafka-console-consumer.sh",
        "--bootstrap-server", bootstrap_servers,
        "--topic", OFFSETS_TOPIC,
        "--from-beginning",
        "--formatter", "org.apache.kafka.tools.consumer.GroupMetadataMessageFormatter",
        "--timeout-ms", "5000",
    )  # fmt: skip
    generations = []
    for record in json_objects(result.stdout):
        if record["key"]["data"].get("group") == group and record.get("value"):
            generations.append(int(record["value"]["data"]["generation"]))
    assert generations, result.stdout + result.stderr
    return generations


def json_objects(text: str) -> list[dict[str, Any]]:
    """The formatter's records: JSON objects, with no line break between them in Kafka 4.1."""
    decoder, objects, position = json.JSONDecoder(), [], 0
    while (start := text.find("{", position)) != -1:
        record, position = decoder.raw_decode(text, start)
        objects.append(record)
    return objects


async def until_assigned(*consumers: AIOKafkaConsumer) -> None:
    async with asyncio.timeout(30):
        while sum(len(consumer.assignment()) for consumer in consumers) != PARTITIONS or not all(
            consumer.assignment() for consumer in consumers
        ):
            await asyncio.gather(*(consumer.getmany(timeout_ms=100) for consumer in consumers))


async def test_the_generation_is_the_one_the_coordinator_wrote(kafka: Settings) -> None:
    servers = kafka.kafka_bootstrap_servers
    topic = f"generation.{uuid.uuid4().hex[:8]}"
    group = f"group-{topic}"
    reader = GenerationReader(group)

    def member() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(topic, bootstrap_servers=servers, group_id=group)

    async with admin_client(servers) as admin:
        protocol = ProtocolClient(admin)
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        first, second = member(), member()
        await first.start()
        try:
            await until_assigned(first)
            coordinator = await admin.find_coordinator(group)
            alone = await reader.read(protocol, coordinator)
            await second.start()
            await until_assigned(first, second)
            together = await reader.read(protocol, coordinator)
        finally:
            await asyncio.gather(first.stop(), second.stop())
        after_both_left = await reader.read(protocol, coordinator)

    assert reader.caught_up
    assert alone is not None
    assert together is not None
    assert after_both_left is not None
    assert alone < together < after_both_left
    written = formatter_generations(servers, group)
    assert {alone, together} <= set(written), written
    assert written[-1] == after_both_left, written
