"""The Kafka reader against a fake cluster of three brokers: a broker that does not answer holds
back only what it serves (the partitions it leads, the groups it coordinates), Metadata is asked
of the next broker, the three groups take one OffsetFetch and one DescribeGroups of their
coordinator, the due times of the retry records are read from the retry group's CURRENT-OFFSET
only when they changed, retry topics left behind are found, and nothing is made up at the first
look."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    UnknownTopicOrPartitionError,
)
from aiokafka.structs import TopicPartition

from services.console.aiokafka_protocol import (
    DescribedGroup,
    DescribedMember,
    FetchedRecord,
    FetchedRecords,
)
from services.console.group_generation import OFFSETS_TOPIC
from services.console.kafka_reader import (
    LIST_TOPICS_SECONDS,
    RETRY_FETCH_SECONDS,
    KafkaReader,
    due_time,
    due_times_changed,
)
from services.console.snapshot import DueRecord, PartitionOffsets, Watch

TOPIC, DLQ, EVENTS = "email.send", "email.send.dlq", "email.events"
RETRY_2S, RETRY_5S = "email.send.retry-2s", "email.send.retry-5s"
LEFT_BEHIND = "email.send.retry-1m"  # by an earlier schedule
GROUP, STATUS_GROUP, RETRY_GROUP = "email-send-group", "email-status-group", "email-retry-group"
WATCH = Watch(TOPIC, DLQ, GROUP, EVENTS, STATUS_GROUP, (RETRY_2S, RETRY_5S), RETRY_GROUP)
COORDINATOR = 3
DUE_AT = "2026-11-25T09:31:00Z"
DUE_AT_UNIX = 1795599060.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeCluster:
    """Three brokers; partition p of each topic led by broker p + 1, every ISR whole. It answers
    the requests of services/console/aiokafka_protocol.py."""

    def __init__(self) -> None:
        self.down: set[int] = set()
        self.leaderless: set[int] = set()  # partitions with no leader (of every topic)
        self.log_end = 10
        self.log_ends: dict[TopicPartition, int] = {}  # those that are not log_end
        self.topics = [TOPIC, DLQ, EVENTS, RETRY_2S, RETRY_5S, "unrelated"]
        self.coordinators = dict.fromkeys((GROUP, STATUS_GROUP, RETRY_GROUP), COORDINATOR)
        self.committed: dict[str, dict[TopicPartition, int]] = {
            GROUP: {TopicPartition(TOPIC, 0): 4},
            STATUS_GROUP: {TopicPartition(EVENTS, 1): 2},
            RETRY_GROUP: {},
        }
        self.group_errors: dict[str, KafkaError] = {}
        self.asked: list[tuple[int, str]] = []  # (node, request) in the order sent
        self.metadata_asked: list[list[str] | None] = []
        self.fetched: list[dict[TopicPartition, int]] = []  # the positions of each retry Fetch
        self.requests_sent = 0

    def ask(self, node_id: int, request: str) -> None:
        self.asked.append((node_id, request))
        self.requests_sent += 1
        if node_id in self.down:
            raise NodeNotReadyError(f"node {node_id} is not ready")

    def asked_for(self, request: str) -> list[int]:
        return sorted(node for node, asked in self.asked if asked == request)

    def known_brokers(self) -> list[int]:
        return [n for n in (1, 2, 3) if n not in self.down]

    async def metadata(self, node_id: int, topics: list[str] | None) -> dict[str, Any]:
        self.ask(node_id, "Metadata")
        if topics == [OFFSETS_TOPIC]:
            partitions = [{"partition": p, "leader": COORDINATOR} for p in range(50)]
            return {"topics": [{"error_code": 0, "topic": OFFSETS_TOPIC, "partitions": partitions}]}
        self.metadata_asked.append(topics)
        return self.topics_metadata(topics)

    def topics_metadata(self, topics: list[str] | None = None) -> dict[str, Any]:
        live = [n for n in (1, 2, 3) if n not in self.down]
        return {
            "brokers": [{"node_id": n, "host": "127.0.0.1", "port": 19090 + 2 * n} for n in live],
            "topics": [
                self.topic_metadata(topic)
                if topic in self.topics
                else {"error_code": UnknownTopicOrPartitionError.errno, "topic": topic}
                for topic in (self.topics if topics is None else topics)
            ],
        }

    def topic_metadata(self, topic: str) -> dict[str, Any]:
        partitions = [
            {
                "partition": p,
                "leader": -1 if p in self.leaderless else p + 1,
                "replicas": [1, 2, 3],
                "isr": [1, 2, 3],
            }
            for p in range(3)
        ]
        return {"error_code": 0, "topic": topic, "partitions": partitions}

    async def committed_offsets(
        self, node_id: int, groups: list[str]
    ) -> dict[str, dict[TopicPartition, int] | KafkaError]:
        self.ask(node_id, "OffsetFetch")
        return {group: self.group_errors.get(group, self.committed[group]) for group in groups}

    async def describe_groups(
        self, node_id: int, groups: list[str]
    ) -> dict[str, DescribedGroup | KafkaError]:
        self.ask(node_id, "DescribeGroups")
        member = DescribedMember(
            "worker-a-1f3c", "worker-a", "email-worker-h-1", "/10.0.0.1", ((TOPIC, 0),)
        )
        return {
            group: self.group_errors.get(group, DescribedGroup("Stable", "roundrobin", (member,)))
            for group in groups
        }

    async def fetch(
        self, node_id: int, positions: dict[TopicPartition, int], max_bytes: int
    ) -> dict[TopicPartition, FetchedRecords]:
        self.ask(node_id, "Fetch")
        if OFFSETS_TOPIC in {tp.topic for tp in positions}:
            return {tp: FetchedRecords(0, (), offset) for tp, offset in positions.items()}
        self.fetched.append(dict(positions))
        return {tp: self.retry_records(tp, offset) for tp, offset in positions.items()}

    def retry_records(self, tp: TopicPartition, offset: int) -> FetchedRecords:
        """Every retry record due at DUE_AT, but those at offset 11, whose header is garbled."""
        end = self.end_of(tp)
        records = tuple(
            FetchedRecord(o, b"id", b"{}", (("due_at", b"soon" if o == 11 else DUE_AT.encode()),))
            for o in range(offset, end)
        )
        return FetchedRecords(end, records, end)

    def end_of(self, tp: TopicPartition) -> int:
        return self.log_ends.get(tp, self.log_end)


class FakeAdmin:
    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def find_coordinator(self, group: str) -> int:
        self.cluster.asked.append((0, "FindCoordinator"))  # of any broker
        return self.cluster.coordinators[group]


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
        await self.ask_leaders(partitions)
        return dict.fromkeys(partitions, 0)

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        await self.ask_leaders(partitions)
        return {tp: self.cluster.end_of(tp) for tp in partitions}

    async def ask_leaders(self, partitions: list[TopicPartition]) -> None:
        for leader in sorted({tp.partition + 1 for tp in partitions}):
            try:
                self.cluster.ask(leader, "ListOffsets")
            except NodeNotReadyError:
                raise KafkaTimeoutError("Failed to get offsets by times in 5000 ms") from None


def reader_of(cluster: FakeCluster, clock: FakeClock | None = None) -> KafkaReader:
    protocol: Any = cluster
    admin: Any = FakeAdmin(cluster)
    consumer: Any = FakeConsumer(cluster)
    return KafkaReader(admin, consumer, protocol, WATCH, clock=clock or FakeClock())


async def test_a_leader_that_does_not_answer_keeps_its_partitions_last_offsets_only() -> None:
    cluster = FakeCluster()
    reader = reader_of(cluster)
    await reader.read()
    cluster.down.add(2)  # leads partition 1 of every topic
    cluster.log_end = 12

    reading = await reader.read()

    assert reading.partitions_of(TOPIC) == (
        PartitionOffsets(0, 0, 12),
        PartitionOffsets(1, 0, 10, live=False),
        PartitionOffsets(2, 0, 12),
    )
    assert reading.partitions_of(EVENTS)[1] == PartitionOffsets(1, 0, 10, live=False)
    assert reading.unanswered == {2: "KafkaTimeoutError: Failed to get offsets by times in 5000 ms"}
    assert reading.groups[GROUP].error is None
    assert [m.group_instance_id for m in reading.groups[GROUP].members] == ["worker-a"]


async def test_each_leader_is_asked_twice_for_the_offsets_of_its_partitions() -> None:
    cluster = FakeCluster()
    reader = reader_of(cluster)
    await reader.read()
    cluster.asked.clear()

    reading = await reader.read()

    # The log end and the log start, of every watched topic at once.
    assert cluster.asked_for("ListOffsets") == [1, 1, 2, 2, 3, 3]
    assert reading.partitions_of(DLQ) == tuple(PartitionOffsets(p, 0, 10) for p in range(3))
    assert sorted(reading.offsets) == sorted(WATCH.topics)  # not the unrelated topic


async def test_the_three_groups_take_one_offset_fetch_and_one_describe_of_their_coordinator() -> (
    None
):
    cluster = FakeCluster()
    reader = reader_of(cluster)
    await reader.read()
    cluster.asked.clear()

    reading = await reader.read()

    assert cluster.asked_for("OffsetFetch") == cluster.asked_for("DescribeGroups") == [COORDINATOR]
    assert cluster.asked_for("FindCoordinator") == []  # known since the first look
    assert reading.groups[GROUP].committed(TOPIC) == {0: 4}
    assert reading.groups[STATUS_GROUP].committed(EVENTS) == {1: 2}
    assert reading.groups[RETRY_GROUP].committed_offsets == {}
    assert {group.coordinator for group in reading.groups.values()} == {COORDINATOR}


async def test_a_leaderless_partition_keeps_its_last_offsets_and_is_not_asked() -> None:
    cluster = FakeCluster()
    reader = reader_of(cluster)
    await reader.read()
    cluster.leaderless.add(1)
    cluster.log_end = 12
    cluster.asked.clear()

    reading = await reader.read()

    assert reading.partitions_of(TOPIC) == (
        PartitionOffsets(0, 0, 12),
        PartitionOffsets(1, 0, 10, live=False),
        PartitionOffsets(2, 0, 12),
    )
    assert 2 not in cluster.asked_for("ListOffsets")
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


async def test_a_coordinator_that_does_not_answer_leaves_only_its_groups_as_last_seen() -> None:
    cluster = FakeCluster()
    cluster.coordinators[STATUS_GROUP] = 1
    reader = reader_of(cluster)
    before = await reader.read()
    cluster.down.add(COORDINATOR)
    cluster.committed[STATUS_GROUP] = {TopicPartition(EVENTS, 1): 5}

    reading = await reader.read()

    main = reading.groups[GROUP]
    assert (main.state, main.members) == (before.groups[GROUP].state, before.groups[GROUP].members)
    assert main.committed(TOPIC) == {0: 4}
    not_ready = "NodeNotReadyError: node 3 is not ready"
    assert main.error == reading.groups[RETRY_GROUP].error == not_ready
    assert reading.groups[STATUS_GROUP].error is None
    assert reading.groups[STATUS_GROUP].committed(EVENTS) == {1: 5}  # read live
    assert COORDINATOR in reading.unanswered


async def test_a_groups_own_error_keeps_only_that_group_as_last_seen() -> None:
    cluster = FakeCluster()
    reader = reader_of(cluster)
    await reader.read()
    cluster.group_errors[RETRY_GROUP] = GroupAuthorizationFailedError("not allowed")

    reading = await reader.read()

    assert "GroupAuthorizationFailedError" in (reading.groups[RETRY_GROUP].error or "")
    assert reading.groups[GROUP].error is None
    assert reading.unanswered == {}


async def test_nothing_is_made_up_at_the_first_look() -> None:
    cluster = FakeCluster()
    cluster.down.add(2)  # listed by nobody's metadata yet, but leading partitions in ours
    cluster.topics_metadata = FakeCluster().topics_metadata  # type: ignore[method-assign]

    with pytest.raises(KafkaTimeoutError):
        await reader_of(cluster).read()


async def test_a_group_never_read_is_not_made_up_either() -> None:
    cluster = FakeCluster()
    cluster.group_errors[STATUS_GROUP] = GroupAuthorizationFailedError("not allowed")

    with pytest.raises(GroupAuthorizationFailedError):
        await reader_of(cluster).read()


async def test_a_missing_topic_says_how_to_create_it() -> None:
    cluster = FakeCluster()
    cluster.topics.remove(EVENTS)

    with pytest.raises(UnknownTopicOrPartitionError, match=r"topic email\.events does not exist"):
        await reader_of(cluster).read()


async def test_due_times_are_read_from_the_retry_groups_offset_when_what_waits_changes() -> None:
    cluster = FakeCluster()
    clock = FakeClock()
    waiting = TopicPartition(RETRY_2S, 0)
    cluster.log_ends = {tp: 0 for topic in (RETRY_2S, RETRY_5S) for tp in partitions(topic)}
    cluster.log_ends[waiting] = 12
    cluster.committed[RETRY_GROUP] = {waiting: 10}
    reader = reader_of(cluster, clock)

    first = await reader.read()
    cluster.committed[RETRY_GROUP] = {waiting: 11}  # the record at 10 was retried
    clock.now += RETRY_FETCH_SECONDS / 2
    too_soon = await reader.read()
    clock.now += RETRY_FETCH_SECONDS
    moved = await reader.read()
    clock.now += RETRY_FETCH_SECONDS * 5
    unchanged = await reader.read()

    # From the CURRENT-OFFSET, of the partition that has records waiting, from its leader.
    assert cluster.fetched == [{waiting: 10}, {waiting: 11}]
    assert [node for node, request in cluster.asked if request == "Fetch"].count(1) == 2
    assert first.due == {(RETRY_2S, 0): (DueRecord(10, DUE_AT_UNIX), DueRecord(11, None))}
    assert too_soon.due == first.due  # the picture shows only those from the offset on
    assert moved.due == unchanged.due == {(RETRY_2S, 0): (DueRecord(11, None),)}


async def test_due_times_are_forgotten_once_nothing_waits() -> None:
    cluster = FakeCluster()
    clock = FakeClock()
    waiting = TopicPartition(RETRY_5S, 2)
    cluster.log_ends = {tp: 0 for topic in (RETRY_2S, RETRY_5S) for tp in partitions(topic)}
    cluster.log_ends[waiting] = 1
    reader = reader_of(cluster, clock)
    first = await reader.read()
    cluster.committed[RETRY_GROUP] = {waiting: 1}
    clock.now += RETRY_FETCH_SECONDS

    drained = await reader.read()

    assert first.due == {(RETRY_5S, 2): (DueRecord(0, DUE_AT_UNIX),)}
    assert drained.due == {}


async def test_a_retry_topic_an_earlier_schedule_left_is_found_and_dropped_once_deleted() -> None:
    cluster = FakeCluster()
    cluster.topics.append(LEFT_BEHIND)
    clock = FakeClock()
    reader = reader_of(cluster, clock)

    listed = await reader.read()
    clock.now += 1
    named = await reader.read()
    cluster.topics.remove(LEFT_BEHIND)
    clock.now += 1
    deleted = await reader.read()
    cluster.topics.append("email.send.retry-30m")
    clock.now += LIST_TOPICS_SECONDS
    listed_again = await reader.read()

    assert cluster.metadata_asked[0] is None  # the first look lists every topic
    assert cluster.metadata_asked[1] == [*WATCH.topics, LEFT_BEHIND]
    assert LEFT_BEHIND in listed.offsets
    assert LEFT_BEHIND in named.offsets
    assert LEFT_BEHIND not in deleted.offsets
    assert cluster.metadata_asked[3] is None
    assert "email.send.retry-30m" in listed_again.offsets


def partitions(topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in range(3)]


def test_a_due_time_is_read_from_the_due_at_header() -> None:
    assert due_time([("schema_version", b"1"), ("due_at", DUE_AT.encode())]) == DUE_AT_UNIX
    assert due_time([("due_at", b"2026-11-25T10:31:00+01:00")]) == DUE_AT_UNIX


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("due_at", b"tomorrow")],
        [("due_at", None)],
        [("due_at", DUE_AT.encode()), ("due_at", DUE_AT.encode())],
        [("due_at", b"\xff")],
    ],
)
def test_a_record_without_one_readable_due_at_header_has_no_due_time(
    headers: list[tuple[str, bytes | None]],
) -> None:
    assert due_time(headers) is None


@pytest.mark.parametrize(
    ("read_of", "now", "records_read", "changed"),
    [
        (None, (10, 12), 0, True),  # never read
        ((10, 12), (10, 12), 2, False),
        ((10, 12), (11, 12), 2, True),  # the retry group read on
        ((10, 12), (10, 13), 2, True),  # one more record, and room for its due time
        ((10, 40), (10, 41), 20, False),  # one more, after the 20 shown
    ],
)
def test_due_times_are_read_again_only_when_what_they_show_changed(
    read_of: tuple[int, int] | None, now: tuple[int, int], records_read: int, changed: bool
) -> None:
    assert due_times_changed(read_of, now, records_read) is changed
