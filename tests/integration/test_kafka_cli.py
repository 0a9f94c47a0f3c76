"""The seed's command-line walkthrough, run verbatim with deploy/kafka/bin/ as the prefix.

Only what lets a consumer end on its own is added (--max-messages, --timeout-ms): the seed
stops it with Ctrl+C.
"""

from __future__ import annotations

from shared.settings import Settings
from tests.kafka_tools import describe_group, run_kafka_tool


def test_seed_commands_work_on_the_stack(kafka: Settings) -> None:
    bootstrap, topic, group = kafka.kafka_bootstrap_servers, kafka.email_topic, kafka.consumer_group

    produced = run_kafka_tool(
        "kafka-console-producer.sh",
        "--bootstrap-server", bootstrap,
        "--topic", topic,
        stdin="hello1\nhello2\nhello3\n",
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr

    everything = run_kafka_tool(
        "kafka-console-consumer.sh",
        "--bootstrap-server", bootstrap,
        "--topic", topic,
        "--from-beginning",
        "--max-messages", "3", "--timeout-ms", "10000",
    )  # fmt: skip
    assert sorted(everything.stdout.split()) == ["hello1", "hello2", "hello3"]

    as_group = run_kafka_tool(
        "kafka-console-consumer.sh",
        "--bootstrap-server", bootstrap,
        "--topic", topic,
        "--from-beginning",
        "--group", group,
        "--max-messages", "3", "--timeout-ms", "10000",
    )  # fmt: skip
    assert sorted(as_group.stdout.split()) == ["hello1", "hello2", "hello3"]

    listed = run_kafka_tool("kafka-consumer-groups.sh", "--bootstrap-server", bootstrap, "--list")
    assert group in listed.stdout.split()

    described = run_kafka_tool(
        "kafka-consumer-groups.sh",
        "--bootstrap-server", bootstrap,
        "--group", group,
        "--describe",
    )  # fmt: skip
    for column in ("CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"):
        assert column in described.stdout
    rows = [row for row in describe_group(bootstrap, group) if row.topic == topic]
    assert sum(row.log_end_offset for row in rows) == 3
    assert all(row.lag == 0 for row in rows if row.current_offset is not None)
    assert sum(row.current_offset or 0 for row in rows) == 3

    again = run_kafka_tool(
        "kafka-console-consumer.sh",
        "--bootstrap-server", bootstrap,
        "--topic", topic,
        "--from-beginning",
        "--group", group,
        "--timeout-ms", "3000",
    )  # fmt: skip
    assert again.stdout.split() == [], "the group resumes at its CURRENT-OFFSET: nothing is new"


def test_topics_are_provisioned_with_the_configured_partitions(kafka: Settings) -> None:
    for topic in (kafka.email_topic, kafka.dlq_topic):
        described = run_kafka_tool(
            "kafka-topics.sh", "--bootstrap-server", kafka.kafka_bootstrap_servers,
            "--describe", "--topic", topic,
        )  # fmt: skip
        assert f"PartitionCount: {kafka.topic_partitions}" in described.stdout, described.stdout
