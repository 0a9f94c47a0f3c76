"""A local Kafka cluster: three KRaft nodes, each a broker and a controller, from the same jars.

`KafkaCluster` formats every node's storage with one cluster id, starts the nodes in the
background, waits until all three are in the controller quorum and every partition has all its
replicas in sync, and stops, kills or restarts any node by the pid in its pid file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import TypeVar

from aiokafka.errors import KafkaError

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
from deploy.local.kafka import (
    KAFKA_DEPLOY_DIR,
    STOP_GRACE_SECONDS,
    broker_command,
    fetch_kafka,
    find_java,
    format_command,
    new_cluster_id,
    run_kafka_tool,
)
from deploy.local.processes import BackgroundProcess, ensure_port_free, tail, wait_for_exit
from deploy.local.settings import LocalSettings
from shared.kafka import admin_client

CLUSTER_PROPERTIES_TEMPLATE = KAFKA_DEPLOY_DIR / "cluster.properties"
POLL_SECONDS = 0.25
OFFSETS_TOPIC = "__consumer_offsets"
T = TypeVar("T")


@dataclass(frozen=True)
class ClusterStart:
    pids: dict[int, int]  # node id -> pid
    started: tuple[int, ...]  # the nodes this start launched; none if all were running
    seconds: float

    @property
    def already_running(self) -> bool:
        return not self.started


@dataclass(frozen=True)
class ClusterHealth:
    """What the brokers say about themselves: who is up, and which partitions lag."""

    live_brokers: frozenset[int]
    lagging_partitions: tuple[PartitionReplicas, ...]
    topics: frozenset[str] = frozenset()


class KafkaCluster:
    """The nodes of settings.kafka_brokers; node N's config and data in run_dir/kafka-N/, its
    pid in run_dir/pids/kafka-N.pid, its logs in run_dir/logs/kafka-N/."""

    def __init__(self, settings: LocalSettings) -> None:
        self.settings = settings
        self.nodes = plan_cluster(
            settings.kafka_bootstrap_servers, settings.kafka_controller_port, settings.kafka_brokers
        )
        self.bootstrap_servers = bootstrap_list(self.nodes)
        # What clients of this cluster use: every node to bootstrap from, RF 3 topics.
        self.client_settings = cluster_client_settings(settings)

    def node(self, node_id: int) -> ClusterNode:
        return self.nodes[node_id - 1]

    def config_file(self, node: ClusterNode) -> Path:
        return self.settings.run_dir / node.name / "server.properties"

    def data_dir(self, node: ClusterNode) -> Path:
        return self.settings.run_dir / node.name / "data"

    def logs_dir(self, node: ClusterNode) -> Path:
        return self.settings.run_dir / "logs" / node.name

    def server_log(self, node: ClusterNode) -> Path:
        return self.logs_dir(node) / "server.log"

    def process(self, node: ClusterNode) -> BackgroundProcess:
        return BackgroundProcess(
            node.name, self.settings.run_dir, marker=str(self.config_file(node))
        )

    def pid(self, node_id: int) -> int | None:
        return self.process(self.node(node_id)).running_pid()

    def running_pids(self) -> dict[int, int | None]:
        return {node.node_id: self.process(node).running_pid() for node in self.nodes}

    def start(self) -> ClusterStart:
        """Start every node that is not running and wait until the cluster is whole."""
        started = time.monotonic()
        pids = self.running_pids()
        if all(pids.values()):
            return ClusterStart(
                {node_id: pid for node_id, pid in pids.items() if pid}, (), seconds=0.0
            )
        java = find_java()
        fetch_kafka(self.settings.kafka_libs_dir)
        stopped = [node for node in self.nodes if pids[node.node_id] is None]
        for node in stopped:
            self._check_ports_free(node)
        self._prepare_storage(java, stopped)
        for node in stopped:
            pids[node.node_id] = self._launch(java, node)
        self.wait_until_whole(deadline=started + self.settings.kafka_start_timeout_seconds)
        return ClusterStart(
            {node_id: pid for node_id, pid in pids.items() if pid},
            started=tuple(node.node_id for node in stopped),
            seconds=time.monotonic() - started,
        )

    def start_node(self, node_id: int) -> float:
        """Start one stopped node and wait until it is a live broker again (its replicas may
        still be catching up: `wait_until_whole` waits for that). The seconds it took."""
        started = time.monotonic()
        node = self.node(node_id)
        if self.process(node).running_pid() is not None:
            return 0.0
        java = find_java()
        self._check_ports_free(node)
        self._prepare_storage(java, [node])
        self._launch(java, node)
        deadline = started + self.settings.kafka_start_timeout_seconds
        self._wait_for(
            lambda health: node_id in health.live_brokers, deadline, f"{node.name} up", [node]
        )
        return time.monotonic() - started

    def stop(self) -> bool:
        """Stop every node (SIGTERM, then SIGKILL after the grace period), all at once, so it
        takes as long as the slowest node: about 6 s. With most nodes down already, no
        controller quorum is left to approve a node's controlled shutdown, and it would wait out
        the whole grace period: the nodes still running are SIGKILLed at once instead, as a
        crash would, and recover their logs when started again. False if none was running."""
        running = [node for node in self.nodes if self.process(node).running_pid() is not None]
        if quorum_lost(len(running), voters=len(self.nodes)):
            for node in running:
                self.kill_node(node.node_id)
            return bool(running)
        return any(self._each_node(lambda node: self.stop_node(node.node_id)))

    def stop_node(self, node_id: int) -> bool:
        """Stop one node cleanly (SIGTERM): it hands over the leadership of its partitions."""
        return self.process(self.node(node_id)).stop(STOP_GRACE_SECONDS)

    def kill_node(self, node_id: int) -> bool:
        """SIGKILL one node, as a crash or a power cut would: nothing is handed over."""
        process = self.process(self.node(node_id))
        pid = process.running_pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.kill(pid, signal.SIGKILL)
        if wait_for_exit(pid, 10):  # reaps it if it is our child
            process.pid_file.unlink(missing_ok=True)  # kept while it lives on: its ports too
        return True

    def health(self) -> ClusterHealth:
        return asyncio.run(cluster_health(self.bootstrap_servers))

    def quorum(self) -> list[QuorumVoter]:
        """The controller quorum's voters and their lag, from kafka-metadata-quorum.sh."""
        result = run_kafka_tool(
            self.settings,
            "kafka-metadata-quorum.sh",
            "--bootstrap-server", self.bootstrap_servers,
            "describe", "--replication",
        )  # fmt: skip
        return parse_quorum_replication(result.stdout) if result.returncode == 0 else []

    def wait_until_whole(self, deadline: float) -> None:
        """Until every node is a live broker, every partition has all its replicas in sync
        (ISR = replicas), and every node is a voter of the quorum that has caught up."""
        everyone = {node.node_id for node in self.nodes}

        def whole(health: ClusterHealth) -> bool:
            if health.live_brokers != everyone or health.lagging_partitions:
                return False
            if OFFSETS_TOPIC not in health.topics:
                # Kafka creates it at a group's first request, with three replicas only
                # while all three brokers are up: make it now, not when a node may be down.
                asyncio.run(
                    ask_group_coordinator(self.bootstrap_servers, self.settings.consumer_group)
                )
                return False
            # A live broker in a combined node has caught up with the metadata log already;
            # ask the quorum itself too, since that is what `make up` promises.
            voters = self.quorum()
            return {voter.node_id for voter in voters if voter.lag == 0} == everyone

        self._wait_for(
            whole, deadline, "every node in the quorum and every replica in sync", self.nodes
        )

    def _wait_for(
        self,
        condition: Callable[[ClusterHealth], bool],
        deadline: float,
        what: str,
        watched: list[ClusterNode],
    ) -> None:
        """Poll the cluster's health until `condition` holds; fail at once if one of the
        `watched` nodes exits, and after the deadline with what the cluster looked like."""
        health = ClusterHealth(frozenset(), ())
        while time.monotonic() < deadline:
            for node in watched:
                self._check_alive(node)
            health = self.health()
            if condition(health):
                return
            time.sleep(POLL_SECONDS)
        lagging = "; ".join(map(str, health.lagging_partitions[:5])) or "none"
        raise StackError(
            f"The Kafka cluster did not get to {what} within "
            f"{self.settings.kafka_start_timeout_seconds:.0f} s (KAFKA_START_TIMEOUT_SECONDS sets "
            f"the limit); it is left running so you can look. Live brokers: "
            f"{sorted(health.live_brokers) or 'none'}; partitions out of sync: {lagging}. The "
            f"end of {watched[0].name}'s log:\n{tail(self.server_log(watched[0]))}"
        )

    def _check_alive(self, node: ClusterNode) -> None:
        if self.process(node).running_pid() is None:
            raise StackError(
                f"{node.name} stopped during start-up. The end of its logs:\n"
                f"{tail(self.process(node).log_file)}\n{tail(self.server_log(node))}"
            )

    def _check_ports_free(self, node: ClusterNode) -> None:
        example = f"{node.host}:19092"
        ensure_port_free(node.host, node.port, "KAFKA_BOOTSTRAP_SERVERS", example)
        ensure_port_free(node.host, node.controller_port, "KAFKA_CONTROLLER_PORT", "19093")

    def _prepare_storage(self, java: str, nodes: list[ClusterNode]) -> None:
        """Write each node's config, and format the storage of those never formatted, with the
        cluster id the others have (a new one for a new cluster), all at once."""
        for node in nodes:
            self._write_config(node)
        unformatted = [node for node in nodes if not self._meta_properties(node).is_file()]
        if not unformatted:
            return
        cluster_id = self._existing_cluster_id() or new_cluster_id()
        formats = {
            node: subprocess.Popen(
                format_command(java, self.settings, cluster_id, self.config_file(node)),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for node in unformatted
        }
        for node, formatting in formats.items():
            output, _ = formatting.communicate()
            if formatting.returncode != 0:
                where = self.data_dir(node)
                raise StackError(f"Kafka's storage tool could not format {where}:\n{output}")

    def _meta_properties(self, node: ClusterNode) -> Path:
        return self.data_dir(node) / "meta.properties"

    def _existing_cluster_id(self) -> str | None:
        for node in self.nodes:
            try:
                lines = self._meta_properties(node).read_text().splitlines()
            except FileNotFoundError:
                continue
            for line in lines:
                key, _, value = line.partition("=")
                if key.strip() == "cluster.id":
                    return value.strip()
        return None

    def _write_config(self, node: ClusterNode) -> None:
        template = Template(CLUSTER_PROPERTIES_TEMPLATE.read_text())
        config_file = self.config_file(node)
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(
            template.substitute(
                node_id=node.node_id,
                voters=quorum_voters(self.nodes),
                host=node.host,
                port=node.port,
                controller_port=node.controller_port,
                data_dir=self.data_dir(node),
                partitions=self.settings.topic_partitions,
            )
        )

    def _launch(self, java: str, node: ClusterNode) -> int:
        self.logs_dir(node).mkdir(parents=True, exist_ok=True)
        command = broker_command(java, self.settings, self.logs_dir(node), self.config_file(node))
        return self.process(node).start(command)

    def _each_node(self, action: Callable[[ClusterNode], T]) -> list[T]:
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            return list(pool.map(action, self.nodes))


async def cluster_health(bootstrap_servers: str) -> ClusterHealth:
    """The live (registered, unfenced) brokers and the partitions whose ISR lacks a replica,
    as one of the brokers sees them; nothing live if none answers."""
    with quiet_aiokafka():
        try:
            async with admin_client(bootstrap_servers, request_timeout_ms=3000) as admin:
                brokers = (await admin.describe_cluster())["brokers"]
                topics = await admin.describe_topics()
        except (KafkaError, OSError):
            return ClusterHealth(frozenset(), ())
    return ClusterHealth(
        live_brokers=frozenset(broker["node_id"] for broker in brokers),
        lagging_partitions=tuple(out_of_sync(partitions_of(topics))),
        topics=frozenset(topic["topic"] for topic in topics),
    )


async def ask_group_coordinator(bootstrap_servers: str, group: str) -> None:
    """Ask for the consumer group's coordinator: the broker creates __consumer_offsets, if it
    is missing, to answer."""
    with quiet_aiokafka():
        try:
            async with admin_client(bootstrap_servers, request_timeout_ms=3000) as admin:
                await admin.find_coordinator(group)
        except (KafkaError, OSError):
            pass  # COORDINATOR_NOT_AVAILABLE while it is being created: the next poll sees it


@contextmanager
def quiet_aiokafka() -> Iterator[None]:
    """Refused connections are expected while nodes start or stop: not worth a log line."""
    aiokafka_logger = logging.getLogger("aiokafka")
    level = aiokafka_logger.level
    aiokafka_logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        aiokafka_logger.setLevel(level)
