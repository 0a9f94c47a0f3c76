"""The pure parts of reading the group's generation: which partition of __consumer_offsets holds a
group, and the generation in the coordinator's group-metadata record. The real broker's records
are read in tests/integration/console/test_group_generation.py."""

from __future__ import annotations

import struct

import pytest

from services.console.group_generation import generation_in, offsets_partition


# Java's "...".hashCode() and Kafka's Utils.abs(hash) % 50, printed by jshell on Kafka 4.1.1.
@pytest.mark.parametrize(
    ("group", "partition"),
    [
        ("email-send-group", 15),  # hashCode -264365365
        ("group-x", 20),
        ("é-ünïcode-𝄞", 47),  # a surrogate pair: Java hashes UTF-16 code units
        ("polygenelubricants", 0),  # hashCode Integer.MIN_VALUE, which Utils.abs maps to 0
        ("", 0),
        ("console.members.abcdef12", 2),
    ],
)
def test_the_partition_of_a_group_is_the_coordinators(group: str, partition: int) -> None:
    assert offsets_partition(group, 50) == partition


def group_key(group: str, version: int = 2) -> bytes:
    encoded = group.encode()
    return struct.pack(">hh", version, len(encoded)) + encoded


def value_v3(generation: int) -> bytes:
    """GroupMetadataValue v3: int16 version, STRING protocol_type, INT32 generation, ..."""
    return struct.pack(">hh", 3, 8) + b"consumer" + struct.pack(">i", generation) + b"\xff\xff"


def value_v4(generation: int, protocol_type: bytes = b"consumer") -> bytes:
    """v4, flexible: the protocol type is a COMPACT_STRING (unsigned varint of length + 1)."""
    length = len(protocol_type) + 1
    varint = bytearray()
    while length >= 0x80:
        varint.append((length & 0x7F) | 0x80)
        length >>= 7
    varint.append(length)
    return struct.pack(">h", 4) + bytes(varint) + protocol_type + struct.pack(">i", generation)


def test_the_generation_of_the_group_is_read_from_either_layout() -> None:
    assert generation_in(group_key("g"), value_v3(7), "g") == (True, 7)
    assert generation_in(group_key("g"), value_v4(12), "g") == (True, 12)
    # A protocol type of 200 bytes takes a varint of two bytes.
    assert generation_in(group_key("g"), value_v4(3, b"x" * 200), "g") == (True, 3)


def test_a_tombstone_says_the_group_is_gone() -> None:
    assert generation_in(group_key("g"), None, "g") == (True, None)


def test_offset_commits_and_other_groups_are_not_the_groups_metadata() -> None:
    offset_commit_key = group_key("g", version=1) + struct.pack(">h", 1) + b"t" + b"\0\0\0\0"
    assert generation_in(offset_commit_key, b"\0\3", "g") == (False, None)
    assert generation_in(group_key("g2"), value_v4(5), "g") == (False, None)
    assert generation_in(group_key("g", version=3), value_v4(5), "g") == (False, None)
    assert generation_in(None, None, "g") == (False, None)
