"""A three-node KRaft cluster from the project's own jars: three replicas of every partition,
two of which must acknowledge, so writes go on and read back while any one node is down.

The cluster is private (tests/private_cluster.py: free ports, a temporary run directory) and
stopped at the end even when a test fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from deploy.local.cluster_plan import partitions_of
from deploy.local.kafka import STOP_GRACE_SECONDS
from deploy.local.kafka_cluster import KafkaCluster
from deploy.local.settings import LocalSettings
from shared.kafka import (
    admin_client,
    create_producer,
    ensure_topics,
    topic_configs,
    topic_names,
)
from shared.settings import Settings
from tests.integration import test_kafka_cli as seed_walkthrough
from tests.kafka_tools import describe_group, run_kafka_tool
from tests.private_cluster import partition_leader, private_cluster

EVERY_NODE = [1, 2, 3]
# The idempotent producer never gives up on a batch by itself: bound each send, as the
# services do (an acks=all write needs two replicas, which one node down still leaves).
SEND_TIMEOUT_SECONDS = 20.0
WHOLE_AGAIN_SECONDS = 60.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    cluster = private_cluster(tmp_path_factory.mktemp("cluster"), LocalSettings().kafka_libs_dir)
    try:
        cluster.start()
        asyncio.run(ensure_topics(cluster.client_settings))
        yield cluster
    finally:
        cluster.stop()


def topics_of_their_own(cluster: KafkaCluster, name: str) -> Settings:
    """The cluster's client settings with topics and a group of their own."""
    return cluster.client_settings.model_copy(
        update={
            "email_topic": f"email.send.{name}",
            "dlq_topic": f"email.send.{name}.dlq",
            "events_topic": f"email.events.{name}",
            "consumer_group": f"email-send-group.{name}",
        }
    )


async def produce(settings: Settings, values: list[str]) -> None:
    """acks=all and idempotent, as the API produces; round-robin over the partitions."""
    producer = create_producer(settings, "cluster-test", request_timeout_ms=5000)
    await producer.start()
    try:
        for number, value in enumerate(values):
            sent = producer.send_and_wait(
                settings.email_topic, value.encode(), partition=number % settings.topic_partitions
            )
            await asyncio.wait_for(sent, SEND_TIMEOUT_SECONDS)
    finally:
        await producer.stop()


def read_from_the_beginning(settings: Settings, count: int) -> list[str]:
    """The seed's kafka-console-consumer.sh --from-beginning --group, on every node."""
    result = run_kafka_tool(
        "kafka-console-consumer.sh",
        "--bootstrap-server", settings.kafka_bootstrap_servers,
        "--topic", settings.email_topic,
        "--from-beginning",
        "--group", settings.consumer_group,
        "--max-messages", str(count), "--timeout-ms", "30000",
    )  # fmt: skip
    return sorted(result.stdout.split())


async def in_sync_replicas(settings: Settings, *topics: str) -> dict[str, list[int]]:
    """ "topic-partition" -> its ISR, sorted."""
    async with admin_client(settings.kafka_bootstrap_servers) as admin:
        described = await admin.describe_topics(list(topics))
    return {f"{p.topic}-{p.partition}": sorted(p.isr) for p in partitions_of(described)}


def test_the_seeds_walkthrough_works_unchanged_on_the_cluster(cluster: KafkaCluster) -> None:
    # First in this module: it expects email.send and email-send-group to be new.
    seed_walkthrough.test_seed_commands_work_on_the_stack(cluster.client_settings)
    seed_walkthrough.test_every_topic_is_provisioned_with_its_partitions_and_settings(
        cluster.client_settings
    )


def test_every_node_is_a_voter_of_the_quorum(cluster: KafkaCluster) -> None:
    voters = cluster.quorum()

    assert sorted(voter.node_id for voter in voters) == EVERY_NODE
    assert sorted(voter.status for voter in voters) == ["Follower", "Follower", "Leader"]


async def test_topics_have_three_replicas_in_sync_and_two_must_acknowledge(
    cluster: KafkaCluster,
) -> None:
    settings = cluster.client_settings
    topics = [settings.email_topic, settings.dlq_topic]

    states = await ensure_topics(settings)
    configs = [await topic_configs(settings.kafka_bootstrap_servers, topic) for topic in topics]
    isr = await in_sync_replicas(settings, *topics, "__consumer_offsets")

    assert [(state.name, state.replication_factor) for state in states] == [
        (topic, 3) for topic in topic_names(settings)
    ]
    assert [config["min.insync.replicas"] for config in configs] == ["2", "2"]
    assert [config["unclean.leader.election.enable"] for config in configs] == ["false"] * 2
    assert len(isr) == 2 * settings.topic_partitions + 1, isr
    assert all(members == EVERY_NODE for members in isr.values()), isr


def test_kafka_topics_describe_shows_leader_replicas_and_isr(cluster: KafkaCluster) -> None:
    settings = cluster.client_settings
    described = run_kafka_tool(
        "kafka-topics.sh", "--bootstrap-server", settings.kafka_bootstrap_servers,
        "--describe", "--topic", settings.email_topic,
    )  # fmt: skip

    partition_lines = [line for line in described.stdout.splitlines() if "Partition:" in line]
    assert "ReplicationFactor: 3" in described.stdout, described.stdout
    assert "min.insync.replicas=2" in described.stdout, described.stdout
    assert len(partition_lines) == settings.topic_partitions
    for line in partition_lines:
        fields = dict(zip(line.split()[::2], line.split()[1::2], strict=False))
        assert sorted(map(int, fields["Replicas:"].split(","))) == EVERY_NODE, line
        assert sorted(map(int, fields["Isr:"].split(","))) == EVERY_NODE, line


async def test_writes_succeed_with_the_leader_stopped_and_read_back_from_the_beginning(
    cluster: KafkaCluster,
) -> None:
    settings = topics_of_their_own(cluster, "stopped-leader")
    await ensure_topics(settings)
    before = [f"before{n}" for n in range(30)]
    during = [f"during{n}" for n in range(30)]
    await produce(settings, before)
    leader = await partition_leader(cluster, settings.email_topic)

    await asyncio.to_thread(cluster.stop_node, leader)
    try:
        await produce(settings, during)
        read = await asyncio.to_thread(read_from_the_beginning, settings, 60)
        isr = await in_sync_replicas(settings, settings.email_topic)
        new_leader = await partition_leader(cluster, settings.email_topic)
    finally:
        await asyncio.to_thread(cluster.start_node, leader)
        await asyncio.to_thread(cluster.wait_until_whole, time.monotonic() + WHOLE_AGAIN_SECONDS)

    assert read == sorted(before + during)
    assert new_leader != leader
    assert all(members == sorted(set(EVERY_NODE) - {leader}) for members in isr.values()), isr
    rows = describe_group(settings.kafka_bootstrap_servers, settings.consumer_group)
    assert sum(row.current_offset or 0 for row in rows) == 60


async def test_a_killed_node_rejoins_every_isr_once_restarted(cluster: KafkaCluster) -> None:
    settings = topics_of_their_own(cluster, "killed-node")
    await ensure_topics(settings)
    victim = await partition_leader(cluster, settings.email_topic)
    killed_pid = cluster.pid(victim)

    assert await asyncio.to_thread(cluster.kill_node, victim)
    assert cluster.pid(victim) is None
    await produce(settings, [f"while-down{n}" for n in range(10)])
    await asyncio.to_thread(cluster.start_node, victim)
    await asyncio.to_thread(cluster.wait_until_whole, time.monotonic() + WHOLE_AGAIN_SECONDS)
    isr = await in_sync_replicas(settings, settings.email_topic, settings.dlq_topic)

    assert cluster.pid(victim) not in (None, killed_pid)
    assert all(members == EVERY_NODE for members in isr.values()), isr


def test_a_stopped_cluster_starts_again_with_its_data(cluster: KafkaCluster) -> None:
    settings = topics_of_their_own(cluster, "stopped-leader")
    cluster_id = _cluster_ids(cluster)

    assert cluster.stop()
    assert all(pid is None for pid in cluster.running_pids().values())
    start = cluster.start()

    assert not start.already_running
    assert _cluster_ids(cluster) == cluster_id, "the nodes are not formatted again"
    rows = describe_group(settings.kafka_bootstrap_servers, settings.consumer_group)
    assert sum(row.log_end_offset for row in rows) == 60


def test_a_cluster_with_most_nodes_down_stops_without_waiting_out_the_grace_period(
    cluster: KafkaCluster,
) -> None:
    """The survivor's controlled shutdown needs a controller quorum, which two nodes down take
    away: a SIGTERM would wait STOP_GRACE_SECONDS for nothing. It is killed at once, and the
    cluster starts again with its data (the killed nodes recover their logs)."""
    cluster_id = _cluster_ids(cluster)
    assert cluster.kill_node(1)
    assert cluster.kill_node(2)

    started = time.monotonic()
    assert cluster.stop()
    took = time.monotonic() - started

    assert all(pid is None for pid in cluster.running_pids().values())
    assert took < STOP_GRACE_SECONDS / 2, f"{took:.1f} s: it waited for a clean shutdown"
    start = cluster.start()
    assert not start.already_running
    assert _cluster_ids(cluster) == cluster_id, "the nodes are not formatted again"


def _cluster_ids(cluster: KafkaCluster) -> set[str]:
    meta = [cluster.data_dir(node) / "meta.properties" for node in cluster.nodes]
    return {line for path in meta for line in path.read_text().splitlines() if "cluster.id" in line}
