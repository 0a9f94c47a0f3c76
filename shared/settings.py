"""The one place settings live: typed, validated at start, read from the environment and `.env`.

Each field is an environment variable of the same name in upper case (`kafka_bootstrap_servers`
is `KAFKA_BOOTSTRAP_SERVERS`); the README's table of settings is this model.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

Port = Annotated[int, Field(ge=1, le=65535)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=PROJECT_ROOT / ".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # Kafka: where clients connect, and the names the seed's walkthrough uses.
    kafka_bootstrap_servers: str = "localhost:9092"
    email_topic: str = "email.send"
    dlq_topic: str = "email.send.dlq"
    consumer_group: str = "email-send-group"
    topic_partitions: Annotated[int, Field(ge=1, le=1000)] = 3

    # The local stack (`make up`): the broker listens on the host and port of the first
    # bootstrap server, its controller on kafka_controller_port.
    run_dir: Path = Path("run")
    kafka_libs_dir: Path = Path(".cache/kafka/libs")
    kafka_controller_port: Port = 9093
    kafka_heap_opts: str = "-Xms256m -Xmx512m"
    kafka_start_timeout_seconds: Annotated[float, Field(gt=0)] = 60.0

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_bootstrap_servers(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    f"expected host:port[,host:port...], got {server.strip()!r} "
                    "(for example localhost:9092)"
                )
        return value

    @field_validator("run_dir", "kafka_libs_dir")
    @classmethod
    def _relative_to_project(cls, value: Path) -> Path:
        """Relative paths mean the same directory whatever the working directory is."""
        return value if value.is_absolute() else PROJECT_ROOT / value

    @property
    def kafka_listener(self) -> tuple[str, int]:
        """The (host, port) a local broker listens on: the first bootstrap server."""
        host, _, port = self.kafka_bootstrap_servers.split(",")[0].strip().rpartition(":")
        return host, int(port)


def load_settings() -> Settings:
    """Read the settings, or exit with one clear line per invalid value."""
    try:
        return Settings()
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            name = "_".join(str(part) for part in problem["loc"]).upper()
            reason = problem["msg"].removeprefix("Value error, ")
            lines.append(f"invalid setting {name}={problem['input']!r}: {reason}")
        sys.exit("\n".join(lines))
