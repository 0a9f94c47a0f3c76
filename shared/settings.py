"""The settings the services read and a deployment sets: typed, validated at start, read from the
environment and `.env`.

Each field is an environment variable of the same name in upper case (`kafka_bootstrap_servers`
is `KAFKA_BOOTSTRAP_SERVERS`); the tables of docs/settings.md are this model. The local stack's
and the tests' own settings (Kafka's jars, its heap, Chromium...) extend it in
deploy/local/settings.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
# A comma-separated list in the environment: SINK_FAIL_5XX_RECIPIENTS=a@example.com,b@example.com
CommaSeparated = Annotated[list[str], NoDecode]
POSTGRES_SCHEMES = ("postgresql", "postgres")  # the two that libpq and asyncpg accept


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
    # Copies of each partition of the topics `make topics` creates, and how many must hold a
    # record before acks=all acknowledges it. Unset: the broker's own min.insync.replicas.
    # `make up BROKERS=3` makes them 3 and 2 unless they are set.
    topic_replication_factor: Annotated[int, Field(ge=1, le=32)] = 1
    topic_min_insync_replicas: Annotated[int, Field(ge=1, le=32)] | None = None

    # Where the services keep their data files (the dedupe store, the sink's messages), and
    # the local stack its pid files and logs. Relative paths below are relative to the project
    # directory, and the data files' to run_dir.
    run_dir: Path = Path("run")

    # services/api: accepts emails over HTTP and produces them to email_topic.
    api_host: str = "127.0.0.1"
    api_port: Port = 8000
    api_max_body_bytes: Annotated[int, Field(ge=1024)] = 512 * 1024
    api_max_recipients: Annotated[int, Field(ge=1)] = 50
    api_produce_timeout_seconds: Seconds = 5.0
    api_retry_after_seconds: Annotated[int, Field(ge=1)] = 5

    # services/worker: consumes email_topic as consumer_group and delivers over SMTP.
    worker_host: str = "127.0.0.1"
    worker_port: Port = 8001
    worker_max_batch_records: Annotated[int, Field(ge=1)] = 500
    # Emails of one partition in flight at once, each over its own SMTP connection; 1 delivers
    # strictly in offset order. Commits never pass an unfinished record either way.
    worker_lanes_per_partition: Annotated[int, Field(ge=1, le=64)] = 8
    worker_shutdown_timeout_seconds: Seconds = 15.0
    # Static membership (KIP-345): a name of this worker's own, the same after a restart, so
    # that it gets its partitions back with no rebalance if it returns within the session
    # timeout (10 s). Unset: a new member at each start, as by default.
    worker_instance_id: Annotated[str, Field(min_length=1, max_length=249)] | None = None
    worker_max_attempts: Annotated[int, Field(ge=0)] = 0  # 0: retry transient failures forever
    worker_retry_initial_seconds: Seconds = 0.5
    worker_retry_max_seconds: Seconds = 30.0
    dedupe_db_path: Path = Path("worker/delivered.sqlite3")
    # Where the dedupe store lives. Unset: the SQLite file at dedupe_db_path, which the workers
    # of one host share. postgresql://user:password@host:5432/database: a PostgreSQL database
    # that the workers of every host share. A path (no scheme) is a SQLite file too.
    dedupe_url: str | None = None
    # How long the dedupe store keeps an email's state. Unset: email_topic's retention.ms plus
    # a day (after that no record of the email can be read again); never, if that is infinite.
    dedupe_retention_hours: Annotated[float, Field(gt=0)] | None = None
    message_id_domain: str = "email-pipeline.local"

    # Where the worker delivers: the local sink by default, any SMTP server in production.
    smtp_host: str = "localhost"
    smtp_port: Port = 1025
    # Connecting, the greeting, EHLO, STARTTLS and AUTH: nothing is sent yet, so a short wait.
    smtp_timeout_seconds: Annotated[
        float, Field(gt=0, validation_alias=AliasChoices("smtp_timeout_seconds", "smtp_timeout"))
    ] = 10.0
    # The waits of one email's transaction, RFC 5321 4.5.3.2's defaults: MAIL and RCPT 5 min,
    # DATA's 354 2 min, and 10 min for the reply to the final "." (the server may be storing
    # the email then: giving up sooner and sending again would deliver it twice).
    smtp_command_timeout_seconds: Seconds = 300.0
    smtp_data_timeout_seconds: Seconds = 120.0
    smtp_data_end_timeout_seconds: Seconds = 600.0
    # Production relays (port 587) want STARTTLS and AUTH; `tls` is implicit TLS (port 465).
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_ca_file: Path | None = None  # trust this CA too, e.g. a self-signed test CA
    # Credentials never cross an unencrypted connection unless this says they may.
    smtp_allow_plaintext_auth: bool = False

    # services/smtp_sink: the local SMTP server that stores and prints what it receives.
    sink_host: str = "127.0.0.1"
    sink_smtp_port: Port = 1025
    sink_http_port: Port = 8025
    sink_db_path: Path = Path("sink/messages.sqlite3")
    sink_max_message_bytes: Annotated[int, Field(ge=1024)] = 10 * 1024 * 1024
    sink_fail_4xx_recipients: CommaSeparated = []
    sink_fail_5xx_recipients: CommaSeparated = []
    sink_fail_4xx_rate: Probability = 0.0
    sink_fail_5xx_rate: Probability = 0.0
    # Greylisting as real servers do it: a recipient at one of these domains is refused with
    # 451 4.7.1 from its sender's first try until this many seconds later (0: off).
    sink_greylist_domains: CommaSeparated = []
    sink_greylist_seconds: Annotated[float, Field(ge=0)] = 0.0
    # Optional STARTTLS and AUTH, as a production relay has them (aiosmtpd's own support).
    sink_tls_cert_file: Path | None = None
    sink_tls_key_file: Path | None = None
    sink_require_starttls: bool = False
    sink_tls_implicit: bool = False  # TLS from the first byte (port 465) instead of STARTTLS
    sink_auth_file: Path | None = None  # "username:password" lines, as Mailpit's --smtp-auth-file

    # services/console: the live offset picture, read-only; it reads the API and the sink here.
    console_host: str = "127.0.0.1"
    console_port: Port = 8080
    console_refresh_seconds: Annotated[float, Field(ge=0.1, le=1)] = 0.5  # pages: ≥ 1 a second
    # Unset: the API's and the sink's own host and port settings.
    console_api_url: str | None = None
    console_sink_url: str | None = None

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @property
    def worker_longest_stop_seconds(self) -> float:
        """The longest a worker takes to stop a partition: the grace for its emails in flight,
        then the wait for the reply to a final "." already sent."""
        return self.worker_shutdown_timeout_seconds + self.smtp_data_end_timeout_seconds

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

    @field_validator(
        "run_dir", "smtp_ca_file", "sink_tls_cert_file", "sink_tls_key_file", "sink_auth_file"
    )
    @classmethod
    def _relative_to_project(cls, value: Path | None) -> Path | None:
        """Relative paths mean the same file whatever the working directory is."""
        return value if value is None or value.is_absolute() else PROJECT_ROOT / value

    @field_validator("dedupe_db_path", "sink_db_path")
    @classmethod
    def _relative_to_run_dir(cls, value: Path, info: ValidationInfo) -> Path:
        run_dir: Path = info.data.get("run_dir", PROJECT_ROOT / "run")
        return value if value.is_absolute() else run_dir / value

    @field_validator("dedupe_url")
    @classmethod
    def _check_dedupe_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Empty means unset; a path is a SQLite file, relative to run_dir as dedupe_db_path."""
        if value is None or not value.strip():
            return None
        value = value.strip()
        scheme, has_scheme, _ = value.partition("://")
        if not has_scheme:
            run_dir: Path = info.data.get("run_dir", PROJECT_ROOT / "run")
            return str(value if Path(value).is_absolute() else run_dir / value)
        if scheme not in POSTGRES_SCHEMES:
            raise ValueError(
                "expected postgresql://user:password@host:5432/database (a database the "
                "workers of every host share) or the path of a SQLite file (no scheme), got a "
                f"{scheme}:// URL"
            )
        urlsplit(value).port  # noqa: B018 (it raises ValueError for a port out of range)
        return value

    @field_validator(
        "sink_fail_4xx_recipients",
        "sink_fail_5xx_recipients",
        "sink_greylist_domains",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip().lower() for item in value.split(",") if item.strip()]
        return value


def store_location(value: str | None, run_dir: Path) -> str | None:
    """A store's URL setting (DEDUPE_URL, API_STORE_URL) checked: None when unset or empty, a
    postgresql:// URL as given, a path (no scheme) as the absolute path of a SQLite file."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    scheme, has_scheme, _ = value.partition("://")
    if not has_scheme:
        return str(value if Path(value).is_absolute() else run_dir / value)
    if scheme not in POSTGRES_SCHEMES:
        raise ValueError(
            "expected postgresql://user:password@host:5432/database (a database that the "
            "processes of every host share) or the path of a SQLite file (no scheme), got a "
            f"{scheme}:// URL"
        )
    urlsplit(value).port  # noqa: B018 (it raises ValueError for a port out of range)
    return value


def is_postgres_url(location: str | Path) -> bool:
    """Whether a store's location, as store_location gives it, names PostgreSQL (else: a SQLite
    file)."""
    return str(location).startswith(tuple(f"{scheme}://" for scheme in POSTGRES_SCHEMES))


AnySettings = TypeVar("AnySettings", bound=Settings)


def load_settings() -> Settings:
    """Read the settings, or exit with one clear line per invalid value."""
    return settings_or_exit(Settings)


def settings_or_exit(model: type[AnySettings]) -> AnySettings:
    """Read `model` (Settings or a model that extends it) from the environment and `.env`, or
    exit with one clear line per invalid value."""
    try:
        return model()
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            name = "_".join(str(part) for part in problem["loc"]).upper()
            reason = problem["msg"].removeprefix("Value error, ")
            lines.append(f"invalid setting {name}={problem['input']!r}: {reason}")
        sys.exit("\n".join(lines))
