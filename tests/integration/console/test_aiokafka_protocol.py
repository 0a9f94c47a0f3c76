"""The console's count of its Kafka requests against the real broker: each public call of its
consumer and admin client, each metadata refresh and each request of its own counts once
(the hooks of services/console/aiokafka_protocol.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from services.console.aiokafka_protocol import ProtocolClient
from shared.kafka import create_admin_client
from shared.settings import Settings


async def test_every_request_of_the_consoles_clients_counts_once(
    kafka: Settings, one_partition_topic: str
) -> None:
    servers = kafka.kafka_bootstrap_servers
    admin = create_admin_client(servers, "console-test", 5000)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, client_id="console-test", request_timeout_ms=5000
    )
    protocol = ProtocolClient(admin, counted=(admin, consumer))
    partition = [TopicPartition(one_partition_topic, 0)]
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "end_offsets": lambda: consumer.end_offsets(partition),
        "beginning_offsets": lambda: consumer.beginning_offsets(partition),
        "describe_cluster": admin.describe_cluster,
        "a metadata refresh": consumer.topics,
        "Metadata of its own": lambda: protocol.metadata(
            protocol.known_brokers()[0], [one_partition_topic]
        ),
    }
    counted = {}
    await admin.start()
    await consumer.start()
    try:
        await consumer.end_offsets(partition)  # the consumer learns where the partition is
        for name, call in calls.items():
            before = protocol.requests_sent
            await call()
            counted[name] = protocol.requests_sent - before
    finally:
        await consumer.stop()
        await admin.close()

    assert counted == dict.fromkeys(calls, 1)
