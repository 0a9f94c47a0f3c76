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
  answered v4 since 2.4. `aiokafka.coordinator.protocol.ConsumerProtocolMemberAssignment`
  decodes each member's assignment, as `kafka-consumer-groups.sh` does.
- Fetch (`aiokafka.protocol.fetch.FetchRequest`, read with
  `aiokafka.record.memory_records.MemoryRecords`) of one partition of `__consumer_offsets` from
  an offset, once a look, for the group's generation (services/console/group_generation.py): a
  consumer assigned that partition would fetch it in the background all along instead.
- `AIOKafkaClient.send` and `AIOKafkaClient._metadata_update`, wrapped on the `_client` of the
  admin client and of the group-less consumer (whose public `beginning_offsets` and
  `end_offsets` read the offsets), count the requests the console sends: its load on Kafka,
  shown on the page and measured by `make bench`, whatever the number of pages open. aiokafka
  counts nothing. `send` carries every request but the clients' metadata refreshes, which
  `_metadata_update` sends: every 5 minutes, and after a broker stops answering or a
  partition's leader moves. A `send` that finds no connection (`NodeNotReadyError`) sends
  nothing and is not counted. A look on one broker counts 6.

Guards: tests/unit/console/test_aiokafka_protocol.py pins DescribeGroups v4 byte for byte and
fails once aiokafka's own DescribeGroups carries the instance id (then use it and delete that
part), and pins the attributes, signatures and layouts relied on here;
tests/integration/console/test_aiokafka_protocol.py counts requests against the real broker,
tests/integration/console/test_kafka_reader.py a look's, and
tests/integration/console/test_group_generation.py reads the Fetch's records.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import NodeNotReadyError, OffsetOutOfRangeError, for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.types import Array, Boolean, Bytes, Int16, Int32, Schema, String
from aiokafka.record.memory_records import MemoryRecords

DESCRIBE_GROUPS = 15  # the API key
READ_UNCOMMITTED = 0
FIRST_FETCH_WITH_LOG_START = 5  # the version from which Fetch answers the log start offset


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

    async def metadata(self, node_id: int, topics: list[str]) -> dict[str, Any]:
        """Metadata of `topics` from one broker, creating none: `brokers` (`node_id`, `host`,
        `port`, `rack`) and `topics` (`error_code`, `topic`, and `partitions` with each one's
        `partition`, `leader`, `replicas` and `isr`)."""
        request = MetadataRequest(topics, allow_auto_topic_creation=False)
        response = await self._client.send(node_id, request)
        metadata: dict[str, Any] = response.to_object()
        return metadata

    async def describe_group(self, node_id: int, group: str) -> DescribedGroup:
        """DescribeGroups v4 of one group, from its coordinator; raises the group's error."""
        response = await self._client.send(node_id, DescribeGroupsWithInstanceIds(group))
        return described_group(response)

    async def fetch(
        self, node_id: int, topic: str, partition: int, offset: int, max_bytes: int
    ) -> FetchedRecords:
        """One Fetch of a partition from `offset`, from its leader, without waiting for
        records: what there is up to `max_bytes`."""
        request = FetchRequest(
            max_wait_time=0, min_bytes=0, max_bytes=max_bytes, isolation_level=READ_UNCOMMITTED,
            topics=[(topic, [(partition, offset, max_bytes)])],
        )  # fmt: skip
        response = await self._client.send(node_id, request)
        [(_topic, [(_partition, error_code, high_watermark, *fields)])] = response.topics
        if error_code == OffsetOutOfRangeError.errno:
            # Compaction or retention removed the front of the log: read on from its start.
            log_start = fields[1] if response.API_VERSION >= FIRST_FETCH_WITH_LOG_START else 0
            return FetchedRecords(int(high_watermark), (), int(log_start))
        if error_code:
            raise for_code(error_code)(f"cannot read {topic}-{partition}")
        records: list[tuple[bytes | None, bytes | None]] = []
        next_offset = offset
        if fields[-1]:  # no records: None or empty, by version
            batches = MemoryRecords(fields[-1])
            while (batch := batches.next_batch()) is not None:
                if not batch.is_control_batch:
                    records.extend((record.key, record.value) for record in batch)
                next_offset = batch.next_offset
        return FetchedRecords(int(high_watermark), tuple(records), next_offset)


@dataclass(frozen=True)
class FetchedRecords:
    high_watermark: int
    records: tuple[tuple[bytes | None, bytes | None], ...]  # each data record's key and value
    next_offset: int  # where to read on: past the batches read, or the log start


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

    def __init__(self, group: str) -> None:
        self.group = group

    def build(self, request_struct_class: type[DescribeGroupsRequest_v4]) -> RequestStruct:
        return request_struct_class([self.group], False)


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


def described_group(response: DescribeGroupsResponse_v4) -> DescribedGroup:
    """The one group asked about; raises its error, if it has one."""
    [group] = response.to_object()["groups"]
    if group["error_code"]:
        raise for_code(group["error_code"])(f"cannot describe group {group['group']}")
    return DescribedGroup(
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


def assigned(member_assignment: bytes | None) -> tuple[tuple[str, int], ...]:
    """The (topic, partition) pairs of a consumer group member's assignment; none while the
    group rebalances."""
    if not member_assignment:
        return ()
    assignment = ConsumerProtocolMemberAssignment.decode(member_assignment)
    return tuple((tp.topic, tp.partition) for tp in assignment.partitions())
