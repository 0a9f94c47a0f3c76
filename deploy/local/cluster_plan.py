"""Where the nodes of a local Kafka cluster listen, and what its clients are told: pure logic.

`make up BROKERS=3` puts node N on the Nth listed bootstrap server (or the first one's port
+ 2(N-1)) and its controller on KAFKA_CONTROLLER_PORT + 2(N-1): 9092/9093, 9094/9095, 9096/9097.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from deploy.local.errors import StackError
from deploy.local.settings import LocalSettings

# Each node's ports follow the previous node's: a client port and a controller port.
PORTS_PER_NODE = 2
REPLICATION_FACTOR = 3  # deploy/kafka/cluster.properties' default.replication.factor
MIN_INSYNC_REPLICAS = 2  # and its min.insync.replicas
# A partition's leader lost, its new leader takes writes 3-4 s later, 5-7 s when the node also
# led the controller quorum (make chaos, cluster-leader-kill): the API waits that out with a
# 202 rather than answering 503 for the loss of one node of three. Two nodes down, the 503
# comes after these 10 s.
API_PRODUCE_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class ClusterNode:
    node_id: int
    host: str
    port: int
    controller_port: int

    @property
    def name(self) -> str:
        """Also the name of its pid file, its log file and its directory under the run dir."""
        return f"kafka-{self.node_id}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def plan_cluster(bootstrap_servers: str, controller_port: int, brokers: int) -> list[ClusterNode]:
    """The nodes, numbered from 1, with every port checked to be used only once."""
    listed = [server.strip().rpartition(":") for server in bootstrap_servers.split(",")]
    if len(listed) not in (1, brokers):
        raise StackError(
            f"KAFKA_BOOTSTRAP_SERVERS lists {len(listed)} servers, and a local cluster of "
            f"{brokers} brokers needs one (the others on the next ports) or {brokers}, "
            "one for each node."
        )
    first_host, _, first_port = listed[0]
    nodes = []
    for index in range(brokers):
        if len(listed) == brokers:
            host, _, port = listed[index]
        else:
            host, port = first_host, str(int(first_port) + PORTS_PER_NODE * index)
        nodes.append(
            ClusterNode(
                node_id=index + 1,
                host=host,
                port=int(port),
                controller_port=controller_port + PORTS_PER_NODE * index,
            )
        )
    ports = [port for node in nodes for port in (node.port, node.controller_port)]
    clashing = sorted({port for port in ports if ports.count(port) > 1})
    if clashing or max(ports) > 65535:
        raise StackError(
            f"The cluster's ports clash or run past 65535 ({', '.join(map(str, ports))}): node "
            "N listens on the Nth bootstrap server and on KAFKA_CONTROLLER_PORT + 2(N-1). Choose "
            "a KAFKA_CONTROLLER_PORT one above the first bootstrap server's port, as 9093 is "
            "above 9092."
        )
    return nodes


def quorum_lost(running: int, voters: int) -> bool:
    """Whether `running` of the quorum's `voters` are too few to make a majority: no controller
    is left to approve a broker's controlled shutdown (or anything else)."""
    return 2 * running <= voters


def quorum_voters(nodes: Iterable[ClusterNode]) -> str:
    """controller.quorum.voters: `1@host:9093,2@host:9095,3@host:9097`."""
    return ",".join(f"{node.node_id}@{node.host}:{node.controller_port}" for node in nodes)


def bootstrap_list(nodes: Iterable[ClusterNode]) -> str:
    """Every node: a client that finds any one of them up learns about the others."""
    return ",".join(node.address for node in nodes)


def cluster_client_settings(settings: LocalSettings) -> LocalSettings:
    """The settings the stack's clients use with `settings.kafka_brokers` local nodes: every
    node as a bootstrap server, topics with three replicas of which two must acknowledge, and
    an API that waits out a failover; unless TOPIC_REPLICATION_FACTOR,
    TOPIC_MIN_INSYNC_REPLICAS or API_PRODUCE_TIMEOUT_SECONDS say otherwise."""
    if settings.kafka_brokers == 1:
        return settings
    nodes = plan_cluster(
        settings.kafka_bootstrap_servers, settings.kafka_controller_port, settings.kafka_brokers
    )
    chosen = settings.model_fields_set
    update: dict[str, Any] = {"kafka_bootstrap_servers": bootstrap_list(nodes)}
    if "topic_replication_factor" not in chosen:
        update["topic_replication_factor"] = REPLICATION_FACTOR
    if "topic_min_insync_replicas" not in chosen:
        update["topic_min_insync_replicas"] = MIN_INSYNC_REPLICAS
    if "api_produce_timeout_seconds" not in chosen:
        update["api_produce_timeout_seconds"] = API_PRODUCE_TIMEOUT_SECONDS
    return settings.model_copy(update=update)


@dataclass(frozen=True)
class PartitionReplicas:
    """One partition as a Metadata response describes it."""

    topic: str
    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    def __str__(self) -> str:
        return (
            f"{self.topic}-{self.partition} (leader {self.leader}, replicas "
            f"{list(self.replicas)}, ISR {list(self.isr)})"
        )


def partitions_of(described_topics: Iterable[Mapping[str, Any]]) -> list[PartitionReplicas]:
    """The partitions in aiokafka's `describe_topics()` answer."""
    return [
        PartitionReplicas(
            topic=topic["topic"],
            partition=partition["partition"],
            leader=partition["leader"],
            replicas=tuple(partition["replicas"]),
            isr=tuple(partition["isr"]),
        )
        for topic in described_topics
        for partition in topic["partitions"]
    ]


def out_of_sync(partitions: Iterable[PartitionReplicas]) -> list[PartitionReplicas]:
    """Partitions without a leader, or with a replica that is not in the ISR (in sync)."""
    return [
        partition
        for partition in partitions
        if partition.leader < 0 or set(partition.isr) != set(partition.replicas)
    ]


@dataclass(frozen=True)
class QuorumVoter:
    """One row of `kafka-metadata-quorum.sh describe --replication`."""

    node_id: int
    log_end_offset: int
    lag: int
    status: str  # Leader, Follower or Observer


def parse_quorum_replication(output: str) -> list[QuorumVoter]:
    """The rows of `describe --replication`'s table, read by its header line."""
    lines = [re.split(r"\s{2,}|\t", line.strip()) for line in output.splitlines() if line.strip()]
    header = next((line for line in lines if "NodeId" in line), None)
    if header is None:
        return []
    rows = []
    for line in lines[lines.index(header) + 1 :]:
        fields = dict(zip(header, line, strict=False))
        rows.append(
            QuorumVoter(
                node_id=int(fields["NodeId"]),
                log_end_offset=int(fields["LogEndOffset"]),
                lag=int(fields["Lag"]),
                status=fields["Status"],
            )
        )
    return rows
