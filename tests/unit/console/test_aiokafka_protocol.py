"""The aiokafka internals the console relies on (services/console/aiokafka_protocol.py), pinned:
DescribeGroups v4 and OffsetFetch v8 byte for byte as Kafka's protocol lays them out
(DescribeGroupsRequest.json, DescribeGroupsResponse.json, OffsetFetchRequest.json and
OffsetFetchResponse.json) and, for OffsetFetch, as Kafka 4.1.1 writes them itself; the layouts
of aiokafka's Fetch and Metadata it reads, the client attributes it sends and counts through
(the admin client's and the consumer's public calls go through them), and pins on aiokafka:
when its own DescribeGroups reaches v4, or its OffsetFetch v8, that part of the module is no
longer needed."""

from __future__ import annotations

import inspect
import struct
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    NodeNotReadyError,
    OffsetOutOfRangeError,
    RequestTimedOutError,
)
from aiokafka.protocol.admin import DescribeGroupsRequest
from aiokafka.protocol.commit import OffsetFetchRequest
from aiokafka.protocol.fetch import FetchResponse_v11
from aiokafka.protocol.metadata import MetadataResponse_v1
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import TopicPartition

from services.console.aiokafka_protocol import (
    DescribedGroup,
    DescribedMember,
    DescribeGroupsResponse_v4,
    DescribeGroupsWithInstanceIds,
    FetchedRecord,
    FetchedRecords,
    OffsetFetchOfGroups,
    OffsetFetchResponse_v8,
    ProtocolClient,
    described_groups,
    fetched_offsets,
)

BROKER_VERSIONS = {15: (0, 5)}  # what Kafka 4 answers ApiVersions with for DescribeGroups
OFFSET_FETCH_VERSIONS = {9: (1, 10)}  # and for OffsetFetch (Kafka 4.1)
METADATA_VERSIONS = {3: (0, 12)}
TOPIC = "email.send"
GROUP = "email-send-group"


def string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    return struct.pack(">h", len(value)) + value.encode()


def blob(value: bytes) -> bytes:
    return struct.pack(">i", len(value)) + value


def assignment(*partitions: int) -> bytes:
    encoded: bytes = ConsumerProtocolMemberAssignment(0, [(TOPIC, list(partitions))], b"").encode()
    return encoded


def member(member_id: str, instance_id: str | None, client_id: str, assigned: bytes) -> bytes:
    return (
        string(member_id)
        + string(instance_id)
        + string(client_id)
        + string("/10.0.0.1")
        + blob(b"subscription")
        + blob(assigned)
    )


def described(group: str, error_code: int, *members: bytes) -> bytes:
    return (
        struct.pack(">h", error_code)
        + string(group)
        + string("Stable")
        + string("consumer")
        + string("roundrobin")
        + struct.pack(">i", len(members))
        + b"".join(members)
        + struct.pack(">i", -(2**31))  # authorized_operations: not asked for
    )


def response(*groups: bytes) -> bytes:
    return struct.pack(">i", 0) + struct.pack(">i", len(groups)) + b"".join(groups)


def test_aiokafka_still_stops_at_v3_without_instance_ids() -> None:
    assert DescribeGroupsRequest(["g"]).prepare(BROKER_VERSIONS).API_VERSION == 3


def test_the_request_is_v4_for_the_groups_without_authorized_operations() -> None:
    groups = [GROUP, "email-status-group"]
    request = DescribeGroupsWithInstanceIds(groups).prepare(BROKER_VERSIONS)

    assert (request.API_KEY, request.API_VERSION) == (15, 4)
    assert request.encode() == (
        struct.pack(">i", 2) + string(GROUP) + string("email-status-group") + b"\x00"
    )


def test_the_answer_carries_each_members_instance_id_and_partitions() -> None:
    raw = response(
        described(
            GROUP,
            0,
            member("worker-a-1f3c", "worker-a", "email-worker-h-101", assignment(0, 2)),
            member("email-worker-h-102-77aa", None, "email-worker-h-102", b""),
        )
    )

    [group] = described_groups(DescribeGroupsResponse_v4.decode(raw)).values()

    assert isinstance(group, DescribedGroup)
    assert (group.state, group.protocol) == ("Stable", "roundrobin")
    assert group.members == (
        DescribedMember(
            "worker-a-1f3c", "worker-a", "email-worker-h-101", "/10.0.0.1", ((TOPIC, 0), (TOPIC, 2))
        ),
        DescribedMember("email-worker-h-102-77aa", None, "email-worker-h-102", "/10.0.0.1", ()),
    )


def test_a_groups_error_is_its_own() -> None:
    raw = response(
        described("email-status-group", GroupAuthorizationFailedError.errno), described(GROUP, 0)
    )

    groups = described_groups(DescribeGroupsResponse_v4.decode(raw))

    assert isinstance(groups[GROUP], DescribedGroup)
    error = groups["email-status-group"]
    assert isinstance(error, GroupAuthorizationFailedError)
    assert "email-status-group" in str(error)


def varint(value: int) -> bytes:
    """An unsigned varint, as the flexible versions write lengths (Kafka's ByteUtils)."""
    encoded = b""
    while value >= 0x80:
        encoded += bytes([(value & 0x7F) | 0x80])
        value >>= 7
    return encoded + bytes([value])


def compact(value: str | None) -> bytes:
    """A COMPACT_NULLABLE_STRING: its length plus one (0 for null), then its bytes."""
    return varint(0) if value is None else varint(len(value) + 1) + value.encode()


NO_TAGS = b"\x00"


def test_aiokafka_still_asks_one_group_per_offset_fetch() -> None:
    request = OffsetFetchRequest(GROUP, None).prepare(OFFSET_FETCH_VERSIONS)

    assert request.API_VERSION < 8


def test_the_offset_fetch_is_v8_for_every_partition_of_each_group() -> None:
    groups = [GROUP, "email-status-group", "email-retry-group"]
    request = OffsetFetchOfGroups(groups).prepare(OFFSET_FETCH_VERSIONS)

    assert (request.API_KEY, request.API_VERSION, request.FLEXIBLE_VERSION) == (9, 8, True)
    assert request.encode() == (
        varint(len(groups) + 1)
        + b"".join(compact(group) + varint(0) + NO_TAGS for group in groups)  # topics: null
        + b"\x00"  # require_stable: false
        + NO_TAGS
    )


def offsets_answer(group: str, error_code: int, *partitions: tuple[str, int, int, int]) -> bytes:
    """One group of an OffsetFetch v8 answer: (topic, partition, offset, error) each, one topic
    a partition."""
    topics = b"".join(
        compact(topic)
        + varint(2)
        + struct.pack(">iqi", partition, offset, -1)  # committed_leader_epoch: unknown
        + compact("")  # metadata
        + struct.pack(">h", partition_error)
        + NO_TAGS
        + NO_TAGS
        for topic, partition, offset, partition_error in partitions
    )
    return (
        compact(group)
        + varint(len(partitions) + 1)
        + topics
        + struct.pack(">h", error_code)
        + NO_TAGS
    )


def test_the_offsets_answer_is_each_groups_or_its_error() -> None:
    raw = (
        struct.pack(">i", 0)  # throttle_time_ms
        + varint(4)
        + offsets_answer(GROUP, 0, (TOPIC, 0, 4, 0), (TOPIC, 1, -1, 0), ("email.events", 2, 7, 0))
        + offsets_answer("email-status-group", 69)  # GROUP_ID_NOT_FOUND: never committed
        + offsets_answer("email-retry-group", GroupAuthorizationFailedError.errno)
        + NO_TAGS
    )

    answer = fetched_offsets(OffsetFetchResponse_v8.decode(raw))

    assert answer[GROUP] == {TopicPartition(TOPIC, 0): 4, TopicPartition("email.events", 2): 7}
    assert answer["email-status-group"] == {}
    assert isinstance(answer["email-retry-group"], GroupAuthorizationFailedError)


class FakeConnection:
    """The admin client's `AIOKafkaClient.send`, answering what it is given."""

    def __init__(self, answer: Any = None) -> None:
        self.answer = answer
        self.sent: list[tuple[int | None, Any]] = []

    async def send(self, node_id: int | None, request: Any, **kwargs: Any) -> Any:
        self.sent.append((node_id, request))
        return self.answer


def protocol_with(connection: FakeConnection) -> ProtocolClient:
    admin = SimpleNamespace(_client=SimpleNamespace(send=connection.send))
    return ProtocolClient(admin)


OFFSETS_0 = TopicPartition("__consumer_offsets", 0)


def fetch_response(*partitions: tuple[TopicPartition, int, int, int, bytes]) -> Any:
    """A Fetch v11 answer: (partition, error, high watermark, log start, records) each."""
    topics: list[Any] = [
        (
            tp.topic,
            [
                (
                    tp.partition,
                    error_code,
                    high_watermark,
                    high_watermark,
                    log_start,
                    [],
                    -1,
                    records,
                )
            ],
        )
        for tp, error_code, high_watermark, log_start, records in partitions
    ]
    encoded = FetchResponse_v11(0, 0, 0, topics).encode()
    return FetchResponse_v11.decode(encoded)


def batch(base_offset: int, *records: tuple[bytes, bytes], headers: Any = ()) -> bytes:
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 16)
    for delta, (key, value) in enumerate(records):
        builder.append(delta, timestamp=0, key=key, value=value, headers=list(headers))
    built = bytearray(builder.build())
    struct.pack_into(">q", built, 0, base_offset)  # the batch's base offset, as the log sets it
    return bytes(built)


async def test_a_fetch_answers_each_records_offset_key_value_and_where_to_read_on() -> None:
    records = batch(5, (b"k5", b"v5"), (b"k6", b"v6"))
    answer = fetch_response((OFFSETS_0, 0, 9, 0, records))
    connection = FakeConnection(answer)

    fetched = await protocol_with(connection).fetch(3, {OFFSETS_0: 5}, 1 << 20)

    assert fetched == {
        OFFSETS_0: FetchedRecords(
            9,
            (FetchedRecord(5, b"k5", b"v5", ()), FetchedRecord(6, b"k6", b"v6", ())),
            next_offset=7,
        )
    }
    [(node_id, request)] = connection.sent
    assert node_id == 3
    assert request.topics == [("__consumer_offsets", [(0, 5, 1 << 20)])]


async def test_a_fetch_of_several_partitions_skips_the_records_before_each_offset() -> None:
    """A batch may begin before the offset asked for: its earlier records are not read."""
    retry_0, retry_1 = (
        TopicPartition("email.send.retry-1m", 0),
        TopicPartition("email.send.retry-1m", 1),
    )
    due = [("schema_version", b"1"), ("due_at", b"2026-11-25T09:31:00Z")]
    answer = fetch_response(
        (retry_0, 0, 3, 0, batch(0, (b"a", b"0"), (b"b", b"1"), (b"c", b"2"), headers=due)),
        (retry_1, 0, 0, 0, b""),
    )
    connection = FakeConnection(answer)

    fetched = await protocol_with(connection).fetch(2, {retry_0: 2, retry_1: 0}, 1024)

    assert fetched[retry_0].records == (FetchedRecord(2, b"c", b"2", tuple(due)),)
    assert fetched[retry_1] == FetchedRecords(0, (), next_offset=0)
    [(_, request)] = connection.sent
    assert request.topics == [("email.send.retry-1m", [(0, 2, 1024), (1, 0, 1024)])]


async def test_a_fetch_before_the_log_start_reads_on_from_it() -> None:
    answer = fetch_response((OFFSETS_0, OffsetOutOfRangeError.errno, 90, 40, b""))

    fetched = await protocol_with(FakeConnection(answer)).fetch(3, {OFFSETS_0: 7}, 100)

    assert fetched == {OFFSETS_0: FetchedRecords(90, (), next_offset=40)}


async def test_metadata_is_asked_for_the_topics_without_creating_them() -> None:
    answer = SimpleNamespace(to_object=lambda: {"brokers": [], "topics": []})
    connection = FakeConnection(answer)

    await protocol_with(connection).metadata(2, [TOPIC, f"{TOPIC}.dlq"])

    [(node_id, request)] = connection.sent
    prepared = request.prepare(METADATA_VERSIONS).to_object()
    assert node_id == 2
    assert prepared == {"topics": [TOPIC, f"{TOPIC}.dlq"], "allow_auto_topic_creation": False}


async def test_a_listing_asks_for_every_topic_creating_none() -> None:
    answer = SimpleNamespace(to_object=lambda: {"brokers": [], "topics": []})
    connection = FakeConnection(answer)

    await protocol_with(connection).metadata(2, None)

    [(_, request)] = connection.sent
    prepared = request.prepare(METADATA_VERSIONS)
    assert prepared.to_object() == {"topics": None, "allow_auto_topic_creation": False}
    assert prepared.encode().startswith(b"\xff\xff\xff\xff")  # a null array: every topic


async def test_the_admin_clients_group_calls_are_counted() -> None:
    """The count wraps the admin client's `_client.send`, which its group calls go through."""
    admin = AIOKafkaAdminClient(bootstrap_servers="127.0.0.1:9")
    assert isinstance(admin._client, AIOKafkaClient)
    connection = FakeConnection(SimpleNamespace(error_code=0, coordinator_id=1, topics=[]))
    admin._client.send = connection.send
    protocol = ProtocolClient(admin, counted=[admin])

    coordinator = await admin.find_coordinator("email-send-group")
    await admin.list_consumer_group_offsets("email-send-group", group_coordinator_id=coordinator)

    assert protocol.requests_sent == 2
    assert [type(request).__name__ for _, request in connection.sent] == [
        "FindCoordinatorRequest",
        "OffsetFetchRequest",
    ]
    await admin.close()


def one_broker_leading(partition: int) -> Any:
    """Metadata as a broker answers it: node 1 leads `partition` of the topic."""
    partitions = [(0, partition, 1, [1], [1])]
    return MetadataResponse_v1([(1, "127.0.0.1", 19092, None)], 1, [(0, TOPIC, False, partitions)])


async def test_the_consumers_offsets_are_counted_one_request_a_call() -> None:
    """The count wraps the consumer's `_client.send`, which `end_offsets` and
    `beginning_offsets` go through: one ListOffsets each to the partition's leader."""
    admin = AIOKafkaAdminClient(bootstrap_servers="127.0.0.1:9")
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")
    assert isinstance(consumer._client, AIOKafkaClient)

    async def bootstrap() -> None:  # as if a broker had answered the first Metadata
        consumer._client.cluster.update_metadata(one_broker_leading(0))

    consumer._client.bootstrap = bootstrap
    answer = SimpleNamespace(API_VERSION=1, topics=[(TOPIC, [(0, 0, -1, 42)])])
    connection = FakeConnection(answer)
    consumer._client.send = connection.send
    protocol = ProtocolClient(admin, counted=[consumer])
    await consumer.start()
    try:
        log_end = await consumer.end_offsets([TopicPartition(TOPIC, 0)])
        log_start = await consumer.beginning_offsets([TopicPartition(TOPIC, 0)])
    finally:
        await consumer.stop()
        await admin.close()

    assert log_end == log_start == {TopicPartition(TOPIC, 0): 42}
    assert protocol.requests_sent == 2
    assert [(node_id, type(request).__name__) for node_id, request in connection.sent] == [
        (1, "OffsetRequest"),
        (1, "OffsetRequest"),
    ]


async def test_a_metadata_refresh_is_counted() -> None:
    """The clients' metadata refreshes go around `send`, through `_metadata_update`: the
    background one every metadata_max_age_ms, and a consumer's `topics()`."""
    assert "self._metadata_update(" in inspect.getsource(AIOKafkaClient._md_synchronizer)
    assert list(inspect.signature(AIOKafkaClient._metadata_update).parameters) == [
        "self",
        "cluster_metadata",
        "topics",
    ]
    admin = AIOKafkaAdminClient(bootstrap_servers="127.0.0.1:9")
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")
    refreshed: list[Any] = []

    async def metadata_update(cluster_metadata: Any, topics: Any) -> bool:
        refreshed.append(topics)
        return True

    consumer._client._metadata_update = metadata_update
    protocol = ProtocolClient(admin, counted=[consumer])

    await consumer.topics()

    assert (refreshed, protocol.requests_sent) == ([None], 1)
    await consumer.stop()
    await admin.close()


async def test_a_send_with_no_connection_is_not_counted() -> None:
    """`send` raises NodeNotReadyError before it sends anything; a request that times out was
    sent."""

    async def no_connection(node_id: int, request: Any, **kwargs: Any) -> Any:
        raise NodeNotReadyError(f"node {node_id} is not ready")

    async def no_answer(node_id: int, request: Any, **kwargs: Any) -> Any:
        raise RequestTimedOutError()

    admin = SimpleNamespace(_client=SimpleNamespace(send=no_connection, _metadata_update=None))
    protocol = ProtocolClient(admin, counted=[admin])
    with pytest.raises(NodeNotReadyError):
        await protocol.metadata(2, [TOPIC])
    admin._client.send = no_answer
    protocol = ProtocolClient(admin, counted=[admin])
    with pytest.raises(RequestTimedOutError):
        await protocol.metadata(2, [TOPIC])

    assert protocol.requests_sent == 1


async def test_the_brokers_known_are_the_admin_clients() -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers="127.0.0.1:9")
    brokers = [(2, "127.0.0.1", 19094, None), (1, "127.0.0.1", 19092, None)]
    admin._client.cluster.update_metadata(MetadataResponse_v1(brokers, 1, []))

    assert sorted(ProtocolClient(admin).known_brokers()) == [1, 2]
    await admin.close()


def test_requests_are_sent_to_a_chosen_broker_as_relied_on() -> None:
    assert list(inspect.signature(AIOKafkaClient.send).parameters) == [
        "self",
        "node_id",
        "request",
        "group",
    ]


# Kafka 4.1.1's own bytes: OffsetFetchRequestData and OffsetFetchResponseData at version 8, as
# `MessageUtil.toByteBufferAccessor` of kafka-clients-4.1.1.jar writes them (a few lines of Java
# run once): the three groups, every partition (topics null); and an answer with email.send-0
# at 4, email.send-1 with no offset (-1), email.events-2 at 7 (leader epoch 3, metadata "m"),
# GROUP_ID_NOT_FOUND for the second group and GROUP_AUTHORIZATION_FAILED for the third.
KAFKAS_OFFSET_FETCH_V8 = bytes.fromhex(
    "0411656d61696c2d73656e642d67726f7570000013656d61696c2d7374617475732d67726f7570000012656d"
    "61696c2d72657472792d67726f757000000000"
)
KAFKAS_OFFSET_FETCH_ANSWER_V8 = bytes.fromhex(
    "000000000411656d61696c2d73656e642d67726f7570030b656d61696c2e73656e6403000000000000000000"
    "000004ffffffff0100000000000001ffffffffffffffffffffffff00000000000d656d61696c2e6576656e74"
    "730200000002000000000000000700000003026d0000000000000013656d61696c2d7374617475732d67726f"
    "75700100450012656d61696c2d72657472792d67726f757001001e0000"
)


def test_the_offset_fetch_is_the_bytes_kafka_itself_writes() -> None:
    groups = [GROUP, "email-status-group", "email-retry-group"]

    assert OffsetFetchOfGroups(groups).prepare(OFFSET_FETCH_VERSIONS).encode() == (
        KAFKAS_OFFSET_FETCH_V8
    )


def test_kafkas_own_offsets_answer_reads_as_each_groups_offsets_or_error() -> None:
    answer = fetched_offsets(OffsetFetchResponse_v8.decode(KAFKAS_OFFSET_FETCH_ANSWER_V8))

    assert answer[GROUP] == {TopicPartition(TOPIC, 0): 4, TopicPartition("email.events", 2): 7}
    assert answer["email-status-group"] == {}
    assert isinstance(answer["email-retry-group"], GroupAuthorizationFailedError)
