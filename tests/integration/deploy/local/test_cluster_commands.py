"""`make kafka-up BROKERS=3` and the commands after it, as the Makefile runs them, on free ports.

Only the first command says BROKERS=3 (KAFKA_BROKERS): the others find the cluster through
what it recorded under the run directory, as `make down` and `make status` do.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import free_port, run_stack_command, stack_env


def test_a_cluster_started_once_is_what_every_later_command_works_on(tmp_path: Path) -> None:
    first_port = free_port(span=6)
    env = stack_env(
        tmp_path / "run",
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{first_port}",
        KAFKA_CONTROLLER_PORT=str(first_port + 1),
    )
    servers = ",".join(f"127.0.0.1:{first_port + offset}" for offset in (0, 2, 4))

    def run(command: str, **overrides: str) -> str:
        result = run_stack_command(command, {**env, **overrides})
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    try:
        started = run("kafka-up", KAFKA_BROKERS="3")
        assert "3 nodes ready" in started
        assert (tmp_path / "run" / "kafka-brokers").read_text() == "3\n"

        provisioned = run("topics")
        assert "Topic email.send: created, 3 partitions. Replication factor 3." in provisioned
        described = run("describe-topics")
        assert f"--bootstrap-server {servers} --describe" in described
        # Every topic of the pipeline (email.send and its DLQ, events and retry topics) and
        # __consumer_offsets: three copies each.
        assert described.count("ReplicationFactor:") >= 4, described
        assert described.count("ReplicationFactor: 3") == described.count("ReplicationFactor:")

        status = run("status")
        for node in ("kafka-1", "kafka-2", "kafka-3"):
            assert f"{node:<12}running, pid" in status, status
        assert "live brokers [1, 2, 3], 0 partitions with a replica out of sync" in status

        assert "Kafka is already running: 3 nodes" in run("kafka-up")
        one_node = run_stack_command("kafka-up", {**env, "KAFKA_BROKERS": "1"})
        assert one_node.returncode == 1
        assert "Kafka is running as a cluster of 3 nodes" in one_node.stderr

        assert "Kafka stopped: kafka-1, kafka-2, kafka-3." in run("kafka-down")
        assert not (tmp_path / "run" / "kafka-brokers").exists()
        assert "Kafka is not running." in run("kafka-down")
    finally:
        run_stack_command("kafka-down", env)
