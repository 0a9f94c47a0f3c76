"""Run Kafka's own command-line tools (deploy/kafka/bin) from tests and read their output."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from deploy.local.kafka import KAFKA_TOOLS_DIR


def run_kafka_tool(
    script: str, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KAFKA_TOOLS_DIR / script), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class GroupOffsetRow:
    topic: str
    partition: int
    current_offset: int | None  # None: the group has committed nothing for this partition
    log_end_offset: int
    lag: int | None


def describe_group(bootstrap_servers: str, group: str) -> list[GroupOffsetRow]:
    """`kafka-consumer-groups.sh --describe`, parsed by its header line."""
    result = run_kafka_tool(
        "kafka-consumer-groups.sh",
        "--bootstrap-server", bootstrap_servers,
        "--group", group,
        "--describe",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines() if line.strip()]
    header = next(line for line in lines if "CURRENT-OFFSET" in line)
    for column in ("CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"):
        assert column in header
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
