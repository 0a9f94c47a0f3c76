"""Run Kafka's own command-line tools (deploy/kafka/bin) from tests and read their output."""

from __future__ import annotations

import subprocess

from deploy.local.kafka import GroupOffsetRow, parse_group_description
from deploy.local.kafka import run_kafka_tool as run_with_settings
from deploy.local.settings import LocalSettings


def run_kafka_tool(
    script: str, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return run_with_settings(LocalSettings(), script, *args, stdin=stdin, timeout=timeout)


def describe_group(bootstrap_servers: str, group: str) -> list[GroupOffsetRow]:
    """`kafka-consumer-groups.sh --describe`, parsed by its header line."""
    result = run_kafka_tool(
        "kafka-consumer-groups.sh",
        "--bootstrap-server", bootstrap_servers,
        "--group", group,
        "--describe",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for column in ("CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"):
        assert column in result.stdout
    return parse_group_description(result.stdout)
