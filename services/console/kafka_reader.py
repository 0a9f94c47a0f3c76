"""Kafka, as `kafka-topics.sh --describe` and `kafka-consumer-groups.sh --describe` see it,
through an admin client and a consumer that joins no group.

Each look is the tools' own requests: Metadata for the live brokers and each partition's leader,
replicas and in-sync replicas; the consumer's `end_offsets` and `beginning_offsets` for
LOG-END-OFFSET and the log start (a ListOffsets to each leader each); OffsetFetch for the
group's CURRENT-OFFSET; DescribeGroups for its state and members; and one Fetch of the
coordinator's own record of the group for its generation. A broker that does not answer holds
back only what it serves: the partitions it leads keep their last offsets (marked so), the group
its last look if it is the coordinator, and the rest is read live. The requests public aiokafka
does not send go through services/console/aiokafka_protocol.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    NodeNotReadyError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
    for_code,
)
from aiokafka.structs import TopicPartition

from services.console.aiokafka_protocol import ProtocolClient
from services.console.group_generation import GenerationReader
from services.console.snapshot import (
    Broker,
    KafkaReading,
    Member,
    PartitionOffsets,
    Replicas,
    describe_error,
)
from shared.kafka import create_admin_client

NO_OFFSET = -1
NO_LEADER = -1
# What a broker that is down (or cut off) gives: no answer at all, rather than an error code.
# The consumer's offset calls retry the leader until their request timeout (KafkaTimeoutError).
NO_ANSWER = (
    NodeNotReadyError, KafkaConnectionError, RequestTimedOutError, KafkaTimeoutError,
    OSError, TimeoutError,
)  # fmt: skip


@dataclass(frozen=True)
class _Group:
    committed_offsets: dict[int, int]
    state: str
    protocol: str
    members: tuple[Member, ...]
    generation: int | None


def create_kafka_reader(
    bootstrap_servers: str,
    client_id: str,
    request_timeout_ms: int,
    topic: str,
    dlq_topic: str,
    group: str,
) -> KafkaReader:
    """The reader and its two clients, not yet connected: they connect at its first look."""
    admin = create_admin_client(bootstrap_servers, client_id, request_timeout_ms)
    # No group_id: it joins no group, is assigned nothing and fetches nothing; it only asks
    # the leaders for offsets, and gives up on one after request_timeout_ms.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        request_timeout_ms=request_timeout_ms,
        group_id=None,
    )
    protocol = ProtocolClient(admin, counted=(admin, consumer))
    return KafkaReader(admin, consumer, protocol, topic, dlq_topic, group)


class KafkaReader:
    def __init__(
        self,
        admin: AIOKafkaAdminClient,
        consumer: AIOKafkaConsumer,
        protocol: ProtocolClient,
        topic: str,
        dlq_topic: str,
        group: str,
    ) -> None:
        self.admin = admin
        self.consumer = consumer  # group-less: for the offsets
        self.protocol = protocol
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.group = group
        self._started = False
        self._metadata_node: int | None = None  # the broker that answered Metadata last
        self._live_nodes: tuple[int, ...] = ()
        self._coordinator: int | None = None
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}  # the last ones read
        self._group: _Group | None = None  # the last one read
        self._generation = GenerationReader(group)

    async def read(self) -> KafkaReading:
        """One look at the brokers, the topic, the dead-letter topic and the group; raises
        KafkaError when no broker answers (or, at the first look, one that holds a part)."""
        try:
            if not self._started:
                await self.admin.start()
                await self.consumer.start()
                self._started = True
            brokers, replicas = await self._read_metadata()
            unanswered: dict[int, str] = {}
            offsets, group_read = await asyncio.gather(
                self._read_offsets(replicas, unanswered),
                self._read_group(unanswered),
                return_exceptions=True,  # each is awaited to its end, whichever fails
            )
            if isinstance(offsets, BaseException):
                raise offsets
            if isinstance(group_read, BaseException):
                raise group_read
            group, group_error = group_read
        except BaseException:  # a Kafka error, or the loop giving up on this read
            # The coordinator may have moved (or the broker restarted): ask again.
            self._coordinator = None
            raise

        def offsets_of(topic: str) -> tuple[PartitionOffsets, ...]:
            return tuple(
                offsets[TopicPartition(r.topic, r.partition)] for r in replicas if r.topic == topic
            )

        return KafkaReading(
            partitions=offsets_of(self.topic),
            dlq_partitions=offsets_of(self.dlq_topic),
            committed_offsets=group.committed_offsets,
            group_state=group.state,
            members=group.members,
            brokers=brokers,
            replicas=replicas,
            group_protocol=group.protocol,
            group_generation=group.generation,
            coordinator=self._coordinator,
            unanswered=unanswered,
            group_error=group_error,
        )

    @property
    def requests_sent(self) -> int:
        """Every request the reads sent: the console's load on Kafka, whatever the number of
        pages open."""
        return self.protocol.requests_sent

    async def close(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def _read_metadata(self) -> tuple[tuple[Broker, ...], tuple[Replicas, ...]]:
        """The live brokers and the two topics' partitions, in one Metadata request, from the
        broker that answered last, else from the next one that does."""
        # Not admin.describe_cluster and describe_topics: two requests, the first about every
        # topic; and the second lets the broker auto-create a missing topic (with the broker's
        # default partition count), while the console changes nothing.
        failure: BaseException = KafkaConnectionError("no broker to ask for metadata")
        for node_id in self._metadata_nodes():
            try:
                metadata = await self.protocol.metadata(node_id, [self.topic, self.dlq_topic])
            except NO_ANSWER as error:
                failure = error
                continue
            self._metadata_node = node_id
            return self._parse_metadata(metadata)
        raise failure

    def _metadata_nodes(self) -> Iterator[int]:
        """Each known broker once: the one that answered last first."""
        known = [self._metadata_node, *self._live_nodes, *self.protocol.known_brokers()]
        yield from dict.fromkeys(node_id for node_id in known if node_id is not None)

    def _parse_metadata(
        self, metadata: dict[str, Any]
    ) -> tuple[tuple[Broker, ...], tuple[Replicas, ...]]:
        replicas = []
        for topic in metadata["topics"]:
            if topic["error_code"] == UnknownTopicOrPartitionError.errno:
                raise UnknownTopicOrPartitionError(
                    f"topic {topic['topic']} does not exist (yet): `make topics` creates it"
                )
            if topic["error_code"]:
                raise for_code(topic["error_code"])(f"cannot describe topic {topic['topic']}")
            for partition in topic["partitions"]:
                leader = partition["leader"]
                replicas.append(
                    Replicas(
                        topic=topic["topic"],
                        partition=partition["partition"],
                        leader=None if leader == NO_LEADER else leader,
                        replicas=tuple(partition["replicas"]),
                        isr=tuple(sorted(partition["isr"])),
                    )
                )
        brokers = tuple(
            sorted(
                (
                    Broker(broker["node_id"], broker["host"], broker["port"], broker.get("rack"))
                    for broker in metadata["brokers"]
                ),
                key=lambda broker: broker.node_id,
            )
        )
        self._live_nodes = tuple(broker.node_id for broker in brokers)
        return brokers, tuple(sorted(replicas, key=lambda r: (r.topic, r.partition)))

    async def _read_offsets(
        self, replicas: tuple[Replicas, ...], unanswered: dict[int, str]
    ) -> dict[TopicPartition, PartitionOffsets]:
        """Each partition's log start and LOG-END-OFFSET, two requests a leader; the last ones
        read, marked not live, for the partitions of a leader that does not answer (asked one
        leader at a time, so that one that does not answer fails only its own)."""
        by_leader: dict[int, list[TopicPartition]] = defaultdict(list)
        leaderless = []
        for r in replicas:
            if r.leader is None:
                leaderless.append(TopicPartition(r.topic, r.partition))
            else:
                by_leader[r.leader].append(TopicPartition(r.topic, r.partition))
        answers = await asyncio.gather(
            *(self._offsets_from(partitions) for partitions in by_leader.values()),
            return_exceptions=True,
        )
        offsets: dict[TopicPartition, PartitionOffsets] = {}
        for (leader, partitions), answer in zip(by_leader.items(), answers, strict=True):
            if isinstance(answer, dict):
                offsets.update(answer)
                continue
            if not isinstance(answer, Exception):
                raise answer  # cancelled: the loop gave up on this read
            if isinstance(answer, NO_ANSWER):
                unanswered[leader] = describe_error(answer)
            offsets.update(self._last_offsets(partitions, answer))
        if leaderless:
            offsets.update(
                self._last_offsets(leaderless, LeaderNotAvailableError("no leader, no offsets"))
            )
        self._offsets = offsets
        return offsets

    def _last_offsets(
        self, partitions: list[TopicPartition], error: Exception
    ) -> dict[TopicPartition, PartitionOffsets]:
        if any(partition not in self._offsets for partition in partitions):
            raise error  # nothing to show for them yet
        return {p: dataclasses.replace(self._offsets[p], live=False) for p in partitions}

    async def _offsets_from(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, PartitionOffsets]:
        """The offsets of partitions one broker leads: a ListOffsets to it for each."""
        log_end, log_start = await asyncio.gather(
            self.consumer.end_offsets(partitions), self.consumer.beginning_offsets(partitions)
        )
        return {p: PartitionOffsets(p.partition, log_start[p], log_end[p]) for p in partitions}

    async def _read_group(self, unanswered: dict[int, str]) -> tuple[_Group, str | None]:
        """The group, and None; or its last look, and why it was not read now."""
        coordinator = self._coordinator
        try:
            coordinator = await self._group_coordinator()
            committed, group, generation = await asyncio.gather(
                self._committed_offsets(coordinator),
                self._describe_group(coordinator),
                self._generation.read(self.protocol, coordinator),
            )
        except (KafkaError, *NO_ANSWER) as error:
            self._coordinator = None  # it may have moved: ask again at the next look
            if self._group is None:
                raise
            if coordinator is not None and isinstance(error, NO_ANSWER):
                unanswered[coordinator] = describe_error(error)
            return self._group, describe_error(error)
        state, protocol, members = group
        self._group = _Group(committed, state, protocol, members, generation)
        return self._group, None

    async def _committed_offsets(self, coordinator: int) -> dict[int, int]:
        """The group's CURRENT-OFFSET of each partition that has one."""
        committed = await self.admin.list_consumer_group_offsets(
            self.group, group_coordinator_id=coordinator
        )
        return {
            tp.partition: offset_and_metadata.offset
            for tp, offset_and_metadata in committed.items()
            if tp.topic == self.topic and offset_and_metadata.offset != NO_OFFSET
        }

    async def _describe_group(self, coordinator: int) -> tuple[str, str, tuple[Member, ...]]:
        """Its state, assignor and members, static ones with their instance ids."""
        group = await self.protocol.describe_group(coordinator, self.group)
        members = [
            Member(
                member.member_id,
                member.client_id,
                member.client_host.lstrip("/"),
                tuple(sorted(p for topic, p in member.assignment if topic == self.topic)),
                member.group_instance_id,
            )
            for member in group.members
        ]
        by_partitions = sorted(members, key=lambda member: member.partitions or (1 << 31,))
        return group.state, group.protocol, tuple(by_partitions)

    async def _group_coordinator(self) -> int:
        if self._coordinator is None:
            self._coordinator = await self.admin.find_coordinator(self.group)
        return self._coordinator
