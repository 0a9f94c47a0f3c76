"""The aiokafka internals the console relies on (services/console/aiokafka_protocol.py), pinned:
DescribeGroups v4 byte for byte as Kafka's protocol lays it out (DescribeGroupsRequest.json and
DescribeGroupsResponse.json), the layouts of aiokafka's Fetch and Metadata it reads, the client
attributes it sends and counts through (the admin client's and the consumer's public calls go
through them), and a pin on aiokafka: when its own DescribeGroups reaches v4, that part of the
module is no longer needed."""

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
from aiokafka.protocol.fetch import FetchResponse_v11
from aiokafka.protocol.metadata import MetadataResponse_v1
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import TopicPartition

from services.console.aiokafka_protocol import (
    DescribedMember,
    DescribeGroupsResponse_v4,
    DescribeGroupsWithInstanceIds,
    FetchedRecords,
    ProtocolClient,
    described_group,
)

BROKER_VERSIONS = {15: (0, 5)}  # what Kafka 4 answers ApiVersions with for DescribeGroups
METADATA_VERSIONS = {3: (0, 12)}
TOPIC = "email.send"


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


def response(error_code: int, *members: bytes) -> bytes:
    return (
        struct.pack(">i", 0)  # throttle_time_ms
        + struct.pack(">i", 1)  # one group
        + struct.pack(">h", error_code)
        + string("email-send-group")
        + string("Stable")
        + string("consumer")
        + string("roundrobin")
        + struct.pack(">i", len(members))
        + b"".join(members)
        + struct.pack(">i", -(2**31))  # authorized_operations: not asked for
    )


def test_aiokafka_still_stops_at_v3_without_instance_ids() -> None:
    assert DescribeGroupsRequest(["g"]).prepare(BROKER_VERSIONS).API_VERSION == 3


def test_the_request_is_v4_for_one_group_without_authorized_operations() -> None:
    request = DescribeGroupsWithInstanceIds("email-send-group").prepare(BROKER_VERSIONS)

    assert (request.API_KEY, request.API_VERSION) == (15, 4)
    assert request.encode() == struct.pack(">i", 1) + string("email-send-group") + b"\x00"


def test_the_answer_carries_each_members_instance_id_and_partitions() -> None:
    raw = response(
        0,
        member("worker-a-1f3c", "worker-a", "email-worker-h-101", assignment(0, 2)),
        member("email-worker-h-102-77aa", None, "email-worker-h-102", b""),
    )

    group = described_group(DescribeGroupsResponse_v4.decode(raw))

    assert (group.state, group.protocol) == ("Stable", "roundrobin")
    assert group.members == (
        DescribedMember(
            "worker-a-1f3c", "worker-a", "email-worker-h-101", "/10.0.0.1", ((TOPIC, 0), (TOPIC, 2))
        ),
        DescribedMember("email-worker-h-102-77aa", None, "email-worker-h-102", "/10.0.0.1", ()),
    )


def test_a_group_error_is_raised() -> None:
    raw = response(GroupAuthorizationFailedError.errno)

    with pytest.raises(GroupAuthorizationFailedError, match="email-send-group"):
        described_group(DescribeGroupsResponse_v4.decode(raw))


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


def fetch_response(error_code: int, high_watermark: int, log_start: int, records: bytes) -> Any:
    partition: tuple[Any, ...] = (
        0, error_code, high_watermark, high_watermark, log_start, [], -1, records,
    )  # fmt: skip
    encoded = FetchResponse_v11(0, 0, 0, [("__consumer_offsets", [partition])]).encode()
    return FetchResponse_v11.decode(encoded)


def batch(base_offset: int, *records: tuple[bytes, bytes]) -> bytes:
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 16)
    for delta, (key, value) in enumerate(records):
        builder.append(delta, timestamp=0, key=key, value=value, headers=[])
    built = bytearray(builder.build())
    struct.pack_into(">q", built, 0, base_offset)  # the batch's base offset, as the log sets it
    return bytes(built)


async def test_a_fetch_answers_each_records_key_and_value_and_where_to_read_on() -> None:
    records = batch(5, (b"k5", b"v5"), (b"k6", b"v6"))
    connection = FakeConnection(fetch_response(0, high_watermark=9, log_start=0, records=records))

    fetched = await protocol_with(connection).fetch(3, "__consumer_offsets", 0, 5, 1 << 20)

    assert fetched == FetchedRecords(9, ((b"k5", b"v5"), (b"k6", b"v6")), next_offset=7)
    [(node_id, request)] = connection.sent
    assert node_id == 3
    assert request.topics == [("__consumer_offsets", [(0, 5, 1 << 20)])]


async def test_a_fetch_before_the_log_start_reads_on_from_it() -> None:
    answer = fetch_response(
        OffsetOutOfRangeError.errno, high_watermark=90, log_start=40, records=b""
    )

    fetched = await protocol_with(FakeConnection(answer)).fetch(3, "__consumer_offsets", 0, 7, 100)

    assert fetched == FetchedRecords(90, (), next_offset=40)


async def test_metadata_is_asked_for_the_topics_without_creating_them() -> None:
    answer = SimpleNamespace(to_object=lambda: {"brokers": [], "topics": []})
    connection = FakeConnection(answer)

    await protocol_with(connection).metadata(2, [TOPIC, f"{TOPIC}.dlq"])

    [(node_id, request)] = connection.sent
    prepared = request.prepare(METADATA_VERSIONS).to_object()
    assert node_id == 2
    assert prepared == {"topics": [TOPIC, f"{TOPIC}.dlq"], "allow_auto_topic_creation": False}


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
