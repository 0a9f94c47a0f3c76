"""DescribeGroups v4 byte for byte as Kafka's protocol lays it out (DescribeGroupsRequest.json
and DescribeGroupsResponse.json), and a pin on aiokafka: when its own DescribeGroups reaches
v4, the console's module is no longer needed."""

from __future__ import annotations

import struct

import pytest
from aiokafka.errors import GroupAuthorizationFailedError
from aiokafka.protocol.admin import DescribeGroupsRequest

from services.console.describe_groups_v4 import (
    DescribedMember,
    DescribeGroupsResponse_v4,
    DescribeGroupsWithInstanceIds,
    described_group,
)

BROKER_VERSIONS = {15: (0, 5)}  # what Kafka 4 answers ApiVersions with for DescribeGroups


def string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    return struct.pack(">h", len(value)) + value.encode()


def blob(value: bytes) -> bytes:
    return struct.pack(">i", len(value)) + value


def member(member_id: str, instance_id: str | None, client_id: str) -> bytes:
    return (
        string(member_id)
        + string(instance_id)
        + string(client_id)
        + string("/10.0.0.1")
        + blob(b"subscription")
        + blob(b"assignment")
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


def test_the_answer_carries_each_members_instance_id() -> None:
    raw = response(
        0,
        member("worker-a-1f3c", "worker-a", "email-worker-h-101"),
        member("email-worker-h-102-77aa", None, "email-worker-h-102"),
    )

    group = described_group(DescribeGroupsResponse_v4.decode(raw))

    assert (group.state, group.protocol) == ("Stable", "roundrobin")
    assert group.members == (
        DescribedMember(
            "worker-a-1f3c", "worker-a", "email-worker-h-101", "/10.0.0.1", b"assignment"
        ),
        DescribedMember(
            "email-worker-h-102-77aa", None, "email-worker-h-102", "/10.0.0.1", b"assignment"
        ),
    )


def test_a_group_error_is_raised() -> None:
    raw = response(GroupAuthorizationFailedError.errno)

    with pytest.raises(GroupAuthorizationFailedError, match="email-send-group"):
        described_group(DescribeGroupsResponse_v4.decode(raw))
