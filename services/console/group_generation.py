"""The group's generation, read where the group coordinator keeps it: `__consumer_offsets`.

Kafka tells a classic group's generation only to its members (JoinGroup and SyncGroup answer
it; DescribeGroups does not). But each time a rebalance completes, the coordinator writes the
group's metadata (protocol, generation, leader, members) as a record to the partition of
`__consumer_offsets` that holds the group, the partition its offset commits go to and that the
coordinator leads. GenerationReader reads that partition from where it left off, one Fetch per
look, and keeps the newest generation: what this prints, record by record,

    kafka-console-consumer.sh --bootstrap-server localhost:9092 --topic __consumer_offsets \\
        --from-beginning --formatter org.apache.kafka.tools.consumer.GroupMetadataMessageFormatter

The record's layout is the coordinator's own (GroupMetadataKey v2; GroupMetadataValue v0 to
v4), not a client API: `generation_in` reads only its first fields, and
tests/integration/console/test_group_generation.py fails if the broker writes them otherwise.
The Fetch is one of the requests public aiokafka does not send: see
services/console/aiokafka_protocol.py.
"""

from __future__ import annotations

import struct

from aiokafka.errors import for_code
from aiokafka.structs import TopicPartition

from services.console.aiokafka_protocol import ProtocolClient

OFFSETS_TOPIC = "__consumer_offsets"
GROUP_METADATA_KEY_VERSION = 2  # 0 and 1 are offset commits; 3 and on, other kinds of group
FIRST_FLEXIBLE_VALUE_VERSION = 4  # compact strings from here on
FETCH_MAX_BYTES = 1 << 20
FETCHES_PER_LOOK = 8  # catching up on a long log takes a few looks rather than one long one


def offsets_partition(group: str, partitions: int) -> int:
    """The partition of __consumer_offsets that holds `group`: the coordinator's
    `Utils.abs(groupId.hashCode()) % partitions`, with Java's String.hashCode."""
    utf16 = group.encode("utf-16-be")
    code = 0
    for (unit,) in struct.iter_unpack(">H", utf16):
        code = (31 * code + unit) & 0xFFFFFFFF
    signed = code - (1 << 32) if code >= 1 << 31 else code
    return (0 if signed == -(1 << 31) else abs(signed)) % partitions


def generation_in(key: bytes | None, value: bytes | None, group: str) -> tuple[bool, int | None]:
    """(whether the record is `group`'s metadata, its generation or None if the group was
    deleted). Offset commits and other groups' records are (False, None)."""
    if key is None or len(key) < 4:
        return False, None
    key_version, length = struct.unpack_from(">hh", key)
    if key_version != GROUP_METADATA_KEY_VERSION or key[4 : 4 + length] != group.encode():
        return False, None
    if value is None:
        return True, None  # a tombstone: the group is gone
    (value_version,) = struct.unpack_from(">h", value)
    position = 2
    if value_version >= FIRST_FLEXIBLE_VALUE_VERSION:
        protocol_type_length, position = _unsigned_varint(value, position)
        position += protocol_type_length - 1  # a compact string stores its length plus one
    else:
        (protocol_type_length,) = struct.unpack_from(">h", value, position)
        position += 2 + protocol_type_length
    (generation,) = struct.unpack_from(">i", value, position)
    return True, generation


def _unsigned_varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


class GenerationReader:
    """The newest generation of one group, as its coordinator wrote it; None until the reader
    has caught up with the partition (or while the group has none)."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.generation: int | None = None
        self.caught_up = False
        self._partition: int | None = None
        self._position = 0  # the next offset to read

    async def read(self, kafka: ProtocolClient, coordinator: int) -> int | None:
        """Read on from the last position, through the coordinator: it leads the partition."""
        if self._partition is None:
            self._partition = await self._partition_of_group(kafka, coordinator)
        partition = TopicPartition(OFFSETS_TOPIC, self._partition)
        for _ in range(FETCHES_PER_LOOK):
            answer = await kafka.fetch(coordinator, {partition: self._position}, FETCH_MAX_BYTES)
            fetched = answer[partition]
            for record in fetched.records:
                is_ours, generation = generation_in(record.key, record.value, self.group)
                if is_ours:
                    self.generation = generation
            self._position = fetched.next_offset
            self.caught_up = self._position >= fetched.high_watermark
            if self.caught_up:
                break
        return self.generation if self.caught_up else None

    async def _partition_of_group(self, kafka: ProtocolClient, coordinator: int) -> int:
        [topic] = (await kafka.metadata(coordinator, [OFFSETS_TOPIC]))["topics"]
        if topic["error_code"]:
            raise for_code(topic["error_code"])(f"cannot describe {OFFSETS_TOPIC}")
        return offsets_partition(self.group, len(topic["partitions"]))
