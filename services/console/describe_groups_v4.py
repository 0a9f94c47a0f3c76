"""DescribeGroups v4, in place of aiokafka's `describe_consumer_groups` (v0 to v3): the same
request, one version on, whose answer carries each member's group instance id (KIP-345).

It relies on aiokafka's protocol building blocks (`Request`, `RequestStruct`, `Response` and
the field types) and on the admin client's connection (`_client.send`, as the reader's
ListOffsets do), which negotiates the version with the broker as for any request. What it gains:
the console can tell a static member (WORKER_INSTANCE_ID) from a dynamic one, and so a static
member coming back from an ordinary leave and join. Kafka has answered v4 since 2.4.
tests/unit/console/test_describe_groups_v4.py pins the bytes, and fails once aiokafka has a
version of its own that carries the instance id: then use that and delete this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.errors import for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Bytes, Int16, Int32, Schema, String

API_KEY = 15  # DescribeGroups


class DescribeGroupsResponse_v4(Response):  # type: ignore[misc]
    API_KEY = API_KEY
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
    API_KEY = API_KEY
    API_VERSION = 4
    RESPONSE_TYPE = DescribeGroupsResponse_v4
    SCHEMA = Schema(("groups", Array(String("utf-8"))), ("include_authorized_operations", Boolean))


class DescribeGroupsWithInstanceIds(Request[DescribeGroupsRequest_v4]):  # type: ignore[misc]
    API_KEY = API_KEY

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
    assignment: bytes


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
                assignment=member["member_assignment"] or b"",
            )
            for member in group["members"]
        ),
    )
