"""A private three-node Kafka cluster for tests and harnesses: free ports, its own run directory,
never the user's `make up` stack.

    cluster = private_cluster(run_dir, settings.kafka_libs_dir)
    cluster.start()              # every node in the quorum, every replica in sync
    cluster.kill_node(2)         # SIGKILL by pid; stop_node(2) is the clean SIGTERM
    cluster.start_node(2)        # back as a live broker
    cluster.wait_until_whole(time.monotonic() + 60)  # and in every ISR again
    await partition_leaders(cluster, topic)   # {partition: leader node}, None if none answers
    quorum_leader(cluster)       # the node leading the controller quorum (a JVM tool: blocks)
    cluster.stop()               # every node, by pid
    # our services on it, with topics of three replicas (the default is one):
    PrivateStack(name, run_dir, cluster.bootstrap_servers,
                 TOPIC_REPLICATION_FACTOR="3", TOPIC_MIN_INSYNC_REPLICAS="2")
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiokafka.errors import KafkaError

from deploy.local.kafka_cluster import KafkaCluster, quiet_aiokafka
from deploy.local.settings import LocalSettings
from shared.kafka import admin_client
from tests.conftest import free_port


def private_cluster(run_dir: Path, kafka_libs_dir: Path, brokers: int = 3) -> KafkaCluster:
    """Node N on the (2N-1)th and 2Nth of a run of free ports, its data under run_dir/kafka-N."""
    first_port = free_port(span=2 * brokers)
    return KafkaCluster(
        LocalSettings(
            run_dir=run_dir,
            kafka_libs_dir=kafka_libs_dir,
            kafka_bootstrap_servers=f"127.0.0.1:{first_port}",
            kafka_controller_port=first_port + 1,
            kafka_brokers=brokers,
        )
    )


async def partition_leader(
    cluster: KafkaCluster, topic: str, partition: int = 0, seconds: float = 10
) -> int:
    """The node id that leads a partition now. A topic just made may not have reached the node
    asked yet, which then describes it without its partitions: asked again until it has."""
    deadline = time.monotonic() + seconds
    async with admin_client(cluster.bootstrap_servers) as admin:
        while True:
            [described] = await admin.describe_topics([topic])
            leaders = [p["leader"] for p in described["partitions"] if p["partition"] == partition]
            if leaders or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    if not leaders:
        raise RuntimeError(f"{topic}-{partition} has no leader after {seconds:g} s")
    return int(leaders[0])


async def partition_leaders(cluster: KafkaCluster, topic: str) -> dict[int, int] | None:
    """Each partition's leader (-1 while it has none), as a live node sees it; None while no
    node answers. Quiet: refused connections are expected while nodes are down."""
    with quiet_aiokafka():
        try:
            async with admin_client(cluster.bootstrap_servers, request_timeout_ms=3000) as admin:
                [described] = await admin.describe_topics([topic])
        except (KafkaError, OSError):
            return None
    return {int(p["partition"]): int(p["leader"]) for p in described["partitions"]}


def quorum_leader(cluster: KafkaCluster) -> int | None:
    """The node that leads the controller quorum now (kafka-metadata-quorum.sh, a JVM: it
    blocks for a second or two); None if the tool could not say."""
    return next((voter.node_id for voter in cluster.quorum() if voter.status == "Leader"), None)
