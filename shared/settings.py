"""The settings the services read and a deployment sets: typed, validated at start, read from the
environment and `.env`.

Each field is an environment variable of the same name in upper case (`kafka_bootstrap_servers`
is `KAFKA_BOOTSTRAP_SERVERS`); the tables of docs/settings.md are this model. The local stack's
and the tests' own settings (Kafka's jars, its heap, Chromium...) extend it in
deploy/local/settings.py.
"""

from __future__ import annotations

import re
import sys
from datetime import timedelta
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

from shared.retry_topics import (
    DEFAULT_RETRY_SCHEDULE,
    RetrySchedule,
    parse_duration,
    parse_schedule,
    retry_topics,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
GroupId = Annotated[str, Field(min_length=1, max_length=249)]
# A comma-separated list in the environment: SINK_FAIL_5XX_RECIPIENTS=a@example.com,b@example.com
CommaSeparated = Annotated[list[str], NoDecode]
POSTGRES_SCHEMES = ("postgresql", "postgres")  # the two that libpq and asyncpg accept
_RATE_LIMIT_EXPECTED = (
    "expected a whole number of emails a second, at least 1 (for example 50), or nothing for "
    "no limit"
)

# SINK_REPLY_DELAY_MS: a round trip across the planet is a few hundred milliseconds; a minute
# is beyond any network path.
MAX_REPLY_DELAY_MS = 60_000
_REPLY_DELAY_EXPECTED = (
    f"expected a whole number of milliseconds from 0 (no delay) to {MAX_REPLY_DELAY_MS}, for "
    "example 20 for a relay in another region"
)

TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")  # what Kafka accepts
# Far beyond any MTA's (Postfix: 5 days), and within what a date can add.
MAX_RETRY_AGE = timedelta(days=365)


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

    # An email's life after the 202 (docs/events.md): one event per change of its state, and
    # the retry topics a deferred one waits in, one per delay of the schedule, the last reused,
    # until its age since acceptance would pass the limit.
    events_topic: str = "email.events"
    # Defaults as written in the environment, so that an error shows them so too.
    worker_retry_schedule: Annotated[RetrySchedule, NoDecode] = Field(
        default=DEFAULT_RETRY_SCHEDULE, validate_default=True
    )
    worker_max_retry_age: timedelta = Field(default="24h", validate_default=True)
    # The consumer groups of the retry topics (in the worker) and of the events (the API's read
    # model of GET /emails/{id}): each one's CURRENT-OFFSET is how far it has read.
    retry_consumer_group: GroupId = "email-retry-group"
    status_consumer_group: GroupId = "email-status-group"

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
    # POST /emails/batch: its body may be larger than one email's (each email in it is still
    # held to api_max_body_bytes).
    api_max_batch_body_bytes: Annotated[int, Field(ge=1024)] = 5 * 1024 * 1024

    # services/api's store of Idempotency-Keys: the answer each key got, so that a retry gets
    # it again. Unset api_store_url: the SQLite file at api_db_path, which the API processes of
    # one host share. postgresql://user:password@host:5432/database: a database that the API
    # processes of every host share. A path (no scheme) is a SQLite file too.
    api_db_path: Path = Path("api/store.sqlite3")
    api_store_url: str | None = None
    # How long a key is kept: a retry within it gets the first answer; after it, the key is
    # free again (docs/api.md, "Idempotency-Key").
    api_idempotency_key_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 24.0

    # services/worker: consumes email_topic as consumer_group and delivers over SMTP.
    worker_host: str = "127.0.0.1"
    worker_port: Port = 8001
    worker_max_batch_records: Annotated[int, Field(ge=1)] = 500
    # Emails of one partition in flight at once, each borrowing an SMTP connection; 1 delivers
    # strictly in offset order. Commits never pass an unfinished record either way. A retry
    # topic's partitions hold only the few emails the relay deferred: fewer lanes suffice.
    worker_lanes_per_partition: Annotated[int, Field(ge=1, le=64)] = 8
    worker_retry_lanes_per_partition: Annotated[int, Field(ge=1, le=64)] = 2
    # How long the worker's producer waits for more records before it sends a batch: each
    # email's events are acknowledged that much later, and its record committed, for fewer,
    # fuller requests (a tenth of the worker's CPU an email at 5 ms, against 1).
    worker_producer_linger_ms: Annotated[int, Field(ge=0, le=1000)] = 5
    worker_shutdown_timeout_seconds: Seconds = 15.0
    # Static membership (KIP-345): a name of this worker's own, the same after a restart, so
    # that it gets its partitions back with no rebalance if it returns within the session
    # timeout (10 s). Unset: a new member at each start, as by default.
    worker_instance_id: Annotated[str, Field(min_length=1, max_length=249)] | None = None
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
    # Relay etiquette: emails (transactions) a second and open connections, for this worker
    # process. Unset: no rate limit until the relay says "slow down", and a connection per
    # lane in a transaction.
    smtp_max_rate: int | None = None
    smtp_max_connections: int | None = None

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
    # A relay's rate limit: above this many emails (MAIL FROM) in any sliding second, 421 4.7.0
    # and the connection closed. Unset: no limit.
    sink_rate_limit: int | None = None
    # How long the reply to the final "." of an email to slow@simulator.example.com waits.
    sink_simulator_slow_seconds: Annotated[float, Field(ge=0, le=3600)] = 10.0
    # Optional STARTTLS and AUTH, as a production relay has them (aiosmtpd's own support).
    sink_tls_cert_file: Path | None = None
    sink_tls_key_file: Path | None = None
    sink_require_starttls: bool = False
    sink_tls_implicit: bool = False  # TLS from the first byte (port 465) instead of STARTTLS
    sink_auth_file: Path | None = None  # "username:password" lines, as Mailpit's --smtp-auth-file
    # A relay in another region: every reply of the sink, the greeting too, leaves this many
    # milliseconds late, as over a network path of that round trip (0: at once).
    sink_reply_delay_ms: int = 0

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

    @field_validator("events_topic")
    @classmethod
    def _check_events_topic(cls, value: str, info: ValidationInfo) -> str:
        if not TOPIC_NAME.fullmatch(value):
            raise ValueError(
                "expected a Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-'"
            )
        others = {info.data.get("email_topic"), info.data.get("dlq_topic")}
        if value in others:
            raise ValueError(
                "the events need a topic of their own, not EMAIL_TOPIC's or DLQ_TOPIC's"
            )
        return value

    @field_validator("retry_consumer_group", "status_consumer_group")
    @classmethod
    def _check_own_group(cls, value: str, info: ValidationInfo) -> str:
        others = {
            "CONSUMER_GROUP": info.data.get("consumer_group"),
            "RETRY_CONSUMER_GROUP": info.data.get("retry_consumer_group"),
        }
        for name, group in others.items():
            if group == value:
                raise ValueError(
                    f"it is {name} too: the two readers would share the group's partitions, "
                    "each reading part of the records; give each a group of its own"
                )
        return value

    @field_validator("worker_retry_schedule", mode="before")
    @classmethod
    def _parse_retry_schedule(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value  # one already read
        schedule = parse_schedule(value)
        for topic in retry_topics(info.data.get("email_topic", "email.send"), schedule):
            if topic in (info.data.get("dlq_topic"), info.data.get("events_topic")):
                raise ValueError(
                    f"its topic {topic} is DLQ_TOPIC or EVENTS_TOPIC: give them other names"
                )
        return schedule

    @field_validator("worker_max_retry_age", mode="before")
    @classmethod
    def _parse_max_retry_age(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("worker_max_retry_age")
    @classmethod
    def _check_max_retry_age(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        if not timedelta(0) < value <= MAX_RETRY_AGE:
            raise ValueError(f"expected more than 0 and at most {MAX_RETRY_AGE.days} days")
        schedule: RetrySchedule = info.data.get("worker_retry_schedule", ())
        if schedule and value < schedule[0].delay:
            raise ValueError(
                f"it is shorter than the first delay of WORKER_RETRY_SCHEDULE "
                f"({schedule[0].label}): every deferred email would expire untried; make it "
                "longer, or the first delay shorter"
            )
        return value

    @field_validator(
        "run_dir", "smtp_ca_file", "sink_tls_cert_file", "sink_tls_key_file", "sink_auth_file"
    )
    @classmethod
    def _relative_to_project(cls, value: Path | None) -> Path | None:
        """Relative paths mean the same file whatever the working directory is."""
        return value if value is None or value.is_absolute() else PROJECT_ROOT / value

    @field_validator("dedupe_db_path", "sink_db_path", "api_db_path")
    @classmethod
    def _relative_to_run_dir(cls, value: Path, info: ValidationInfo) -> Path:
        run_dir: Path = info.data.get("run_dir", PROJECT_ROOT / "run")
        return value if value.is_absolute() else run_dir / value

    @field_validator("dedupe_url", "api_store_url")
    @classmethod
    def _check_store_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Empty means unset; a path is a SQLite file, relative to run_dir as the *_db_path."""
        run_dir: Path = info.data.get("run_dir", PROJECT_ROOT / "run")
        return store_location(value, run_dir)

    @field_validator("sink_rate_limit", "smtp_max_rate", mode="before")
    @classmethod
    def _check_rate_limit(cls, value: object) -> object:
        """Empty means unset; anything else is a whole number of emails a second, at least 1."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        text = str(value).strip()
        if isinstance(value, bool) or not (text.isascii() and text.isdigit()) or int(text) < 1:
            raise ValueError(_RATE_LIMIT_EXPECTED)
        return int(text)

    @field_validator("smtp_max_connections", mode="before")
    @classmethod
    def _check_connection_limit(cls, value: object) -> object:
        """Empty means unset; anything else is a whole number of connections, at least 1."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        text = str(value).strip()
        if isinstance(value, bool) or not (text.isascii() and text.isdigit()) or int(text) < 1:
            raise ValueError(
                "expected a whole number of connections, at least 1 (for example 10), or "
                "nothing for a connection per lane in a transaction"
            )
        return int(text)

    @field_validator("sink_reply_delay_ms", mode="before")
    @classmethod
    def _check_reply_delay(cls, value: object) -> object:
        """A whole number of milliseconds, from 0 (no delay) to a minute; empty means 0."""
        text = str(value).strip() or "0"
        whole = not isinstance(value, bool) and text.isascii() and text.isdigit()
        if not whole or int(text) > MAX_REPLY_DELAY_MS:
            raise ValueError(_REPLY_DELAY_EXPECTED)
        return int(text)

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
