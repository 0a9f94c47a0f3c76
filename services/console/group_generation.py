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
The Fetch goes over the admin client's connection, as the reader's other requests do.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import OffsetOutOfRangeError, for_code
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.record.memory_records import MemoryRecords

OFFSETS_TOPIC = "__consumer_offsets"
GROUP_METADATA_KEY_VERSION = 2  # 0 and 1 are offset commits; 3 and on, other kinds of group
FIRST_FLEXIBLE_VALUE_VERSION = 4  # compact strings from here on
FETCH_MAX_BYTES = 1 << 20
FETCHES_PER_LOOK = 8  # catching up on a long log takes a few looks rather than one long one
READ_UNCOMMITTED = 0

Send = Callable[[int, Any], Awaitable[Any]]


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

    async def read(self, send: Send, coordinator: int) -> int | None:
        """Read on from the last position, through the coordinator: it leads the partition."""
        if self._partition is None:
            self._partition = await self._partition_of_group(send, coordinator)
        for _ in range(FETCHES_PER_LOOK):
            high_watermark = await self._fetch(send, coordinator, self._partition)
            self.caught_up = self._position >= high_watermark
            if self.caught_up:
                break
        return self.generation if self.caught_up else None

    async def _partition_of_group(self, send: Send, coordinator: int) -> int:
        request = MetadataRequest([OFFSETS_TOPIC], allow_auto_topic_creation=False)
        [topic] = (await send(coordinator, request)).to_object()["topics"]
        if topic["error_code"]:
            raise for_code(topic["error_code"])(f"cannot describe {OFFSETS_TOPIC}")
        return offsets_partition(self.group, len(topic["partitions"]))

    async def _fetch(self, send: Send, coordinator: int, partition: int) -> int:
        """One Fetch from the position on; the partition's high watermark."""
        request = FetchRequest(
            max_wait_time=0, min_bytes=0, max_bytes=FETCH_MAX_BYTES,
            isolation_level=READ_UNCOMMITTED,
            topics=[(OFFSETS_TOPIC, [(partition, self._position, FETCH_MAX_BYTES)])],
        )  # fmt: skip
        response = await send(coordinator, request)
        [(_topic, [(_partition, error_code, high_watermark, *fields)])] = response.topics
        if error_code == OffsetOutOfRangeError.errno:
            # Compaction or retention removed the front of the log: its start, from v5 on.
            self._position = fields[1] if response.API_VERSION >= 5 else 0
            return int(high_watermark)
        if error_code:
            raise for_code(error_code)(f"cannot read {OFFSETS_TOPIC}-{partition}")
        if fields[-1]:  # no records: None or empty, by version
            self._read_records(MemoryRecords(fields[-1]))
        return int(high_watermark)

    def _read_records(self, records: Any) -> None:
        while (batch := records.next_batch()) is not None:
            if not batch.is_control_batch:
                for record in batch:
                    is_ours, generation = generation_in(record.key, record.value, self.group)
                    if is_ours:
                        self.generation = generation
            self._position = batch.next_offset
