"""aiokafka's internals, in this one module: the console's requests that aiokafka's public API
does not send, sent over the admin client's connection, and the count of the requests the
console's clients send.

What it relies on, and why public aiokafka does not do:

- `AIOKafkaAdminClient._client`, its `AIOKafkaClient`: `send(node_id, request)` sends a request
  to the broker the console chooses, and `cluster.brokers()` lists the brokers it knows. The
  admin client's public calls ask a broker of their own choosing, or do not exist (below).
- Metadata (`aiokafka.protocol.metadata.MetadataRequest`) of the two topics, without creating a
  missing one, from the broker that answered last, else the next: the live brokers and each
  partition's leader, replicas and in-sync replicas in one request. `describe_topics` asks a
  random broker (one that is down fails the look) and lets the broker auto-create a missing
  topic, while the console changes nothing; `describe_cluster` is a second request, about every
  topic; a consumer's `partitions_for_topic` knows neither replicas nor ISR. One request a
  look where the public calls take two. The same request tells the partition count of
  `__consumer_offsets`.
- DescribeGroups v4, built from aiokafka's protocol building blocks (`Request`, `RequestStruct`,
  `Response` and the field types of `aiokafka.protocol`): `describe_consumer_groups` stops at
  v3, whose answer has no group instance ids (KIP-345); without them the console cannot tell a
  static member (WORKER_INSTANCE_ID) coming back from an ordinary leave and join. Kafka has
  answered v4 since 2.4. One request asks about every group a broker coordinates.
  `aiokafka.coordinator.protocol.ConsumerProtocolMemberAssignment` decodes each member's
  assignment, as `kafka-consumer-groups.sh` does.
- OffsetFetch v8 (KIP-709, answered since Kafka 3.0), built the same way from the flexible
  field types (`CompactArray`, `CompactString`, `TaggedFields`): the CURRENT-OFFSETs of several
  groups in one request to their coordinator. aiokafka's `list_consumer_group_offsets` sends
  v3 at most, one group a request: three requests a look where this sends one.
- Fetch (`aiokafka.protocol.fetch.FetchRequest`, read with
  `aiokafka.record.memory_records.MemoryRecords`) from chosen offsets, without joining a group
  or being assigned anything: of one partition of `__consumer_offsets`, once a look, for the
  group's generation (services/console/group_generation.py); and of the retry topics'
  partitions from the retry group's CURRENT-OFFSET, for the `due_at` headers of the records
  waiting there. A consumer assigned those partitions would fetch them in the background all
  along instead.
- `AIOKafkaClient.send` and `AIOKafkaClient._metadata_update`, wrapped on the `_client` of the
  admin client and of the group-less consumer (whose public `beginning_offsets` and
  `end_offsets` read the offsets), count the requests the console sends: its load on Kafka,
  shown on the page and measured by `make bench`, whatever the number of pages open. aiokafka
  counts nothing. `send` carries every request but the clients' metadata refreshes, which
  `_metadata_update` sends: every 5 minutes, and after a broker stops answering or a
  partition's leader moves. A `send` that finds no connection (`NodeNotReadyError`) sends
  nothing and is not counted. A look on one broker counts 6 (7 when the records waiting in the
  retry topics changed).

Guards: tests/unit/console/test_aiokafka_protocol.py pins DescribeGroups v4 and OffsetFetch v8
byte for byte and fails once aiokafka's own DescribeGroups carries the instance id or its
OffsetFetch asks for several groups (then use them and delete those parts), and pins the
attributes, signatures and layouts relied on here;
tests/integration/console/test_aiokafka_protocol.py counts requests against the real broker,
tests/integration/console/test_kafka_reader.py a look's, and
tests/integration/console/test_group_generation.py reads the Fetch's records.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import (
    GroupIdNotFound,
    KafkaError,
    NodeNotReadyError,
    OffsetOutOfRangeError,
    for_code,
)
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.types import (
    Array,
    Boolean,
    Bytes,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    String,
    TaggedFields,
)
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

DESCRIBE_GROUPS = 15  # the API keys
OFFSET_FETCH = 9
READ_UNCOMMITTED = 0
FIRST_FETCH_WITH_LOG_START = 5  # the version from which Fetch answers the log start offset
NO_OFFSET = -1


class ProtocolClient:
    """Requests to a chosen broker over the admin client's connection, and the count of every
    request the `counted` clients send (the console's: its admin client and its consumer)."""

    def __init__(
        self,
        admin: AIOKafkaAdminClient,
        counted: Iterable[AIOKafkaAdminClient | AIOKafkaConsumer] = (),
    ) -> None:
        self._client = admin._client
        self.requests_sent = 0
        for client in counted:
            self._count_requests(client._client)

    def _count_requests(self, client: Any) -> None:
        send, metadata_update = client.send, client._metadata_update

        async def counted_send(*args: Any, **kwargs: Any) -> Any:
            self.requests_sent += 1
            try:
                return await send(*args, **kwargs)
            except NodeNotReadyError:
                self.requests_sent -= 1  # no connection to the broker: nothing went out
                raise

        async def counted_metadata_update(*args: Any, **kwargs: Any) -> Any:
            self.requests_sent += 1
            return await metadata_update(*args, **kwargs)

        client.send = counted_send
        client._metadata_update = counted_metadata_update

    def known_brokers(self) -> list[int]:
        """The node ids of the brokers the admin client knows of."""
        return [broker.nodeId for broker in self._client.cluster.brokers()]

    async def metadata(self, node_id: int, topics: list[str] | None) -> dict[str, Any]:
        """Metadata of `topics` (None: of every topic) from one broker, creating none:
        `brokers` (`node_id`, `host`, `port`, `rack`) and `topics` (`error_code`, `topic`, and
        `partitions` with each one's `partition`, `leader`, `replicas` and `isr`)."""
        request = MetadataRequest(topics, allow_auto_topic_creation=False)
        response = await self._client.send(node_id, request)
        metadata: dict[str, Any] = response.to_object()
        return metadata

    async def describe_groups(
        self, node_id: int, groups: list[str]
    ) -> dict[str, DescribedGroup | KafkaError]:
        """DescribeGroups v4 of groups one broker coordinates: each group, or its error."""
        response = await self._client.send(node_id, DescribeGroupsWithInstanceIds(groups))
        return described_groups(response)

    async def committed_offsets(
        self, node_id: int, groups: list[str]
    ) -> dict[str, dict[TopicPartition, int] | KafkaError]:
        """OffsetFetch v8 of groups one broker coordinates: each group's CURRENT-OFFSETs (of
        every partition it has committed one of), or its error."""
        response = await self._client.send(node_id, OffsetFetchOfGroups(groups))
        return fetched_offsets(response)

    async def fetch(
        self, node_id: int, positions: Mapping[TopicPartition, int], max_bytes: int
    ) -> dict[TopicPartition, FetchedRecords]:
        """One Fetch of partitions that one broker leads, each from its offset, without
        waiting for records: what there is, up to `max_bytes` a partition (the first batch
        whole, however large). Raises the first partition's error."""
        by_topic: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for tp, offset in positions.items():
            by_topic[tp.topic].append((tp.partition, offset, max_bytes))
        request = FetchRequest(
            max_wait_time=0, min_bytes=0, max_bytes=max_bytes * len(positions),
            isolation_level=READ_UNCOMMITTED, topics=list(by_topic.items()),
        )  # fmt: skip
        response = await self._client.send(node_id, request)
        fetched = {}
        for topic, partitions in response.topics:
            for partition, error_code, high_watermark, *fields in partitions:
                tp = TopicPartition(topic, partition)
                fetched[tp] = fetched_records(
                    tp, positions[tp], error_code, high_watermark, fields, response.API_VERSION
                )
        return fetched


@dataclass(frozen=True)
class FetchedRecord:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True)
class FetchedRecords:
    high_watermark: int
    records: tuple[FetchedRecord, ...]  # the data records from the offset asked for on
    next_offset: int  # where to read on: past the batches read, or the log start


def fetched_records(
    tp: TopicPartition,
    offset: int,
    error_code: int,
    high_watermark: int,
    fields: list[Any],
    api_version: int,
) -> FetchedRecords:
    """One partition of a Fetch's answer: `fields` are those after the high watermark, the
    record batches last."""
    if error_code == OffsetOutOfRangeError.errno:
        # Compaction or retention removed the front of the log: read on from its start.
        log_start = fields[1] if api_version >= FIRST_FETCH_WITH_LOG_START else 0
        return FetchedRecords(int(high_watermark), (), int(log_start))
    if error_code:
        raise for_code(error_code)(f"cannot read {tp.topic}-{tp.partition}")
    records: list[FetchedRecord] = []
    next_offset = offset
    if fields[-1]:  # no records: None or empty, by version
        batches = MemoryRecords(fields[-1])
        while (batch := batches.next_batch()) is not None:
            if not batch.is_control_batch:
                records.extend(
                    FetchedRecord(record.offset, record.key, record.value, tuple(record.headers))
                    for record in batch
                    if record.offset >= offset  # a batch may begin before the offset asked for
                )
            next_offset = batch.next_offset
    return FetchedRecords(int(high_watermark), tuple(records), next_offset)


class DescribeGroupsResponse_v4(Response):  # type: ignore[misc]
    API_KEY = DESCRIBE_GROUPS
    API_VERSION = 4
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "groups",
            Array(
                ("error_code", Int16),
                ("group", String("utf-8")),
                ("state", String("utf-8")),
                ("protocol_type", String("utf-8")),
                ("protocol", String("utf-8")),
                (
                    "members",
                    Array(
                        ("member_id", String("utf-8")),
                        ("group_instance_id", String("utf-8")),  # null for a dynamic member
                        ("client_id", String("utf-8")),
                        ("client_host", String("utf-8")),
                        ("member_metadata", Bytes),
                        ("member_assignment", Bytes),
                    ),
                ),
                ("authorized_operations", Int32),
            ),
        ),
    )


class DescribeGroupsRequest_v4(RequestStruct):  # type: ignore[misc]
    API_KEY = DESCRIBE_GROUPS
    API_VERSION = 4
    RESPONSE_TYPE = DescribeGroupsResponse_v4
    SCHEMA = Schema(("groups", Array(String("utf-8"))), ("include_authorized_operations", Boolean))


class DescribeGroupsWithInstanceIds(Request[DescribeGroupsRequest_v4]):  # type: ignore[misc]
    API_KEY = DESCRIBE_GROUPS

    def __init__(self, groups: list[str]) -> None:
        self.groups = groups

    def build(self, request_struct_class: type[DescribeGroupsRequest_v4]) -> RequestStruct:
        return request_struct_class(self.groups, False)


@dataclass(frozen=True)
class DescribedMember:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    assignment: tuple[tuple[str, int], ...]  # the (topic, partition) pairs assigned to it


@dataclass(frozen=True)
class DescribedGroup:
    state: str
    protocol: str  # the partition assignor the members agreed on, as `roundrobin`
    members: tuple[DescribedMember, ...]


def described_groups(response: DescribeGroupsResponse_v4) -> dict[str, DescribedGroup | KafkaError]:
    """Each group asked about, or its error."""
    answer: dict[str, DescribedGroup | KafkaError] = {}
    for group in response.to_object()["groups"]:
        if group["error_code"]:
            answer[group["group"]] = for_code(group["error_code"])(
                f"cannot describe group {group['group']}"
            )
            continue
        answer[group["group"]] = DescribedGroup(
            state=group["state"],
            protocol=group["protocol"],
            members=tuple(
                DescribedMember(
                    member_id=member["member_id"],
                    group_instance_id=member["group_instance_id"],
                    client_id=member["client_id"],
                    client_host=member["client_host"],
                    assignment=assigned(member["member_assignment"]),
                )
                for member in group["members"]
            ),
        )
    return answer


def assigned(member_assignment: bytes | None) -> tuple[tuple[str, int], ...]:
    """The (topic, partition) pairs of a consumer group member's assignment; none while the
    group rebalances."""
    if not member_assignment:
        return ()
    assignment = ConsumerProtocolMemberAssignment.decode(member_assignment)
    return tuple((tp.topic, tp.partition) for tp in assignment.partitions())


class OffsetFetchResponse_v8(Response):  # type: ignore[misc]
    API_KEY = OFFSET_FETCH
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "groups",
            CompactArray(
                ("group", CompactString("utf-8")),
                (
                    "topics",
                    CompactArray(
                        ("topic", CompactString("utf-8")),
                        (
                            "partitions",
                            CompactArray(
                                ("partition", Int32),
                                ("committed_offset", Int64),
                                ("committed_leader_epoch", Int32),
                                ("metadata", CompactString("utf-8")),
                                ("error_code", Int16),
                                ("tags", TaggedFields),
                            ),
                        ),
                        ("tags", TaggedFields),
                    ),
                ),
                ("error_code", Int16),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class OffsetFetchRequest_v8(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = OFFSET_FETCH
    API_VERSION = 8
    RESPONSE_TYPE = OffsetFetchResponse_v8
    SCHEMA = Schema(
        (
            "groups",
            CompactArray(
                ("group", CompactString("utf-8")),
                (
                    "topics",  # null: every partition the group has committed an offset of
                    CompactArray(
                        ("topic", CompactString("utf-8")),
                        ("partitions", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


class OffsetFetchOfGroups(Request[OffsetFetchRequest_v8]):  # type: ignore[misc]
    API_KEY = OFFSET_FETCH

    def __init__(self, groups: list[str]) -> None:
        self.groups = groups

    def build(self, request_struct_class: type[OffsetFetchRequest_v8]) -> RequestStruct:
        return request_struct_class([(group, None, {}) for group in self.groups], False, {})


def fetched_offsets(
    response: OffsetFetchResponse_v8,
) -> dict[str, dict[TopicPartition, int] | KafkaError]:
    """Each group's committed offsets, or its error; a group that does not exist (yet) has
    committed none."""
    answer: dict[str, dict[TopicPartition, int] | KafkaError] = {}
    for group in response.to_object()["groups"]:
        error_code = group["error_code"]
        if error_code and error_code != GroupIdNotFound.errno:
            answer[group["group"]] = for_code(error_code)(
                f"cannot read the offsets of group {group['group']}"
            )
            continue
        answer[group["group"]] = {
            TopicPartition(topic["topic"], partition["partition"]): partition["committed_offset"]
            for topic in group["topics"]
            for partition in topic["partitions"]
            if not partition["error_code"] and partition["committed_offset"] != NO_OFFSET
        }
    return answer
