"""deploy/compose.yaml stays equivalent to `make up`: every variable it sets is a real setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shared.settings import PROJECT_ROOT, Settings

COMPOSE_FILE = PROJECT_ROOT / "deploy" / "compose.yaml"
SERVICES_BUILT_HERE = {"topics", "smtp_sink", "worker", "api"}


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

    for name in ("smtp_sink", "worker", "api"):
        assert services[name]["command"] == ["python", "-m", f"services.{name}"]
        assert "healthcheck" in services[name]


def test_compose_builds_from_the_project(tmp_path: Path) -> None:
    build = compose()["services"]["api"]["build"]

    assert (COMPOSE_FILE.parent / build["context"] / build["dockerfile"]).is_file()
