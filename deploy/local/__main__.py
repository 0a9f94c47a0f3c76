"""`python -m deploy.local COMMAND`: the local stack's front door, called by the Makefile.

Every command is safe to run twice: starting what runs, or stopping what is stopped, says so
and exits 0. Problems come out as one paragraph saying what to do, never as a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys

from deploy.local import demo, sender
from deploy.local.chromium import ensure_chromium
from deploy.local.errors import StackError
from deploy.local.kafka import KAFKA_TOOLS_DIR, KafkaBroker, fetch_kafka, kafka_version
from deploy.local.kafka_cluster import KafkaCluster
from deploy.local.kafka_mode import (
    ensure_no_other_kafka,
    record_brokers,
    running_pids,
    stack_settings,
)
from deploy.local.mailpit import MAILPIT_VERSION, fetch_mailpit
from deploy.local.postgres import local_postgres
from deploy.local.settings import LocalSettings, load_local_settings
from deploy.local.smtp_link import describe
from deploy.local.stack import LocalStack, Service
from shared.kafka import ensure_topics
from shared.settings import PROJECT_ROOT


def fetch_kafka_command(settings: LocalSettings) -> None:
    result = fetch_kafka(settings.kafka_libs_dir)
    if result.fetched:
        print(
            f"Fetched Apache Kafka {kafka_version(result.libs_dir)} from Maven Central in "
            f"{result.seconds:.1f} s: {result.jar_count} jars, {result.megabytes:.0f} MB "
            f"in {shown(result.libs_dir)}"
        )
    else:
        print(f"Apache Kafka {kafka_version(result.libs_dir)} jars are in {shown(result.libs_dir)}")


def fetch_mailpit_command(settings: LocalSettings) -> None:
    build = fetch_mailpit(settings.mailpit_cache_dir)
    if build.built:
        print(f"Built Mailpit {MAILPIT_VERSION} in {build.seconds:.1f} s: {shown(build.binary)}")
    else:
        print(f"Mailpit {MAILPIT_VERSION} is in {shown(build.binary)}")


def chromium_command(settings: LocalSettings) -> None:
    print(f"Chromium: {ensure_chromium(settings.chromium_path)}")


def kafka_up(settings: LocalSettings) -> None:
    ensure_no_other_kafka(settings)
    fetch_kafka_command(settings)
    # Recorded before the start, so that `make down` finds nodes left running by a failed one.
    record_brokers(settings.run_dir, settings.kafka_brokers)
    if settings.kafka_brokers > 1:
        cluster_up(settings)
        return
    broker = KafkaBroker(settings)
    start = broker.start()
    address = f"{broker.host}:{broker.port}"
    if start.already_running:
        print(f"Kafka is already running on {address} (pid {start.pid}).")
    else:
        print(
            f"Kafka {kafka_version(settings.kafka_libs_dir)} is ready on {address} after "
            f"{start.seconds:.1f} s (pid {start.pid}, log {shown(broker.server_log)})."
        )


def cluster_up(settings: LocalSettings) -> None:
    cluster = KafkaCluster(settings)
    start = cluster.start()
    if start.already_running:
        print(
            f"Kafka is already running: {len(cluster.nodes)} nodes on {cluster.bootstrap_servers}."
        )
    else:
        started = (
            ""
            if len(start.started) == len(cluster.nodes)
            else (
                f" (started {', '.join(cluster.node(node_id).name for node_id in start.started)})"
            )
        )
        print(
            f"Kafka {kafka_version(settings.kafka_libs_dir)}: {len(cluster.nodes)} nodes ready "
            f"after {start.seconds:.1f} s{started}, every one in the controller quorum and "
            "every partition's replicas in sync."
        )
    for node in cluster.nodes:
        print(
            f"  {node.name}  {node.address}  controller :{node.controller_port}  "
            f"pid {start.pids[node.node_id]}  log {shown(cluster.server_log(node))}"
        )


def kafka_down(settings: LocalSettings) -> None:
    if settings.kafka_brokers > 1:
        cluster = KafkaCluster(settings)
        if cluster.stop():
            print(f"Kafka stopped: {', '.join(node.name for node in cluster.nodes)}.")
        else:
            print("Kafka is not running.")
    elif KafkaBroker(settings).stop():
        print("Kafka stopped.")
    else:
        print("Kafka is not running.")
    record_brokers(settings.run_dir, None)


def topics(settings: LocalSettings) -> None:
    for topic in asyncio.run(ensure_topics(settings)):
        verb = "created" if topic.created else "exists"
        replicas = (
            f" Replication factor {topic.replication_factor}." if settings.kafka_brokers > 1 else ""
        )
        print(f"Topic {topic.name}: {verb}, {topic.partitions} partitions.{replicas}")


def describe_topics(settings: LocalSettings) -> None:
    """Kafka's own view of every topic: each partition's leader, replicas and ISR."""
    sys.exit(
        run_tool(
            settings, "kafka-topics.sh",
            "--bootstrap-server", settings.kafka_bootstrap_servers,
            "--describe",
        )
    )  # fmt: skip


def start_service(settings: LocalSettings, service: Service) -> None:
    start = LocalStack(settings).start(service)
    for note in start.notes:
        print(note)
    if start.already_running:
        print(f"{service.name} is already running (pid {start.pid}).")
    else:
        print(f"{service.name} is ready after {start.seconds:.1f} s (pid {start.pid}).")


def stop_service(settings: LocalSettings, service: Service) -> None:
    if LocalStack(settings).stop(service):
        print(f"{service.name} stopped.")
    else:
        print(f"{service.name} is not running.")


def services_up(settings: LocalSettings) -> None:
    stack = LocalStack(settings)
    for service in stack.services():
        start_service(settings, service)
    for line in describe(stack.smtp_link):
        print(line)


def services_down(settings: LocalSettings) -> None:
    stack = LocalStack(settings)
    extra_workers = [worker for worker in stack.running_workers() if worker.name != "worker"]
    for service in [stack.console(), stack.api(), *extra_workers, stack.worker(), stack.sink()]:
        stop_service(settings, service)


def postgres_up(settings: LocalSettings) -> None:
    server = local_postgres(settings)
    start = server.start()
    state = (
        "is already running" if start.already_running else f"is ready after {start.seconds:.1f} s"
    )
    print(
        f"PostgreSQL {state} on {server.host}:{server.port} (pid {start.pid}, log "
        f"{shown(server.log_file)}): the dedupe store every worker shares, {server.url}"
    )


def retry_topics_shown(settings: LocalSettings) -> str:
    """`email.send.retry-{1m,5m,15m,30m,60m}`, as a shell would expand it."""
    labels = list(dict.fromkeys(step.label for step in settings.worker_retry_schedule))
    shown = labels[0] if len(labels) == 1 else "{" + ",".join(labels) + "}"
    return f"{settings.email_topic}.retry-{shown}"


def postgres_down(settings: LocalSettings) -> None:
    if local_postgres(settings).stop():
        print("PostgreSQL stopped.")


def up(settings: LocalSettings) -> None:
    kafka_up(settings)
    topics(settings)
    if settings.kafka_brokers > 1:
        postgres_up(settings)
    services_up(settings)
    s = settings
    rows = [
        ("Kafka", s.kafka_bootstrap_servers,
         f"topics {s.email_topic}, {s.dlq_topic}, {s.events_topic}"),
        ("", "", f"and the retry topics {retry_topics_shown(s)}"),
        ("SMTP sink", f"smtp://{s.sink_host}:{s.sink_smtp_port}",
         f"inbox http://{s.sink_host}:{s.sink_http_port}/"),
        ("Worker", f"group {s.consumer_group}", f"health http://{s.worker_host}:{s.worker_port}/readyz"),
        ("API", f"http://{s.api_host}:{s.api_port}", f"docs http://{s.api_host}:{s.api_port}/docs"),
        ("Console", f"http://{s.console_host}:{s.console_port}/", "the live offset picture"),
    ]  # fmt: skip
    width = max(28, *(len(address) for _, address, _ in rows))  # three brokers are longer
    print(f"\nRunning (logs in {shown(s.run_dir / 'logs')}/):")
    for name, address, more in rows:
        print(f"  {name:<11} {address:<{width}} {more}")
    print(
        f"""
Try:
  open the console       http://{s.console_host}:{s.console_port}/ and watch the offsets move
  make send              send an email through the API (TO=, SUBJECT=, COUNT=)
  make sink-logs         watch the mail arrive at the SMTP sink
  make groups            {s.consumer_group}'s CURRENT-OFFSET, LOG-END-OFFSET and LAG
  make topics            each partition's leader, replicas and in-sync replicas (ISR)
  make restart-worker    stop and start the worker: it resumes at the committed offset
  make add-worker        a second worker in {s.consumer_group}: the partitions are split
  make demo              the seed's story, scripted against this stack
  make down              stop everything"""
    )


def down(settings: LocalSettings) -> None:
    services_down(settings)
    postgres_down(settings)
    kafka_down(settings)


def status(settings: LocalSettings) -> None:
    stack = LocalStack(settings)
    kafka_pids = running_pids(settings)
    if settings.kafka_brokers > 1:
        cluster = KafkaCluster(settings)
        for node in cluster.nodes:
            pid = kafka_pids.get(node.name)
            state = f"running, pid {pid}" if pid else "not running"
            print(f"{node.name:<12}{state} ({node.address})")
        if kafka_pids:
            health = cluster.health()
            lagging = len(health.lagging_partitions)
            print(
                f"{'':<12}live brokers {sorted(health.live_brokers) or 'none'}, "
                f"{lagging} partition{'s' * (lagging != 1)} with a replica out of sync"
            )
    else:
        pid = kafka_pids.get("kafka")
        print(f"{'kafka':<12}{'running, pid ' + str(pid) if pid else 'not running'}")
    if settings.kafka_brokers > 1:
        pid = local_postgres(settings).running_pid()
        print(f"{'postgres':<12}{'running, pid ' + str(pid) if pid else 'not running'}")
    workers = stack.running_workers() or [stack.worker()]
    for service in [stack.sink(), *workers, stack.api(), stack.console()]:
        pid = stack.process(service).running_pid()
        print(f"{service.name:<12}{'running, pid ' + str(pid) if pid else 'not running'}")


def groups(settings: LocalSettings) -> None:
    """Kafka's own view of the group: CURRENT-OFFSET, LOG-END-OFFSET and LAG per partition."""
    returncode = run_tool(
        settings, "kafka-consumer-groups.sh",
        "--bootstrap-server", settings.kafka_bootstrap_servers,
        "--group", settings.consumer_group,
        "--describe",
    )  # fmt: skip
    sys.exit(returncode)


def run_tool(settings: LocalSettings, script: str, *args: str) -> int:
    """One of Kafka's own tools, shown as the command a reader can type, its output as it is."""
    command = [str(KAFKA_TOOLS_DIR / script), *args]
    print("$ " + " ".join([shown(command[0]), *command[1:]]), flush=True)
    env = {**os.environ, "KAFKA_LIBS_DIR": str(settings.kafka_libs_dir)}
    return subprocess.run(command, env=env, check=False).returncode


def logs(settings: LocalSettings, name: str | None) -> None:
    """Follow the logs (`tail -F`) until Ctrl+C."""
    logs_dir = settings.run_dir / "logs"
    files = [logs_dir / f"{name}.log"] if name else sorted(logs_dir.glob("*.log"))
    if not files:
        raise StackError(f"No logs in {shown(logs_dir)} yet: start the stack with `make up`.")
    os.execvp("tail", ["tail", "-n", "20", "-F", *map(str, files)])


def clean(settings: LocalSettings) -> None:
    down(settings)
    shutil.rmtree(settings.run_dir, ignore_errors=True)
    print(f"Deleted {shown(settings.run_dir)} (Kafka's data, the stores and the logs).")


def shown(path: object) -> str:
    """A path as short as it can be said from the project directory."""
    return str(path).removeprefix(f"{PROJECT_ROOT}/")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m deploy.local", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in [
        ("up", "start Kafka, the topics and every service"),
        ("down", "stop everything `up` started"),
        ("status", "say what is running"),
        ("clean", "stop everything and delete the run directory"),
        ("fetch-kafka", "fetch Kafka's jars from Maven Central once"),
        ("fetch-mailpit", "build Mailpit from the Go module proxy once"),
        ("chromium", "install Debian's Chromium for the browser tests if it is missing"),
        ("kafka-up", "start the Kafka broker"),
        ("kafka-down", "stop the Kafka broker"),
        ("topics", "create the topics if they are missing"),
        ("describe-topics", "describe every topic with kafka-topics.sh: leader, replicas, ISR"),
        ("groups", "describe the consumer group with kafka-consumer-groups.sh"),
        ("services-up", "start the sink, the worker and the API"),
        ("services-down", "stop the API, the workers and the sink"),
        ("add-worker", "start one more worker in the consumer group"),
        ("demo", "the seed's story, scripted against the running stack"),
    ]:
        commands.add_parser(name, help=help_text)
    for name in ("start", "stop", "restart"):
        command = commands.add_parser(name, help=f"{name} one service")
        command.add_argument("service", help="smtp_sink, worker, worker-2..., api, console")
    log_command = commands.add_parser("logs", help="follow the logs")
    log_command.add_argument("service", nargs="?", help="only this service's log")
    send_command = commands.add_parser("send", help="send emails through the API")
    send_command.add_argument("--to", default="you@example.com")
    send_command.add_argument("--subject", default="Hello from Kafka")
    send_command.add_argument("--count", type=int, default=1)
    return parser.parse_args()


def service_named(stack: LocalStack, name: str) -> Service:
    if name == "smtp_sink":
        return stack.sink()
    if name == "api":
        return stack.api()
    if name == "console":
        return stack.console()
    if name == "worker":
        return stack.worker()
    if name.startswith("worker-") and name.removeprefix("worker-").isdigit():
        return stack.worker(int(name.removeprefix("worker-")))
    raise StackError(
        f"There is no service {name!r}: name smtp_sink, worker, worker-2..., api or console."
    )


def run(arguments: argparse.Namespace, settings: LocalSettings) -> None:
    stack = LocalStack(settings)
    simple = {
        "up": up, "down": down, "status": status, "clean": clean,
        "fetch-kafka": fetch_kafka_command, "fetch-mailpit": fetch_mailpit_command,
        "chromium": chromium_command,
        "kafka-up": kafka_up, "kafka-down": kafka_down,
        "topics": topics, "describe-topics": describe_topics, "groups": groups,
        "services-up": services_up,
        "services-down": services_down, "demo": demo.run,
    }  # fmt: skip
    command = arguments.command
    if command in simple:
        simple[command](settings)
    elif command in ("start", "stop", "restart"):
        service = service_named(stack, arguments.service)
        if command in ("stop", "restart"):
            stop_service(settings, service)
        if command in ("start", "restart"):
            start_service(settings, service)
    elif command == "add-worker":
        number = max([1, *(int(w.name.partition("-")[2] or 1) for w in stack.running_workers())])
        start_service(settings, stack.worker(number + 1))
    elif command == "logs":
        logs(settings, arguments.service)
    elif command == "send":
        sender.send(settings, arguments.to, arguments.subject, arguments.count)


def main() -> None:
    arguments = parse_arguments()
    try:
        settings = stack_settings(load_local_settings(), arguments.command)
        if settings.kafka_brokers > 1:
            # The services read their settings from the environment we start them with: every
            # node of the cluster, not only the first, so any one of them may be down; the API's
            # wait for a failover; and the local PostgreSQL as the dedupe store that the
            # workers of every "host" share, and as the API's store of Idempotency-Keys.
            if settings.dedupe_url is None:
                settings = settings.model_copy(update={"dedupe_url": local_postgres(settings).url})
            if settings.api_store_url is None:
                settings = settings.model_copy(update={"api_store_url": settings.dedupe_url})
            os.environ["KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
            os.environ["API_PRODUCE_TIMEOUT_SECONDS"] = str(settings.api_produce_timeout_seconds)
            os.environ["DEDUPE_URL"] = str(settings.dedupe_url)
            os.environ["API_STORE_URL"] = str(settings.api_store_url)
        run(arguments, settings)
    except StackError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `... | head` closed our output early: not an error
        sys.stdout = None
        sys.exit(0)


if __name__ == "__main__":
    main()
