"""The seed's command-line walkthrough, run verbatim with deploy/kafka/bin/ as the prefix.

Only what lets a consumer end on its own is added (--max-messages, --timeout-ms): the seed
stops it with Ctrl+C.
"""

from __future__ import annotations

from datetime import timedelta

from shared.kafka import topic_names
from shared.retry_topics import retry_topic_retention, retry_topics
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


def test_every_topic_is_provisioned_with_its_partitions_and_settings(kafka: Settings) -> None:
    described = run_kafka_tool(
        "kafka-topics.sh", "--bootstrap-server", kafka.kafka_bootstrap_servers, "--describe"
    )
    # A topic's line: "Topic: email.send  TopicId: ...  PartitionCount: 3 ... Configs: a=1,b=2"
    summaries = {
        fields["Topic:"]: fields
        for line in described.stdout.splitlines()
        if line.startswith("Topic:")
        for fields in [dict(zip(line.split()[::2], line.split()[1::2], strict=False))]
    }
    retention_ms = retry_topic_retention(kafka.worker_max_retry_age) // timedelta(milliseconds=1)

    for topic in topic_names(kafka):
        assert summaries[topic]["PartitionCount:"] == str(kafka.topic_partitions), summaries
    assert "cleanup.policy=delete" in summaries[kafka.events_topic]["Configs:"]
    for topic in retry_topics(kafka.email_topic, kafka.worker_retry_schedule):
        assert f"retention.ms={retention_ms}" in summaries[topic]["Configs:"], summaries[topic]
