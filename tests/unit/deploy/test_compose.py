"""deploy/compose.yaml stays equivalent to `make up`: every variable it sets is a real setting,
and its Kafka has the settings of deploy/kafka/server.properties; with deploy/compose.cluster.yaml
laid over it, the three nodes of `make up BROKERS=3` with those of deploy/kafka/cluster.properties.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.local.cluster_plan import API_PRODUCE_TIMEOUT_SECONDS, plan_cluster
from shared.kafka import topic_names
from shared.settings import PROJECT_ROOT, Settings

COMPOSE_FILE = PROJECT_ROOT / "deploy" / "compose.yaml"
CLUSTER_FILE = PROJECT_ROOT / "deploy" / "compose.cluster.yaml"
KAFKA_DEPLOY_DIR = PROJECT_ROOT / "deploy" / "kafka"
CLUSTER_NODES = ["kafka", "kafka-2", "kafka-3"]
# Where a node runs and who it is: a container's names and paths are not the local stack's.
NODE_SPECIFIC = {
    "node.id",
    "controller.quorum.voters",
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "inter.broker.listener.name",
    "log.dirs",
}
# Variables the apache/kafka image reads itself rather than writing them to server.properties.
IMAGE_VARIABLES = {"KAFKA_HEAP_OPTS", "KAFKA_OPTS", "CLUSTER_ID"}
PROMETHEUS_CONFIG = PROJECT_ROOT / "deploy" / "prometheus" / "prometheus.yml"
SERVICES_BUILT_HERE = {"topics", "smtp_sink", "worker", "api", "console"}
# The setting that holds each long-running service's HTTP port (its /readyz and /metrics).
HTTP_PORT_SETTINGS = {
    "smtp_sink": "SINK_HTTP_PORT",
    "worker": "WORKER_PORT",
    "api": "API_PORT",
    "console": "CONSOLE_PORT",
}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def compose_with_cluster() -> dict[str, Any]:
    """`docker compose -f compose.yaml -f compose.cluster.yaml` as compose merges them: the
    override's mappings (environment, depends_on) key by key, anything else replaced."""
    override: dict[str, Any] = yaml.safe_load(CLUSTER_FILE.read_text())
    merged: dict[str, Any] = _merged(compose(), override)
    return merged


def _merged(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        return {
            key: _merged(base[key], value) if key in base else value
            for key, value in {**base, **override}.items()
        }
    return override


def broker_properties(environment: dict[str, Any]) -> dict[str, str]:
    """The server.properties the apache/kafka image writes from KAFKA_* variables (its
    KafkaDockerWrapper: drop KAFKA_, lower case, "_" -> ".", "__" -> "_", "___" -> "-")."""
    return {
        name.removeprefix("KAFKA_").lower().replace("_", ".").replace("...", "-")
        .replace("..", "_"): str(value)
        for name, value in environment.items()
        if name.startswith("KAFKA_") and name not in IMAGE_VARIABLES
    }  # fmt: skip


def template_properties(name: str) -> dict[str, str]:
    """A deploy/kafka template's settings, with the partitions `make up` fills in by default."""
    partitions = str(Settings(_env_file=None).topic_partitions)
    lines = (KAFKA_DEPLOY_DIR / name).read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {key: value.replace("${partitions}", partitions) for key, value in pairs}


def cluster_wide(properties: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in properties.items() if key not in NODE_SPECIFIC}


def dockerfile_settings() -> set[str]:
    lines = (PROJECT_ROOT / "deploy" / "Dockerfile").read_text().splitlines()
    env_lines = [line.removeprefix("ENV ") for line in lines if line.startswith("ENV ")]
    return {pair.split("=")[0] for line in env_lines for pair in line.split() if "=" in pair}


@pytest.mark.parametrize("merged_compose", [compose, compose_with_cluster])
def test_every_variable_compose_sets_for_our_services_is_a_setting(
    merged_compose: Callable[[], dict[str, Any]],
) -> None:
    settings = {name.upper() for name in Settings.model_fields}
    services = merged_compose()["services"]

    assert set(services) >= SERVICES_BUILT_HERE
    for name in SERVICES_BUILT_HERE:
        unknown = set(services[name].get("environment", {})) - settings
        assert not unknown, f"{name} sets {unknown}, which shared/settings.py does not read"


def test_every_variable_the_dockerfile_sets_is_a_setting_or_pythons() -> None:
    settings = {name.upper() for name in Settings.model_fields}

    unknown = {name for name in dockerfile_settings() if not name.startswith(("PYTHON", "PIP_"))}

    assert unknown <= settings, unknown - settings


def test_compose_runs_the_services_with_their_module_entry_points() -> None:
    services = compose()["services"]

    for name in HTTP_PORT_SETTINGS:
        assert services[name]["command"] == ["python", "-m", f"services.{name}"]
        assert "healthcheck" in services[name]


def test_each_healthcheck_asks_the_services_own_readyz() -> None:
    services = compose()["services"]

    for name, port_setting in HTTP_PORT_SETTINGS.items():
        port = services[name]["environment"][port_setting]
        check = " ".join(services[name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/readyz" in check, name


def test_the_console_reads_the_api_and_the_sink_by_their_service_names() -> None:
    services = compose()["services"]
    console = services["console"]

    assert console["ports"] == ["127.0.0.1:8080:8080"]
    assert console["environment"]["CONSOLE_API_URL"] == "http://api:8000"
    assert console["environment"]["CONSOLE_SINK_URL"] == "http://smtp_sink:8025"
    assert console["depends_on"]["api"] == {"condition": "service_healthy"}
    assert console["depends_on"]["smtp_sink"] == {"condition": "service_healthy"}


def test_prometheus_is_optional_pinned_and_reads_the_projects_config() -> None:
    prometheus = compose()["services"]["prometheus"]
    image, _, version = prometheus["image"].partition(":")
    source, _, target = prometheus["volumes"][0].partition(":")

    assert prometheus["profiles"] == ["metrics"], "only with --profile metrics"
    assert image == "prom/prometheus"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", version), "a pinned release, not latest"
    assert (COMPOSE_FILE.parent / source).resolve() == PROMETHEUS_CONFIG
    assert target.removesuffix(":ro") == "/etc/prometheus/prometheus.yml"
    assert prometheus["ports"] == ["127.0.0.1:9090:9090"]


def test_compose_builds_from_the_project(tmp_path: Path) -> None:
    build = compose()["services"]["api"]["build"]

    assert (COMPOSE_FILE.parent / build["context"] / build["dockerfile"]).is_file()


@pytest.mark.parametrize("merged_compose", [compose, compose_with_cluster])
def test_every_published_port_is_on_the_loopback_interface(
    merged_compose: Callable[[], dict[str, Any]],
) -> None:
    """Like the services' own *_HOST defaults: nothing is reachable from the network unless
    someone widens it."""
    services = merged_compose()["services"]

    published = [port for service in services.values() for port in service.get("ports", [])]

    assert published
    assert all(port.startswith("127.0.0.1:") for port in published), published


@pytest.mark.parametrize(
    ("template", "merged_compose", "nodes"),
    [
        ("server.properties", compose, ["kafka"]),
        ("cluster.properties", compose_with_cluster, CLUSTER_NODES),
    ],
)
def test_each_kafka_node_has_the_settings_of_its_local_twin(
    template: str, merged_compose: Callable[[], dict[str, Any]], nodes: list[str]
) -> None:
    services = merged_compose()["services"]
    expected = cluster_wide(template_properties(template))

    for node in nodes:
        assert cluster_wide(broker_properties(services[node]["environment"])) == expected, node


def test_the_three_nodes_form_one_quorum_as_make_up_brokers_3_does() -> None:
    services = compose_with_cluster()["services"]
    local_nodes = plan_cluster("localhost:9092", controller_port=9093, brokers=3)
    environments = [services[node]["environment"] for node in CLUSTER_NODES]
    voters = ",".join(f"{number}@{node}:9093" for number, node in enumerate(CLUSTER_NODES, 1))

    assert len({env["CLUSTER_ID"] for env in environments}) == 1, "one cluster id"
    assert [env["KAFKA_NODE_ID"] for env in environments] == [1, 2, 3]
    assert {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in environments} == {voters}
    assert {env["KAFKA_PROCESS_ROLES"] for env in environments} == {"broker,controller"}
    for node, local, env in zip(CLUSTER_NODES, local_nodes, environments, strict=True):
        # From the host, each node is where `make up BROKERS=3` puts it.
        assert f"EXTERNAL://localhost:{local.port}" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert f"127.0.0.1:{local.port}:{local.port}" in services[node]["ports"]
        assert f"EXTERNAL://:{local.port}" in env["KAFKA_LISTENERS"]


def test_each_node_keeps_its_data_on_a_volume_of_its_own() -> None:
    merged = compose_with_cluster()
    services = merged["services"]

    volumes = []
    for node in CLUSTER_NODES:
        [mount] = services[node]["volumes"]
        volume, _, target = mount.partition(":")
        assert services[node]["environment"]["KAFKA_LOG_DIRS"] == target, node
        volumes.append(volume)

    assert len(set(volumes)) == 3
    assert set(volumes) <= set(merged["volumes"])


def test_with_the_cluster_every_service_knows_every_node() -> None:
    services = compose_with_cluster()["services"]
    every_node = ",".join(f"{node}:29092" for node in CLUSTER_NODES)

    for name in ("topics", "worker", "api", "console"):
        assert services[name]["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == every_node, name
    topics = services["topics"]
    assert topics["environment"]["TOPIC_REPLICATION_FACTOR"] == "3"
    assert topics["environment"]["TOPIC_MIN_INSYNC_REPLICAS"] == "2"
    api_wait = float(services["api"]["environment"]["API_PRODUCE_TIMEOUT_SECONDS"])
    assert api_wait == API_PRODUCE_TIMEOUT_SECONDS, "as make up BROKERS=3 waits out a failover"
    assert set(topics["depends_on"]) == set(CLUSTER_NODES), "three replicas need three brokers"
    for node in CLUSTER_NODES:
        assert topics["depends_on"][node] == {"condition": "service_healthy"}
        assert "healthcheck" in services[node]


@pytest.mark.parametrize("merged_compose", [compose, compose_with_cluster])
def test_the_topics_service_creates_every_topic_the_services_use(
    merged_compose: Callable[[], dict[str, Any]],
) -> None:
    """The retry topics' names come from EMAIL_TOPIC and WORKER_RETRY_SCHEDULE, so the topics
    service and the services must read the same."""
    services = merged_compose()["services"]

    def topics_of(service: str) -> list[str]:
        environment = services[service].get("environment", {})
        fields: dict[str, Any] = {name.lower(): str(value) for name, value in environment.items()}
        return topic_names(Settings(_env_file=None, **fields))

    for service in ("worker", "api", "console"):
        assert topics_of(service) == topics_of("topics"), service
