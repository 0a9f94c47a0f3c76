"""One broker or a cluster of three: which Kafka `make up` started, and what that means for
every later command.

`make up BROKERS=3` records the number of nodes in run/kafka-brokers. `make down`, `make
status`, `make topics`, `make groups` and the services' KAFKA_BOOTSTRAP_SERVERS follow that
record until `make down` removes it, so they need no BROKERS=3 of their own.
"""

from __future__ import annotations

from pathlib import Path

from deploy.local.cluster_plan import cluster_client_settings
from deploy.local.errors import StackError
from deploy.local.kafka import KafkaBroker
from deploy.local.kafka_cluster import KafkaCluster
from deploy.local.settings import LocalSettings

BROKERS_RECORD = "kafka-brokers"
STARTING_COMMANDS = frozenset({"up", "kafka-up"})


def recorded_brokers(run_dir: Path) -> int | None:
    """How many Kafka nodes `make up` started in run_dir, None before it or after `make down`."""
    try:
        return int((run_dir / BROKERS_RECORD).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def record_brokers(run_dir: Path, brokers: int | None) -> None:
    record = run_dir / BROKERS_RECORD
    if brokers is None:
        record.unlink(missing_ok=True)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        record.write_text(f"{brokers}\n")


def stack_settings(settings: LocalSettings, command: str) -> LocalSettings:
    """The settings a command works with: the recorded number of nodes, unless the command
    starts Kafka and KAFKA_BROKERS (make up BROKERS=3) was given; with a cluster, every node as
    a bootstrap server and topics with three replicas."""
    recorded = recorded_brokers(settings.run_dir)
    asked = command in STARTING_COMMANDS and "kafka_brokers" in settings.model_fields_set
    if recorded is not None and not asked:
        settings = settings.model_copy(update={"kafka_brokers": recorded})
    return cluster_client_settings(settings)


def ensure_no_other_kafka(settings: LocalSettings) -> None:
    """Refuse to start one Kafka while the other kind runs: they would want the same ports."""
    recorded = recorded_brokers(settings.run_dir)
    if recorded is None or recorded == settings.kafka_brokers:
        return
    other = settings.model_copy(update={"kafka_brokers": recorded})
    if running_pids(other):
        how = "make up" if recorded == 1 else f"make up BROKERS={recorded}"
        raise StackError(
            f"Kafka is running as {_nodes(recorded)} (started by `{how}`). Stop it with `make "
            f"down` first; the data of each stay apart (run/kafka-data for one node, "
            f"run/kafka-N/ for a cluster's), so either comes back as it was."
        )


def running_pids(settings: LocalSettings) -> dict[str, int]:
    """The Kafka processes of settings.kafka_brokers that run: {"kafka-1": pid, ...}."""
    if settings.kafka_brokers == 1:
        pid = KafkaBroker(settings).process.running_pid()
        return {"kafka": pid} if pid else {}
    cluster = KafkaCluster(settings)
    return {
        node.name: pid
        for node in cluster.nodes
        if (pid := cluster.process(node).running_pid()) is not None
    }


def _nodes(brokers: int) -> str:
    return "one node" if brokers == 1 else f"a cluster of {brokers} nodes"
