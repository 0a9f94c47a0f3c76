"""Static membership (WORKER_INSTANCE_ID, KIP-345) against the real broker: a member that
comes back within the session timeout gets its partitions back and the group does not
rebalance; without an instance id the same restart moves every partition twice."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.admin import NewTopic
from aiokafka.structs import TopicPartition

from shared.kafka import admin_client, create_consumer
from shared.settings import Settings

PARTITIONS = 4


class Rebalances(ConsumerRebalanceListener):  # type: ignore[misc]
    """Every revocation and assignment this member saw."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.events.append("revoked")

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.events.append("assigned")


async def joined(consumer: AIOKafkaConsumer, topic: str, listener: Rebalances) -> None:
    """Started and subscribed; aiokafka's coordinator joins the group in the background."""
    await consumer.start()
    consumer.subscribe([topic], listener=listener)
    async with asyncio.timeout(30):
        while not consumer.assignment():  # noqa: ASYNC110 - polling the client is the point
            await asyncio.sleep(0.1)


async def restart_within_the_session_timeout(kafka: Settings, instance_ids: bool) -> list[str]:
    """Two members; the first stops and comes back 2 s later (the session timeout is 10 s).
    Returns what the second member's listener saw meanwhile."""
    topic = f"static.{uuid.uuid4().hex[:8]}"
    async with admin_client(kafka.kafka_bootstrap_servers) as admin:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])

    def member(name: str) -> AIOKafkaConsumer:
        settings = kafka.model_copy(
            update={
                "consumer_group": f"group-{topic}",
                "worker_instance_id": name if instance_ids else None,
            }
        )
        return create_consumer(settings, client_id=name)

    first, second, second_saw = member("worker-a"), member("worker-b"), Rebalances()
    await joined(first, topic, Rebalances())
    await joined(second, topic, second_saw)
    async with asyncio.timeout(30):
        while len(first.assignment()) + len(second.assignment()) != PARTITIONS:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    await asyncio.sleep(1)  # settled
    seen_before = len(second_saw.events)
    owned_before = first.assignment()

    await first.stop()
    await asyncio.sleep(2)
    back = member("worker-a")
    await joined(back, topic, Rebalances())
    await asyncio.sleep(4)  # a rebalance, if any, shows in the second member's listener
    owned_after = back.assignment()
    await asyncio.gather(back.stop(), second.stop())

    if instance_ids:
        assert owned_after == owned_before, "the static member got its own partitions back"
    return second_saw.events[seen_before:]


async def test_a_static_member_back_within_the_session_timeout_causes_no_rebalance(
    kafka: Settings,
) -> None:
    assert await restart_within_the_session_timeout(kafka, instance_ids=True) == []


async def test_without_an_instance_id_the_same_restart_rebalances(kafka: Settings) -> None:
    assert "revoked" in await restart_within_the_session_timeout(kafka, instance_ids=False)
