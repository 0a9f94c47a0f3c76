"""`python -m deploy.local COMMAND`: the local stack's front door, called by the Makefile.

Each command is safe to run twice: starting what runs, or stopping what is stopped, says so
and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Callable

from deploy.local.errors import StackError
from deploy.local.kafka import KAFKA_TOOLS_DIR, KafkaBroker, fetch_kafka, kafka_version
from shared.kafka import ensure_topics
from shared.settings import PROJECT_ROOT, Settings, load_settings


def fetch_kafka_command(settings: Settings) -> None:
    result = fetch_kafka(settings.kafka_libs_dir)
    if result.fetched:
        print(
            f"Fetched Apache Kafka {kafka_version(result.libs_dir)} from Maven Central in "
            f"{result.seconds:.1f} s: {result.jar_count} jars, {result.megabytes:.0f} MB "
            f"in {_shown(result.libs_dir)}"
        )
    else:
        print(
            f"Apache Kafka {kafka_version(result.libs_dir)} jars are in {_shown(result.libs_dir)}"
        )


def kafka_up(settings: Settings) -> None:
    broker = KafkaBroker(settings)
    fetch_kafka_command(settings)
    start = broker.start()
    address = f"{broker.host}:{broker.port}"
    if start.already_running:
        print(f"Kafka is already running on {address} (pid {start.pid}).")
    else:
        print(
            f"Kafka {kafka_version(settings.kafka_libs_dir)} is ready on {address} after "
            f"{start.seconds:.1f} s (pid {start.pid}, log {_shown(broker.server_log)})."
        )


def kafka_down(settings: Settings) -> None:
    if KafkaBroker(settings).stop():
        print("Kafka stopped.")
    else:
        print("Kafka is not running.")


def topics(settings: Settings) -> None:
    for topic in asyncio.run(ensure_topics(settings)):
        verb = "created" if topic.created else "exists"
        print(f"Topic {topic.name}: {verb}, {topic.partitions} partitions.")


def up(settings: Settings) -> None:
    kafka_up(settings)
    topics(settings)
    print(
        "\nRunning:\n"
        f"  Kafka     {settings.kafka_bootstrap_servers}   "
        f"topics {settings.email_topic}, {settings.dlq_topic}\n"
        f"  Logs      {_shown(settings.run_dir / 'logs')}/\n"
        "\nTry the seed's walkthrough:\n"
        f"  deploy/kafka/bin/kafka-console-producer.sh --bootstrap-server "
        f"{settings.kafka_bootstrap_servers} --topic {settings.email_topic}\n"
        f"  deploy/kafka/bin/kafka-console-consumer.sh --bootstrap-server "
        f"{settings.kafka_bootstrap_servers} --topic {settings.email_topic} --from-beginning\n"
        "  make groups\n"
        "\nStop everything with: make down"
    )


def down(settings: Settings) -> None:
    kafka_down(settings)


def groups(settings: Settings) -> None:
    """Kafka's own view of the group: CURRENT-OFFSET, LOG-END-OFFSET and LAG per partition."""
    command = [
        str(KAFKA_TOOLS_DIR / "kafka-consumer-groups.sh"),
        "--bootstrap-server", settings.kafka_bootstrap_servers,
        "--group", settings.consumer_group,
        "--describe",
    ]  # fmt: skip
    print("$ " + " ".join([_shown(command[0]), *command[1:]]), flush=True)
    env = {**os.environ, "KAFKA_LIBS_DIR": str(settings.kafka_libs_dir)}
    sys.exit(subprocess.run(command, env=env, check=False).returncode)


def clean(settings: Settings) -> None:
    down(settings)
    shutil.rmtree(settings.run_dir, ignore_errors=True)
    print(f"Deleted {_shown(settings.run_dir)} (Kafka's data and the logs).")


def status(settings: Settings) -> None:
    pid = KafkaBroker(settings).process.running_pid()
    print(f"Kafka: {'running, pid ' + str(pid) if pid else 'not running'}")


COMMANDS: dict[str, Callable[[Settings], None]] = {
    "up": up,
    "down": down,
    "status": status,
    "fetch-kafka": fetch_kafka_command,
    "kafka-up": kafka_up,
    "kafka-down": kafka_down,
    "topics": topics,
    "groups": groups,
    "clean": clean,
}


def _shown(path: object) -> str:
    """A path as short as it can be said from the project directory."""
    text = str(path)
    prefix = f"{PROJECT_ROOT}/"
    return text.removeprefix(prefix)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.local", description=__doc__)
    parser.add_argument("command", choices=COMMANDS)
    command = COMMANDS[parser.parse_args().command]
    settings = load_settings()
    try:
        command(settings)
    except StackError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `... | head` closed our output early: not an error
        sys.stdout = None
        sys.exit(0)


if __name__ == "__main__":
    main()
