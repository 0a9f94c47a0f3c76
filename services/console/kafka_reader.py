"""Kafka, as `kafka-consumer-groups.sh --describe` sees it, through one admin client.

Each read is the tool's own requests: ListOffsets for LOG-END-OFFSET (and the log start),
OffsetFetch for the group's CURRENT-OFFSET, DescribeGroups for its state and members. Topic
metadata (partitions and their leaders) is asked for only now and then.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import UnknownTopicOrPartitionError, for_code
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.offset import OffsetRequest, OffsetResetStrategy

from services.console.snapshot import KafkaReading, Member, PartitionOffsets

METADATA_MAX_AGE_SECONDS = 30.0
NO_OFFSET = -1


class KafkaReader:
    def __init__(self, admin: AIOKafkaAdminClient, topic: str, dlq_topic: str, group: str) -> None:
        self.admin = admin
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.group = group
        self.requests_sent = 0
        self._started = False
        self._leaders: dict[tuple[str, int], int] = {}  # (topic, partition) -> leader node id
        self._leaders_read_at = 0.0
        self._coordinator: int | None = None

    async def read(self) -> KafkaReading:
        """One look at the topic, the dead-letter topic and the group; raises KafkaError."""
        try:
            if not self._started:
                await self.admin.start()
                self._count_requests()
                self._started = True
            if time.monotonic() - self._leaders_read_at > METADATA_MAX_AGE_SECONDS:
                await self._read_leaders()
            coordinator = await self._group_coordinator()
            latest, earliest, committed, group = await asyncio.gather(
                self._list_offsets(OffsetResetStrategy.LATEST),
                self._list_offsets(OffsetResetStrategy.EARLIEST),
                self._committed_offsets(coordinator),
                self._describe_group(coordinator),
            )
        except BaseException:  # a Kafka error, or the loop giving up on this read
            # Leaders and the coordinator may have moved (or the broker restarted): ask again.
            self._leaders_read_at = 0.0
            self._coordinator = None
            raise
        state, members = group

        def offsets_of(topic: str) -> tuple[PartitionOffsets, ...]:
            return tuple(
                PartitionOffsets(partition, earliest[topic, partition], latest[topic, partition])
                for (name, partition) in sorted(self._leaders)
                if name == topic
            )

        return KafkaReading(
            partitions=offsets_of(self.topic),
            dlq_partitions=offsets_of(self.dlq_topic),
            committed_offsets=committed,
            group_state=state,
            members=members,
        )

    async def close(self) -> None:
        if self._started:
            await self.admin.close()

    def _count_requests(self) -> None:
        """Count every request the reads send: the console's load on Kafka, whatever the
        number of pages open. (The client's own metadata refresh every few minutes goes
        around `send` and is not counted.)"""
        client = self.admin._client
        send = client.send

        async def counted_send(*args: Any, **kwargs: Any) -> Any:
            self.requests_sent += 1
            return await send(*args, **kwargs)

        client.send = counted_send

    async def _read_leaders(self) -> None:
        # Not admin.describe_topics: its Metadata request lets the broker auto-create a missing
        # topic (with the broker's default partition count), and the console changes nothing.
        request = MetadataRequest([self.topic, self.dlq_topic], allow_auto_topic_creation=False)
        response = await self.admin._client.send(self.admin._client.get_random_node(), request)
        leaders = {}
        for topic in response.to_object()["topics"]:
            if topic["error_code"] == UnknownTopicOrPartitionError.errno:
                raise UnknownTopicOrPartitionError(
                    f"topic {topic['topic']} does not exist (yet): `make topics` creates it"
                )
            if topic["error_code"]:
                raise for_code(topic["error_code"])(f"cannot describe topic {topic['topic']}")
            for partition in topic["partitions"]:
                leaders[topic["topic"], partition["partition"]] = partition["leader"]
        self._leaders = leaders
        self._leaders_read_at = time.monotonic()

    async def _list_offsets(self, which: int) -> dict[tuple[str, int], int]:
        """Every partition's latest (LOG-END-OFFSET) or earliest offset, one request a leader.

        aiokafka's admin client has no list_offsets; this is the request its consumer sends.
        """
        by_leader: dict[int, dict[str, list[tuple[int, int]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for (topic, partition), leader in self._leaders.items():
            by_leader[leader][topic].append((partition, which))
        responses = await asyncio.gather(
            *(
                self.admin._client.send(leader, OffsetRequest(-1, 0, list(topics.items())))
                for leader, topics in by_leader.items()
            )
        )
        offsets = {}
        for response in responses:
            for topic, partitions in response.topics:
                for partition, error_code, _timestamp, offset in partitions:
                    if error_code:
                        raise for_code(error_code)(f"cannot list offsets of {topic}-{partition}")
                    offsets[topic, partition] = offset
        return offsets

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

    async def _describe_group(self, coordinator: int) -> tuple[str, tuple[Member, ...]]:
        [response] = await self.admin.describe_consumer_groups(
            [self.group], group_coordinator_id=coordinator
        )
        error_code, _group, state, _protocol_type, _protocol, raw_members, *_ = response.groups[0]
        if error_code:
            raise for_code(error_code)(f"cannot describe group {self.group}")
        members = []
        for member_id, client_id, client_host, _metadata, raw_assignment in raw_members:
            partitions: tuple[int, ...] = ()
            if raw_assignment:
                assignment = ConsumerProtocolMemberAssignment.decode(raw_assignment)
                partitions = tuple(
                    sorted(tp.partition for tp in assignment.partitions() if tp.topic == self.topic)
                )
            members.append(Member(member_id, client_id, client_host.lstrip("/"), partitions))
        return state, tuple(sorted(members, key=lambda member: member.partitions or (1 << 31,)))

    async def _group_coordinator(self) -> int:
        if self._coordinator is None:
            self._coordinator = await self.admin.find_coordinator(self.group)
        return self._coordinator
