"""The local stack's and the tests' own settings: the services' Settings, plus where Kafka's jars,
Mailpit and Chromium are, and how the local Kafka runs. No service reads these.

`python -m deploy.local`, the test fixtures and the harnesses (chaos, bench, browser) read them;
docs/settings.md lists them apart from the settings a deployment sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator

from shared.settings import PROJECT_ROOT, Port, Seconds, Settings, settings_or_exit


class LocalSettings(Settings):
    # The local Kafka (`make up`): the broker listens on the host and port of the first
    # bootstrap server, its controller on kafka_controller_port. Relative paths below are
    # relative to the project directory.
    kafka_libs_dir: Path = Path(".cache/kafka/libs")
    mailpit_cache_dir: Path = Path(".cache/mailpit")  # Mailpit, built once, for comparisons
    kafka_controller_port: Port = 9093
    kafka_heap_opts: str = "-Xms256m -Xmx512m"
    kafka_start_timeout_seconds: Seconds = 60.0
    # 3 (`make up BROKERS=3`): a cluster of three nodes, each a broker and a controller, on
    # the next ports: 9092/9093, 9094/9095, 9096/9097 (deploy/local/cluster_plan.py).
    kafka_brokers: Annotated[int, Field(ge=1, le=3)] = 1
    # The browser the browser tests and `make screenshot` drive: Debian's chromium by default.
    chromium_path: str = "chromium"

    @field_validator("kafka_brokers")
    @classmethod
    def _check_brokers(cls, value: int) -> int:
        # Two voters would stop as soon as either is down: no better than one.
        if value not in (1, 3):
            raise ValueError("expected 1 (one node) or 3 (a cluster that survives one down)")
        return value

    @field_validator("kafka_libs_dir", "mailpit_cache_dir")
    @classmethod
    def _cache_relative_to_project(cls, value: Path) -> Path:
        """Relative paths mean the same directory whatever the working directory is."""
        return value if value.is_absolute() else PROJECT_ROOT / value

    @property
    def kafka_listener(self) -> tuple[str, int]:
        """The (host, port) a local broker listens on: the first bootstrap server."""
        host, _, port = self.kafka_bootstrap_servers.split(",")[0].strip().rpartition(":")
        return host, int(port)


def load_local_settings() -> LocalSettings:
    """Read the settings, or exit with one clear line per invalid value."""
    return settings_or_exit(LocalSettings)
