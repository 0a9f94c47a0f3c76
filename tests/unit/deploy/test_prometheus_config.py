"""deploy/prometheus/prometheus.yml scrapes every service at the port compose gives it."""

from __future__ import annotations

from typing import Any

import yaml

from tests.unit.deploy.test_compose import PROMETHEUS_CONFIG, compose


def scrape_configs() -> dict[str, dict[str, Any]]:
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_the_api_and_the_sink_are_scraped_at_their_service_names_and_ports() -> None:
    jobs = scrape_configs()
    services = compose()["services"]
    api_port = services["api"]["environment"]["API_PORT"]
    sink_port = services["smtp_sink"]["environment"]["SINK_HTTP_PORT"]

    assert jobs["api"]["static_configs"] == [{"targets": [f"api:{api_port}"]}]
    assert jobs["smtp_sink"]["static_configs"] == [{"targets": [f"smtp_sink:{sink_port}"]}]
    for job in jobs.values():
        assert job.get("metrics_path", "/metrics") == "/metrics"


def test_every_worker_replica_is_a_target_of_its_own() -> None:
    """With --scale worker=2, compose's DNS answers `worker` with each replica's address."""
    worker = scrape_configs()["worker"]
    worker_port = compose()["services"]["worker"]["environment"]["WORKER_PORT"]

    assert "static_configs" not in worker
    assert worker["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": int(worker_port), "refresh_interval": "5s"}
    ]


def test_only_the_three_services_are_scraped() -> None:
    assert set(scrape_configs()) == {"api", "worker", "smtp_sink"}
