"""The Kafka reader against a fake cluster of three brokers: a broker that does not answer holds
back only what it serves (the partitions it leads, the group if it coordinates it), Metadata is
asked of the next broker, and nothing is made up at the first look."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, NodeNotReadyError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from services.console.aiokafka_protocol import DescribedGroup, DescribedMember, FetchedRecords
from services.console.group_generation import OFFSETS_TOPIC
from services.console.kafka_reader import KafkaReader
from services.console.snapshot import PartitionOffsets

TOPIC, DLQ, GROUP = "email.send", "email.send.dlq", "email-send-group"
COORDINATOR = 3


class FakeCluster:
    """Three brokers; partition p of each topic led by broker p + 1, every ISR whole. It answers
    the requests of services/console/aiokafka_protocol.py."""

    def __init__(self) -> None:
        self.down: set[int] = set()
        self.leaderless: set[int] = set()  # partitions with no leader (of both topics)
        self.log_end = 10
        self.asked: list[tuple[int, str]] = []  # (node, request) in the order sent
        self.requests_sent = 0

    def ask(self, node_id: int, request: str) -> None:
        self.asked.append((node_id, request))
        self.requests_sent += 1
        if node_id in self.down:
            raise NodeNotReadyError(f"node {node_id} is not ready")

    def known_brokers(self) -> list[int]:
        return [n for n in (1, 2, 3) if n not in self.down]

    async def metadata(self, node_id: int, topics: list[str]) -> dict[str, Any]:
        self.ask(node_id, "Metadata")
        if topics == [OFFSETS_TOPIC]:
            partitions = [{"partition": p, "leader": COORDINATOR} for p in range(50)]
            return {"topics": [{"error_code": 0, "topic": OFFSETS_TOPIC, "partitions": partitions}]}
        return self.topics_metadata()

    def topics_metadata(self) -> dict[str, Any]:
        live = [n for n in (1, 2, 3) if n not in self.down]
        return {
            "brokers": [{"node_id": n, "host": "127.0.0.1", "port": 19090 + 2 * n} for n in live],
            "topics": [
                {
                    "error_code": 0,
                    "topic": topic,
                    "partitions": [
                        {
                            "partition": p,
                            "leader": -1 if p in self.leaderless else p + 1,
                            "replicas": [1, 2, 3],
                            "isr": [1, 2, 3],
                        }
                        for p in range(3)
                    ],
                }
                for topic in (TOPIC, DLQ)
            ],
        }

    async def describe_group(self, node_id: int, group: str) -> DescribedGroup:
        self.ask(node_id, "DescribeGroups")
        member = DescribedMember(
            "worker-a-1f3c", "worker-a", "email-worker-h-1", "/10.0.0.1", ((TOPIC, 0),)
        )
        return DescribedGroup("Stable", "roundrobin", (member,))

    async def fetch(
        self, node_id: int, topic: str, partition: int, offset: int, max_bytes: int
    ) -> FetchedRecords:
        self.ask(node_id, "Fetch")  # of __consumer_offsets: empty here
        return FetchedRecords(0, (), offset)


class FakeAdmin:
    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def find_coordinator(self, group: str) -> int:
        return COORDINATOR

    async def list_consumer_group_offsets(
        self, group: str, group_coordinator_id: int
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        self.cluster.ask(group_coordinator_id, "OffsetFetch")
        return {TopicPartition(TOPIC, 0): OffsetAndMetadata(4, "")}


class FakeConsumer:
    """A group-less consumer's offset calls: one ListOffsets to each leader; one that does not
    answer is retried until the request timeout, as aiokafka's consumer does."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        return await self.list_offsets(partitions, 0)

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return await self.list_offsets(partitions, self.cluster.log_end)

    async def list_offsets(
        self, partitions: list[TopicPartition], offset: int
    ) -> dict[TopicPartition, int]:
        for leader in sorted({tp.partition + 1 for tp in partitions}):
            try:
                self.cluster.ask(leader, "ListOffsets")
            except NodeNotReadyError:
                raise KafkaTimeoutError("Failed to get offsets by times in 5000 ms") from None
        return dict.fromkeys(partitions, offset)


def reader_of(cluster: FakeCluster) -> KafkaReader:
    protocol: Any = cluster
    return KafkaReader(FakeAdmin(cluster), FakeConsumer(cluster), protocol, TOPIC, DLQ, GROUP)


async def test_a_leader_that_does_not_answer_keeps_its_partitions_last_offsets_only() -> None:
    cluster = FakeCluster()
    reader = reader_of(cluster)
    await reader.read()
    cluster.down.add(2)  # leads partition 1 of both topics
    cluster.log_end = 12

    reading = await reader.read()

    assert reading.partitions == (
        PartitionOffsets(0, 0, 12),
        PartitionOffsets(1, 0, 10, live=False),
        PartitionOffsets(2, 0, 12),
    )
    assert reading.unanswered == {2: "KafkaTimeoutError: Failed to get offsets by times in 5000 ms"}
    assert reading.group_error is None
    assert [m.group_instance_id for m in reading.members] == ["worker-a"]


async def test_each_leader_is_asked_twice_for_the_offsets_of_its_partitions() -> None:
    cluster = FakeCluster()
    reader = reader_of(cluster)
    await reader.read()
    cluster.asked.clear()

    reading = await reader.read()

    asked = sorted(node for node, request in cluster.asked if request == "ListOffsets")
    assert asked == [1, 1, 2, 2, 3, 3]  # the log end and the log start, of both topics at once
    assert reading.dlq_partitions == tuple(PartitionOffsets(p, 0, 10) for p in range(3))


async def test_a_leaderless_partition_keeps_its_last_offsets_and_is_not_asked() -> None:
    cluster = FakeCluster()
    reader = reader_of(cluster)
    await reader.read()
    cluster.leaderless.add(1)
    cluster.log_end = 12
    cluster.asked.clear()

    reading = await reader.read()

    assert reading.partitions == (
        PartitionOffsets(0, 0, 12),
        PartitionOffsets(1, 0, 10, live=False),
        PartitionOffsets(2, 0, 12),
    )
    assert 2 not in [node for node, request in cluster.asked if request == "ListOffsets"]
    assert reading.unanswered == {}


async def test_metadata_is_asked_of_the_next_broker_when_the_last_one_is_down() -> None:
    cluster = FakeCluster()
    reader = reader_of(cluster)
    await reader.read()
    # The first: the topics' (the second, once, asks the coordinator about __consumer_offsets).
    first = next(node for node, request in cluster.asked if request == "Metadata")
    cluster.down.add(first)
    cluster.asked.clear()

    reading = await reader.read()

    metadata_asked = [node for node, request in cluster.asked if request == "Metadata"]
    assert metadata_asked[0] == first
    assert len(metadata_asked) == 2  # one more broker, which answered
    assert [broker.node_id for broker in reading.brokers] == sorted({1, 2, 3} - {first})


async def test_a_coordinator_that_does_not_answer_leaves_the_group_as_last_seen() -> None:
    cluster = FakeCluster()
    reader = reader_of(cluster)
    before = await reader.read()
    cluster.down.add(COORDINATOR)

    reading = await reader.read()

    assert (reading.group_state, reading.members) == (before.group_state, before.members)
    assert reading.committed_offsets == {0: 4}
    assert reading.group_error == "NodeNotReadyError: node 3 is not ready"
    assert COORDINATOR in reading.unanswered


async def test_nothing_is_made_up_at_the_first_look() -> None:
    cluster = FakeCluster()
    cluster.down.add(2)  # listed by nobody's metadata yet, but leading partitions in ours
    cluster.topics_metadata = FakeCluster().topics_metadata  # type: ignore[method-assign]

    with pytest.raises(KafkaTimeoutError):
        await reader_of(cluster).read()
