"""Where a local cluster's nodes listen, what its clients are told, and how its health reads."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deploy.local.cluster_plan import (
    ClusterNode,
    PartitionReplicas,
    QuorumVoter,
    bootstrap_list,
    cluster_client_settings,
    out_of_sync,
    parse_quorum_replication,
    partitions_of,
    plan_cluster,
    quorum_lost,
    quorum_voters,
)
from deploy.local.errors import StackError
from deploy.local.settings import LocalSettings

# `kafka-metadata-quorum.sh describe --replication` on a three-node cluster, tabs and all.
QUORUM_REPLICATION = (
    "NodeId\tDirectoryId           \tLogEndOffset\tLag\tLastFetchTimestamp\t"
    "LastCaughtUpTimestamp\tStatus  \t\n"
    "1     \tAAAAAAAAAAAAAAAAAAAAAA\t36          \t0  \t1796535655464     \t"
    "1796535655464        \tLeader  \t\n"
    "2     \tAAAAAAAAAAAAAAAAAAAAAA\t36          \t0  \t1796535655134     \t"
    "1796535655134        \tFollower\t\n"
    "3     \tAAAAAAAAAAAAAAAAAAAAAA\t31          \t5  \t1796535655135     \t"
    "1796535655135        \tFollower\t\n"
)


def test_nodes_take_the_ports_after_the_first_in_pairs() -> None:
    nodes = plan_cluster("localhost:9092", controller_port=9093, brokers=3)

    assert nodes == [
        ClusterNode(1, "localhost", 9092, 9093),
        ClusterNode(2, "localhost", 9094, 9095),
        ClusterNode(3, "localhost", 9096, 9097),
    ]
    assert [node.name for node in nodes] == ["kafka-1", "kafka-2", "kafka-3"]
    assert bootstrap_list(nodes) == "localhost:9092,localhost:9094,localhost:9096"
    assert quorum_voters(nodes) == "1@localhost:9093,2@localhost:9095,3@localhost:9097"


def test_a_server_listed_for_each_node_is_used_as_it_is() -> None:
    nodes = plan_cluster("127.0.0.1:19092, 127.0.0.1:29092,127.0.0.1:39092", 9093, brokers=3)

    assert [node.address for node in nodes] == [
        "127.0.0.1:19092",
        "127.0.0.1:29092",
        "127.0.0.1:39092",
    ]
    assert [node.controller_port for node in nodes] == [9093, 9095, 9097]


def test_two_servers_for_three_nodes_are_refused() -> None:
    with pytest.raises(StackError, match="lists 2 servers"):
        plan_cluster("localhost:9092,localhost:9094", 9093, brokers=3)


@pytest.mark.parametrize(("first", "controller"), [(9092, 9094), (9092, 9092), (65532, 65533)])
def test_ports_that_clash_or_run_out_are_refused(first: int, controller: int) -> None:
    with pytest.raises(StackError, match="KAFKA_CONTROLLER_PORT"):
        plan_cluster(f"localhost:{first}", controller, brokers=3)


def test_a_cluster_tells_its_clients_every_node_and_three_replicas() -> None:
    settings = LocalSettings(_env_file=None, kafka_brokers=3)

    clients = cluster_client_settings(settings)

    assert clients.kafka_bootstrap_servers == "localhost:9092,localhost:9094,localhost:9096"
    assert (clients.topic_replication_factor, clients.topic_min_insync_replicas) == (3, 2)
    assert clients.api_produce_timeout_seconds == 10  # longer than a leader's failover


def test_settings_given_on_purpose_are_kept() -> None:
    settings = LocalSettings(
        _env_file=None, kafka_brokers=3, topic_replication_factor=2, topic_min_insync_replicas=1,
        api_produce_timeout_seconds=4,
    )  # fmt: skip

    clients = cluster_client_settings(settings)

    assert (clients.topic_replication_factor, clients.topic_min_insync_replicas) == (2, 1)
    assert clients.api_produce_timeout_seconds == 4


def test_one_broker_changes_nothing() -> None:
    settings = LocalSettings(_env_file=None)

    assert cluster_client_settings(settings) is settings
    assert (settings.topic_replication_factor, settings.topic_min_insync_replicas) == (1, None)
    assert settings.api_produce_timeout_seconds == 5


def test_two_brokers_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BROKERS", "2")

    with pytest.raises(ValidationError, match=r"expected 1 .* or 3"):
        LocalSettings(_env_file=None)


def partition(leader: int, replicas: list[int], isr: list[int]) -> dict[str, object]:
    return {"partition": 0, "leader": leader, "replicas": replicas, "isr": isr}


def test_a_partition_is_in_sync_when_its_isr_holds_every_replica() -> None:
    described = [
        {"topic": "whole", "partitions": [partition(1, [1, 2, 3], [2, 3, 1])]},
        {"topic": "follower-behind", "partitions": [partition(1, [1, 2, 3], [1, 3])]},
        {"topic": "leaderless", "partitions": [partition(-1, [1, 2, 3], [1, 2, 3])]},
        {"topic": "one-replica", "partitions": [partition(2, [2], [2])]},
    ]

    lagging = out_of_sync(partitions_of(described))

    assert [p.topic for p in lagging] == ["follower-behind", "leaderless"]
    assert str(lagging[0]) == "follower-behind-0 (leader 1, replicas [1, 2, 3], ISR [1, 3])"


def test_partitions_keep_what_the_metadata_says() -> None:
    [only] = partitions_of([{"topic": "t", "partitions": [partition(3, [3, 1, 2], [3, 1])]}])

    assert only == PartitionReplicas("t", 0, leader=3, replicas=(3, 1, 2), isr=(3, 1))


def test_the_quorum_table_is_read_by_its_header() -> None:
    assert parse_quorum_replication(QUORUM_REPLICATION) == [
        QuorumVoter(1, log_end_offset=36, lag=0, status="Leader"),
        QuorumVoter(2, log_end_offset=36, lag=0, status="Follower"),
        QuorumVoter(3, log_end_offset=31, lag=5, status="Follower"),
    ]


def test_no_quorum_table_reads_as_no_voters() -> None:
    assert parse_quorum_replication("Error: TimeoutException\n") == []


@pytest.mark.parametrize(("running", "lost"), [(3, False), (2, False), (1, True), (0, True)])
def test_a_quorum_of_three_is_lost_with_one_node_left(running: int, lost: bool) -> None:
    assert quorum_lost(running, voters=3) is lost
