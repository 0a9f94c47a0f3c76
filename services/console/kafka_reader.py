"""Kafka, as `kafka-topics.sh --describe` and `kafka-consumer-groups.sh --describe` see it,
through an admin client and a consumer that joins no group.

Each look is the tools' own requests: Metadata for the live brokers and each partition's leader,
replicas and in-sync replicas; the consumer's `end_offsets` and `beginning_offsets` for
LOG-END-OFFSET and the log start (a ListOffsets to each leader each); OffsetFetch for the three
groups' CURRENT-OFFSETs and DescribeGroups for their states and members (one of each to a
coordinator, whatever the groups it coordinates); and one Fetch of the coordinator's own record
of the worker's group for its generation. When the records waiting in the retry topics changed,
at most every RETRY_FETCH_SECONDS, one Fetch to each leader reads the `due_at` headers of the
first ones. A broker that does not answer holds back only what it serves: the partitions it
leads keep their last offsets (marked so), the groups it coordinates their last look, and the
rest is read live. The requests public aiokafka does not send go through
services/console/aiokafka_protocol.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
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

from services.console.aiokafka_protocol import DescribedGroup, ProtocolClient
from services.console.group_generation import GenerationReader
from services.console.snapshot import (
    RETRY_DUE_RECORDS,
    Broker,
    DueRecord,
    GroupReading,
    KafkaReading,
    Member,
    PartitionOffsets,
    Replicas,
    Watch,
    describe_error,
)
from shared.kafka import create_admin_client
from shared.retry_topics import due_at_header
from shared.schema import PoisonRecord

NO_LEADER = -1
# What a broker that is down (or cut off) gives: no answer at all, rather than an error code.
# The consumer's offset calls retry the leader until their request timeout (KafkaTimeoutError).
NO_ANSWER = (
    NodeNotReadyError, KafkaConnectionError, RequestTimedOutError, KafkaTimeoutError,
    OSError, TimeoutError,
)  # fmt: skip
# Every topic is listed this often, to find the retry topics an earlier schedule left behind;
# each look in between asks only for the topics it knows.
LIST_TOPICS_SECONDS = 30.0
# The due times of the records waiting are read again at most this often, and only for the
# partitions whose records waiting changed.
RETRY_FETCH_SECONDS = 2.0
# A Fetch answers at least one batch whole, however large; beyond that, this much a partition.
RETRY_FETCH_BYTES = 256 * 1024


def create_kafka_reader(
    bootstrap_servers: str, client_id: str, request_timeout_ms: int, watch: Watch
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
    return KafkaReader(admin, consumer, protocol, watch)


class KafkaReader:
    def __init__(
        self,
        admin: AIOKafkaAdminClient,
        consumer: AIOKafkaConsumer,
        protocol: ProtocolClient,
        watch: Watch,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.admin = admin
        self.consumer = consumer  # group-less: for the offsets
        self.protocol = protocol
        self.watch = watch
        self.clock = clock
        self._started = False
        self._metadata_node: int | None = None  # the broker that answered Metadata last
        self._live_nodes: tuple[int, ...] = ()
        self._listed_at: float | None = None  # when every topic was last listed
        self._retry_topics_left: tuple[str, ...] = ()  # by an earlier schedule, still there
        self._coordinators: dict[str, int] = {}  # group -> the broker that coordinates it
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}  # the last ones read
        self._groups: dict[str, GroupReading] = {}  # the last look at each
        self._generation = GenerationReader(watch.group)
        self._due: dict[TopicPartition, tuple[DueRecord, ...]] = {}
        # The (CURRENT-OFFSET, LOG-END-OFFSET) each partition's due times were read at.
        self._due_read_of: dict[TopicPartition, tuple[int, int]] = {}
        self._due_read_at: float | None = None

    async def read(self) -> KafkaReading:
        """One look at the brokers, the watched topics and the three groups; raises KafkaError
        when no broker answers (or, at the first look, one that holds a part)."""
        try:
            if not self._started:
                await self.admin.start()
                await self.consumer.start()
                self._started = True
            brokers, replicas = await self._read_metadata()
            unanswered: dict[int, str] = {}
            offsets, groups = await asyncio.gather(
                self._read_offsets(replicas, unanswered),
                self._read_groups(unanswered),
                return_exceptions=True,  # each is awaited to its end, whichever fails
            )
            if isinstance(offsets, BaseException):
                raise offsets
            if isinstance(groups, BaseException):
                raise groups
            due = await self._read_due(replicas, offsets, groups[self.watch.retry_group])
        except BaseException:  # a Kafka error, or the loop giving up on this read
            # The coordinators may have moved (or a broker restarted): ask again.
            self._coordinators.clear()
            raise
        by_topic: dict[str, list[PartitionOffsets]] = defaultdict(list)
        for r in replicas:
            by_topic[r.topic].append(offsets[TopicPartition(r.topic, r.partition)])
        return KafkaReading(
            offsets={topic: tuple(partitions) for topic, partitions in by_topic.items()},
            groups=groups,
            brokers=brokers,
            replicas=replicas,
            unanswered=unanswered,
            due={(tp.topic, tp.partition): records for tp, records in due.items()},
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
        """The live brokers and the watched topics' partitions, in one Metadata request, from
        the broker that answered last, else from the next one that does. Every
        LIST_TOPICS_SECONDS the request lists every topic, for retry topics left behind."""
        # Not admin.describe_cluster and describe_topics: two requests, the first about every
        # topic; and the second lets the broker auto-create a missing topic (with the broker's
        # default partition count), while the console changes nothing.
        listing = self._listed_at is None or self.clock() - self._listed_at >= LIST_TOPICS_SECONDS
        topics = None if listing else [*self.watch.topics, *self._retry_topics_left]
        failure: BaseException = KafkaConnectionError("no broker to ask for metadata")
        for node_id in self._metadata_nodes():
            try:
                metadata = await self.protocol.metadata(node_id, topics)
            except NO_ANSWER as error:
                failure = error
                continue
            self._metadata_node = node_id
            answer = self._parse_metadata(metadata, listing)
            if listing:
                self._listed_at = self.clock()
            return answer
        raise failure

    def _metadata_nodes(self) -> Iterator[int]:
        """Each known broker once: the one that answered last first."""
        known = [self._metadata_node, *self._live_nodes, *self.protocol.known_brokers()]
        yield from dict.fromkeys(node_id for node_id in known if node_id is not None)

    def _parse_metadata(
        self, metadata: dict[str, Any], listing: bool
    ) -> tuple[tuple[Broker, ...], tuple[Replicas, ...]]:
        watch = self.watch
        replicas = []
        found: set[str] = set()
        for topic in metadata["topics"]:
            name, error_code = topic["topic"], topic["error_code"]
            needed = name in watch.topics
            if not needed and not watch.is_retry_topic(name):
                continue  # a topic of no concern here, in a listing of every topic
            if error_code == UnknownTopicOrPartitionError.errno and needed:
                raise UnknownTopicOrPartitionError(missing_topic(name))
            if error_code and needed:
                raise for_code(error_code)(f"cannot describe topic {name}")
            if error_code:
                continue  # a retry topic left behind, now deleted (or not readable this look)
            found.add(name)
            for partition in topic["partitions"]:
                leader = partition["leader"]
                replicas.append(
                    Replicas(
                        topic=name,
                        partition=partition["partition"],
                        leader=None if leader == NO_LEADER else leader,
                        replicas=tuple(partition["replicas"]),
                        isr=tuple(sorted(partition["isr"])),
                    )
                )
        if listing:
            for name in watch.topics:
                if name not in found:
                    raise UnknownTopicOrPartitionError(missing_topic(name))
        known = sorted(found) if listing else self._retry_topics_left
        self._retry_topics_left = tuple(
            name
            for name in known
            if name in found and watch.is_retry_topic(name) and name not in watch.retry_topics
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

    async def _read_groups(self, unanswered: dict[int, str]) -> dict[str, GroupReading]:
        """Each group, read from its coordinator with the others it coordinates; or its last
        look, with why it was not read now (the first look raises instead)."""
        groups = self.watch.groups
        coordinators = await asyncio.gather(
            *(self._coordinator_of(group) for group in groups), return_exceptions=True
        )
        answers: dict[str, GroupReading | BaseException] = {}
        by_coordinator: dict[int, list[str]] = defaultdict(list)
        for group, coordinator in zip(groups, coordinators, strict=True):
            if isinstance(coordinator, BaseException):
                answers[group] = coordinator
            else:
                by_coordinator[coordinator].append(group)
        read = await asyncio.gather(
            *(self._groups_from(node, names) for node, names in by_coordinator.items()),
            return_exceptions=True,
        )
        for (node, names), answer in zip(by_coordinator.items(), read, strict=True):
            if isinstance(answer, dict):
                answers.update(answer)
                continue
            if isinstance(answer, NO_ANSWER):
                unanswered[node] = describe_error(answer)
            answers.update(dict.fromkeys(names, answer))
        looks: dict[str, GroupReading] = {}
        for group in groups:
            look = answers[group]
            if isinstance(look, GroupReading):
                looks[group] = self._groups[group] = look
                continue
            if not isinstance(look, (KafkaError, *NO_ANSWER)):
                raise look  # cancelled, or a fault of the console's own
            self._coordinators.pop(group, None)  # it may have moved: ask again at the next look
            if group not in self._groups:
                raise look  # nothing to show for it yet
            looks[group] = dataclasses.replace(self._groups[group], error=describe_error(look))
        return looks

    async def _groups_from(
        self, coordinator: int, groups: list[str]
    ) -> dict[str, GroupReading | BaseException]:
        """Groups one broker coordinates: one OffsetFetch and one DescribeGroups for them all,
        and the worker's group's generation if it is one of them."""
        committed, described, generation = await asyncio.gather(
            self.protocol.committed_offsets(coordinator, groups),
            self.protocol.describe_groups(coordinator, groups),
            self._generation_from(coordinator, groups),
        )
        looks: dict[str, GroupReading | BaseException] = {}
        for group in groups:
            offsets = committed.get(group, KafkaError(f"no offsets of group {group} answered"))
            description = described.get(group, KafkaError(f"group {group} was not described"))
            if isinstance(offsets, BaseException):
                looks[group] = offsets
            elif isinstance(description, BaseException):
                looks[group] = description
            else:
                looks[group] = group_reading(
                    description,
                    {(tp.topic, tp.partition): offset for tp, offset in offsets.items()},
                    coordinator,
                    generation if group == self.watch.group else None,
                )
        return looks

    async def _generation_from(self, coordinator: int, groups: list[str]) -> int | None:
        """The worker's group's generation, if `coordinator` is its coordinator."""
        if self.watch.group not in groups:
            return None
        return await self._generation.read(self.protocol, coordinator)

    async def _coordinator_of(self, group: str) -> int:
        if group not in self._coordinators:
            self._coordinators[group] = await self.admin.find_coordinator(group)
        return self._coordinators[group]

    async def _read_due(
        self,
        replicas: tuple[Replicas, ...],
        offsets: dict[TopicPartition, PartitionOffsets],
        retry_group: GroupReading,
    ) -> dict[TopicPartition, tuple[DueRecord, ...]]:
        """The due times of the first records waiting in each retry partition, from the retry
        group's CURRENT-OFFSET: read again for the partitions whose records waiting changed,
        at most every RETRY_FETCH_SECONDS, one Fetch to each leader. A leader that does not
        answer leaves its partitions' last due times."""
        to_read: dict[TopicPartition, tuple[int, int]] = {}
        for tp, partition in offsets.items():
            if not self.watch.is_retry_topic(tp.topic):
                continue
            waiting = (
                retry_group.committed_offsets.get(
                    (tp.topic, tp.partition), partition.log_start_offset
                ),
                partition.log_end_offset,
            )
            if waiting[0] >= waiting[1]:
                self._due.pop(tp, None)  # nothing waits there
                self._due_read_of.pop(tp, None)
            elif due_times_changed(self._due_read_of.get(tp), waiting, len(self._due.get(tp, ()))):
                to_read[tp] = waiting
        now = self.clock()
        if not to_read or (
            self._due_read_at is not None and now - self._due_read_at < RETRY_FETCH_SECONDS
        ):
            return dict(self._due)
        self._due_read_at = now
        leaders = {TopicPartition(r.topic, r.partition): r.leader for r in replicas}
        by_leader: dict[int, dict[TopicPartition, int]] = defaultdict(dict)
        for tp, (start, _) in to_read.items():
            leader = leaders.get(tp)
            if leader is not None:
                by_leader[leader][tp] = start
        answers = await asyncio.gather(
            *(
                self.protocol.fetch(leader, positions, RETRY_FETCH_BYTES)
                for leader, positions in by_leader.items()
            ),
            return_exceptions=True,
        )
        for answer in answers:
            if not isinstance(answer, dict):
                if not isinstance(answer, (KafkaError, *NO_ANSWER)):
                    raise answer  # cancelled, or a fault of the console's own
                continue  # its offsets' read tells whether the leader answers
            for tp, fetched in answer.items():
                self._due[tp] = tuple(
                    DueRecord(record.offset, due_time(record.headers))
                    for record in fetched.records[:RETRY_DUE_RECORDS]
                )
                self._due_read_of[tp] = to_read[tp]
        return dict(self._due)


def missing_topic(name: str) -> str:
    return f"topic {name} does not exist (yet): `make topics` creates it"


def group_reading(
    group: DescribedGroup,
    committed: dict[tuple[str, int], int],
    coordinator: int,
    generation: int | None,
) -> GroupReading:
    """A group as DescribeGroups and OffsetFetch tell it: its members, those that own
    partitions first, static ones with their instance ids."""
    members = [
        Member(
            member.member_id,
            member.client_id,
            member.client_host.lstrip("/"),
            tuple(sorted(member.assignment)),
            member.group_instance_id,
        )
        for member in group.members
    ]
    members.sort(key=lambda member: (not member.assignment, member.assignment))
    return GroupReading(
        state=group.state,
        members=tuple(members),
        committed_offsets=committed,
        protocol=group.protocol,
        generation=generation,
        coordinator=coordinator,
    )


def due_times_changed(
    read_of: tuple[int, int] | None, now: tuple[int, int], records_read: int
) -> bool:
    """Whether a retry partition's due times must be read again: its CURRENT-OFFSET moved (or
    they were never read), or records came after fewer than RETRY_DUE_RECORDS were read."""
    if read_of is None or read_of[0] != now[0]:
        return True
    return now[1] != read_of[1] and records_read < RETRY_DUE_RECORDS


def due_time(headers: Iterable[tuple[str, bytes | None]]) -> float | None:
    """A retry record's due time (unix time) from its `due_at` header; None when it has no
    readable one."""
    try:
        due_at = due_at_header((name, value) for name, value in headers if value is not None)
    except PoisonRecord:
        return None
    return due_at.timestamp()
