"""deploy/compose.yaml stays equivalent to `make up`: every variable it sets is a real setting."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from shared.settings import PROJECT_ROOT, Settings

COMPOSE_FILE = PROJECT_ROOT / "deploy" / "compose.yaml"
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


def dockerfile_settings() -> set[str]:
    lines = (PROJECT_ROOT / "deploy" / "Dockerfile").read_text().splitlines()
    env_lines = [line.removeprefix("ENV ") for line in lines if line.startswith("ENV ")]
    return {pair.split("=")[0] for line in env_lines for pair in line.split() if "=" in pair}


def test_every_variable_compose_sets_for_our_services_is_a_setting() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    services = compose()["services"]

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


def test_every_published_port_is_on_the_loopback_interface() -> None:
    """Like the services' own *_HOST defaults: nothing is reachable from the network unless
    someone widens it."""
    services = compose()["services"]

    published = [port for service in services.values() for port in service.get("ports", [])]

    assert published
    assert all(port.startswith("127.0.0.1:") for port in published), published
