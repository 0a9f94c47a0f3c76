"""A single-node Apache Kafka broker (KRaft) run from the official jars on Maven Central.

`fetch_kafka` gathers the jars once with Maven; `KafkaBroker` formats its storage once,
starts it in the background, waits until it answers Kafka requests, and stops it by its pid.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from string import Template

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from deploy.local.errors import StackError
from deploy.local.processes import BackgroundProcess, ensure_port_free, tail
from deploy.local.settings import LocalSettings

KAFKA_DEPLOY_DIR = Path(__file__).resolve().parent.parent / "kafka"
POM_FILE = KAFKA_DEPLOY_DIR / "pom.xml"
SERVER_PROPERTIES_TEMPLATE = KAFKA_DEPLOY_DIR / "server.properties"
BROKER_LOG4J_CONFIG = KAFKA_DEPLOY_DIR / "log4j2.yaml"
TOOLS_LOG4J_CONFIG = KAFKA_DEPLOY_DIR / "tools-log4j2.yaml"
KAFKA_TOOLS_DIR = KAFKA_DEPLOY_DIR / "bin"
MINIMUM_JAVA_VERSION = 17
STOP_GRACE_SECONDS = 30.0

# Kafka's own defaults for the broker JVM (bin/kafka-run-class.sh), minus the heap size.
BROKER_JVM_OPTS = [
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
]

INSTALL_JAVA = (
    "Install a JDK 17 or newer and run the command again: on Debian/Ubuntu "
    "`sudo apt-get install openjdk-17-jdk-headless`, on macOS `brew install openjdk@17`. "
    "If it is installed somewhere else, set JAVA_HOME to it."
)
INSTALL_MAVEN = (
    "Install Maven and run the command again: on Debian/Ubuntu `sudo apt-get install maven`, "
    "on macOS `brew install maven`."
)


def find_java() -> str:
    """The `java` to run Kafka with (JAVA_HOME first, then PATH), checked to be new enough."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home, "bin", "java") if java_home else None
    java = str(candidate) if candidate and candidate.is_file() else shutil.which("java")
    if java is None:
        raise StackError(f"Java was not found: the Kafka broker is a Java program. {INSTALL_JAVA}")
    version_text = subprocess.run(
        [java, "-version"], capture_output=True, text=True, check=False
    ).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_text)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0_392" is Java 8
        major = int(match.group(2))
    if major < MINIMUM_JAVA_VERSION:
        raise StackError(
            f"{java} is Java {major or 'of an unknown version'}, and Kafka 4 needs Java "
            f"{MINIMUM_JAVA_VERSION} or newer. {INSTALL_JAVA}"
        )
    return java


def kafka_version(libs_dir: Path) -> str:
    jars = sorted(libs_dir.glob("kafka_2.13-*.jar"))
    return jars[0].stem.removeprefix("kafka_2.13-") if jars else "unknown"


def new_cluster_id() -> str:
    """A random cluster id in Kafka's form: a UUID in URL-safe base64 without padding.

    Like Kafka's own `Uuid.randomUuid()`, never one that starts with "-": the storage
    tool would read it as an option and refuse to format ("expected one argument").
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class FetchResult:
    libs_dir: Path
    fetched: bool
    seconds: float
    jar_count: int
    megabytes: float


def fetch_kafka(libs_dir: Path) -> FetchResult:
    """Copy the jars named by deploy/kafka/pom.xml into libs_dir, unless they are there already.

    A stamp file holds the pom's hash, so a second run neither starts Maven nor needs the
    network, and changing the Kafka version in the pom fetches the new jars.
    """
    started = time.monotonic()
    stamp = libs_dir / ".fetched-from-pom"
    pom_hash = hashlib.sha256(POM_FILE.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text().strip() == pom_hash:
        return _fetch_result(libs_dir, fetched=False, started=started)

    find_java()  # Maven itself needs Java; say so first
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "Maven was not found: it fetches the official Apache Kafka jars from Maven Central "
            f"(deploy/kafka/pom.xml). {INSTALL_MAVEN}"
        )
    partial_dir = libs_dir.with_name(libs_dir.name + ".partial")
    shutil.rmtree(partial_dir, ignore_errors=True)
    command = [
        mvn, "--batch-mode", "--quiet", "--file", str(POM_FILE),
        "dependency:copy-dependencies", f"-DoutputDirectory={partial_dir}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(partial_dir, ignore_errors=True)
        errors = [line for line in result.stdout.splitlines() if "ERROR" in line][:6]
        raise StackError(
            "Maven could not fetch the Apache Kafka jars (deploy/kafka/pom.xml) from Maven "
            "Central. Check that this machine reaches https://repo.maven.apache.org (through "
            "the proxy or mirror in ~/.m2/settings.xml, if you need one) and run the command "
            "again; once fetched, the jars are kept in "
            f"{libs_dir} and no network is needed. Maven said:\n  " + "\n  ".join(errors)
        )
    shutil.rmtree(libs_dir, ignore_errors=True)
    partial_dir.rename(libs_dir)
    stamp.write_text(pom_hash + "\n")
    return _fetch_result(libs_dir, fetched=True, started=started)


def _fetch_result(libs_dir: Path, fetched: bool, started: float) -> FetchResult:
    jars = list(libs_dir.glob("*.jar"))
    return FetchResult(
        libs_dir=libs_dir,
        fetched=fetched,
        seconds=time.monotonic() - started,
        jar_count=len(jars),
        megabytes=sum(jar.stat().st_size for jar in jars) / 1e6,
    )


def broker_command(
    java: str, settings: LocalSettings, logs_dir: Path, config_file: Path
) -> list[str]:
    """The broker-and-controller process, as Kafka's kafka-server-start.sh runs it."""
    return [
        java,
        *shlex.split(settings.kafka_heap_opts),
        *BROKER_JVM_OPTS,
        f"-Dkafka.logs.dir={logs_dir}",
        f"-Dlog4j2.configurationFile={BROKER_LOG4J_CONFIG}",
        "-cp",
        f"{settings.kafka_libs_dir}/*",
        "kafka.Kafka",
        str(config_file),
    ]


def format_command(
    java: str, settings: LocalSettings, cluster_id: str, config_file: Path
) -> list[str]:
    """Kafka's storage tool formatting the log directories a config names, for cluster_id."""
    return [
        java,
        # A short-lived tool: like deploy/kafka/bin/kafka-run-class.sh, these start it in
        # about two thirds of the time, which counts when three nodes are formatted at once.
        "-XX:TieredStopAtLevel=1",
        "-XX:+UseSerialGC",
        f"-Dlog4j2.configurationFile={TOOLS_LOG4J_CONFIG}",
        "-cp",
        f"{settings.kafka_libs_dir}/*",
        "kafka.tools.StorageTool",
        "format",
        "--cluster-id",
        cluster_id,
        "--config",
        str(config_file),
    ]


@dataclass(frozen=True)
class BrokerStart:
    pid: int
    already_running: bool
    seconds: float


class KafkaBroker:
    """One broker-and-controller process whose data, config, pid and logs live in run_dir."""

    def __init__(self, settings: LocalSettings) -> None:
        self.settings = settings
        self.host, self.port = settings.kafka_listener
        self.controller_port = settings.kafka_controller_port
        self.data_dir = settings.run_dir / "kafka-data"
        self.logs_dir = settings.run_dir / "logs" / "kafka"
        self.config_file = settings.run_dir / "kafka" / "server.properties"
        self.process = BackgroundProcess("kafka", settings.run_dir, marker=str(self.config_file))

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    def start(self) -> BrokerStart:
        started = time.monotonic()
        running_pid = self.process.running_pid()
        if running_pid is not None:
            return BrokerStart(running_pid, already_running=True, seconds=0.0)

        java = find_java()
        fetch_kafka(self.settings.kafka_libs_dir)
        ensure_port_free(self.host, self.port, "KAFKA_BOOTSTRAP_SERVERS", f"{self.host}:19092")
        ensure_port_free(self.host, self.controller_port, "KAFKA_CONTROLLER_PORT", "19093")
        self._write_config()
        if not (self.data_dir / "meta.properties").is_file():
            self._format_storage(java)

        self.logs_dir.mkdir(parents=True, exist_ok=True)
        pid = self.process.start(
            broker_command(java, self.settings, self.logs_dir, self.config_file)
        )
        self._wait_until_ready(pid, started)
        return BrokerStart(pid, already_running=False, seconds=time.monotonic() - started)

    def stop(self) -> bool:
        return self.process.stop(STOP_GRACE_SECONDS)

    def _write_config(self) -> None:
        template = Template(SERVER_PROPERTIES_TEMPLATE.read_text())
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            template.substitute(
                host=self.host,
                port=self.port,
                controller_port=self.controller_port,
                data_dir=self.data_dir,
                partitions=self.settings.topic_partitions,
            )
        )

    def _format_storage(self, java: str) -> None:
        """Format the data directory once, as Kafka's storage tool does for a new cluster."""
        command = format_command(java, self.settings, new_cluster_id(), self.config_file)
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StackError(
                f"Kafka's storage tool could not format {self.data_dir}:\n"
                f"{result.stdout}{result.stderr}".rstrip()
            )

    def _wait_until_ready(self, pid: int, started: float) -> None:
        deadline = started + self.settings.kafka_start_timeout_seconds
        while time.monotonic() < deadline:
            if self.process.running_pid() is None:
                raise StackError(
                    "Kafka stopped during start-up. The end of its logs:\n"
                    + tail(self.process.log_file)
                    + "\n"
                    + tail(self.server_log)
                )
            if asyncio.run(answers_kafka_requests(self.settings.kafka_bootstrap_servers)):
                return
            time.sleep(0.2)
        self.process.stop(STOP_GRACE_SECONDS)
        raise StackError(
            f"Kafka did not answer on {self.host}:{self.port} within "
            f"{self.settings.kafka_start_timeout_seconds:.0f} s, so it was stopped again "
            f"(KAFKA_START_TIMEOUT_SECONDS sets the limit). The end of its log:\n"
            + tail(self.server_log)
        )


async def answers_kafka_requests(bootstrap_servers: str) -> bool:
    """True once a broker answers a Metadata request and lists itself as a live broker."""
    aiokafka_logger = logging.getLogger("aiokafka")
    level = aiokafka_logger.level
    aiokafka_logger.setLevel(logging.CRITICAL + 1)  # refused connections are expected here
    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=2000)
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    except KafkaError:
        return False
    finally:
        await client.close()
        aiokafka_logger.setLevel(level)


def run_kafka_tool(
    settings: LocalSettings, script: str, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run one of Kafka's own tools (deploy/kafka/bin) with the jars from the settings."""
    return subprocess.run(
        [str(KAFKA_TOOLS_DIR / script), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "KAFKA_LIBS_DIR": str(settings.kafka_libs_dir)},
    )


@dataclass(frozen=True)
class GroupOffsetRow:
    """One line of `kafka-consumer-groups.sh --describe`."""

    topic: str
    partition: int
    current_offset: int | None  # None: the group has committed nothing for this partition
    log_end_offset: int
    lag: int | None


def parse_group_description(output: str) -> list[GroupOffsetRow]:
    """The rows of `--describe`'s table, read by its header line."""
    lines = [line.split() for line in output.splitlines() if line.strip()]
    header = next((line for line in lines if "CURRENT-OFFSET" in line), None)
    if header is None:
        return []
    rows = []
    for line in lines[lines.index(header) + 1 :]:
        fields = dict(zip(header, line, strict=False))
        rows.append(
            GroupOffsetRow(
                topic=fields["TOPIC"],
                partition=int(fields["PARTITION"]),
                current_offset=_number(fields["CURRENT-OFFSET"]),
                log_end_offset=int(fields["LOG-END-OFFSET"]),
                lag=_number(fields["LAG"]),
            )
        )
    return rows


def _number(text: str) -> int | None:
    return None if text == "-" else int(text)
