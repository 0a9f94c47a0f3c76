"""Which Kafka each command works on: what `make up` recorded, unless a start asks for another."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deploy.local.errors import StackError
from deploy.local.kafka_mode import (
    ensure_no_other_kafka,
    record_brokers,
    recorded_brokers,
    running_pids,
    stack_settings,
)
from deploy.local.settings import LocalSettings

CLUSTER_SERVERS = "localhost:9092,localhost:9094,localhost:9096"


def test_the_record_holds_the_number_of_nodes_until_it_is_cleared(tmp_path: Path) -> None:
    assert recorded_brokers(tmp_path) is None

    record_brokers(tmp_path, 3)
    assert recorded_brokers(tmp_path) == 3

    record_brokers(tmp_path, None)
    assert recorded_brokers(tmp_path) is None


@pytest.mark.parametrize("command", ["down", "status", "topics", "groups", "services-up", "up"])
def test_commands_follow_the_recorded_cluster(tmp_path: Path, command: str) -> None:
    record_brokers(tmp_path, 3)

    settings = stack_settings(LocalSettings(_env_file=None, run_dir=tmp_path), command)

    assert settings.kafka_brokers == 3
    assert settings.kafka_bootstrap_servers == CLUSTER_SERVERS
    assert settings.topic_replication_factor == 3


def test_a_start_that_names_the_number_of_nodes_gets_it(tmp_path: Path) -> None:
    record_brokers(tmp_path, 3)

    settings = stack_settings(
        LocalSettings(_env_file=None, run_dir=tmp_path, kafka_brokers=1), "up"
    )

    assert (settings.kafka_brokers, settings.kafka_bootstrap_servers) == (1, "localhost:9092")


def test_down_stops_what_was_started_whatever_it_is_told(tmp_path: Path) -> None:
    record_brokers(tmp_path, 3)

    settings = stack_settings(
        LocalSettings(_env_file=None, run_dir=tmp_path, kafka_brokers=1), "down"
    )

    assert settings.kafka_brokers == 3


def test_nothing_recorded_is_one_broker(tmp_path: Path) -> None:
    settings = stack_settings(LocalSettings(_env_file=None, run_dir=tmp_path), "status")

    assert (settings.kafka_brokers, settings.kafka_bootstrap_servers) == (1, "localhost:9092")


def test_a_recorded_cluster_that_no_longer_runs_does_not_stop_a_start(tmp_path: Path) -> None:
    record_brokers(tmp_path, 3)
    settings = LocalSettings(_env_file=None, run_dir=tmp_path, kafka_brokers=1)

    ensure_no_other_kafka(settings)

    assert running_pids(settings) == {}


def test_a_running_cluster_stops_a_start_of_one_broker(tmp_path: Path) -> None:
    record_brokers(tmp_path, 3)
    cluster = LocalSettings(_env_file=None, run_dir=tmp_path, kafka_brokers=3)
    # A sleeper stands in for node 2: its command line holds the node's config file, the
    # marker a pid must show to count as the node's.
    marker = str(tmp_path / "kafka-2" / "server.properties")
    node = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        (tmp_path / "pids").mkdir()
        (tmp_path / "pids" / "kafka-2.pid").write_text(f"{node.pid}\n")

        assert running_pids(cluster) == {"kafka-2": node.pid}
        with pytest.raises(StackError, match="running as a cluster of 3 nodes"):
            ensure_no_other_kafka(LocalSettings(_env_file=None, run_dir=tmp_path, kafka_brokers=1))
    finally:
        node.kill()
        node.wait()
