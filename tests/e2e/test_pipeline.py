"""HTTP -> Kafka -> worker -> SMTP sink, end to end, with every service a real process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import murmur2
from aiokafka.structs import ConsumerRecord, TopicPartition

from shared.kafka import admin_client
from tests.e2e.conftest import (
    BOUNCING_RECIPIENT,
    GREYLISTED_RECIPIENT,
    RunningStack,
    wait_until,
)
from tests.kafka_tools import run_kafka_tool


async def committed_offset(stack: RunningStack, partition: int) -> int | None:
    """The group's CURRENT-OFFSET for one partition of the stack's topic."""
    async with admin_client(stack.settings.kafka_bootstrap_servers) as admin:
        offsets = await admin.list_consumer_group_offsets(stack.settings.consumer_group)
    committed = offsets.get(TopicPartition(stack.settings.email_topic, partition))
    return None if committed is None else int(committed.offset)


async def wait_for_commit(stack: RunningStack, partition: int, offset: int) -> None:
    async with asyncio.timeout(20):
        while (await committed_offset(stack, partition) or 0) < offset:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def dead_letters(stack: RunningStack, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    """Read the dead-letter topic from the beginning until `count` records were seen."""
    consumer = AIOKafkaConsumer(
        stack.settings.dlq_topic,
        bootstrap_servers=stack.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(20):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=500)
                records += [record for batch in batches.values() for record in batch]
    finally:
        await consumer.stop()
    return records


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


def test_an_accepted_email_is_delivered_once(stack: RunningStack) -> None:
    queued = stack.send(subject="hello1", to="Ana <ana@example.com>")

    assert queued["status"] == "queued"
    assert queued["topic"] == stack.settings.email_topic
    assert queued["partition"] in range(stack.settings.topic_partitions)
    assert queued["offset"] >= 0
    stack.wait_until_delivered(queued["id"])
    [message] = [
        m for m in stack.sink_messages() if m["MessageID"] == stack.message_id_header(queued["id"])
    ]
    assert message["Subject"] == "hello1"
    assert message["To"] == [{"Name": "Ana", "Address": "ana@example.com"}]


async def test_the_same_idempotency_key_twice_is_queued_and_delivered_once(
    stack: RunningStack,
) -> None:
    key = f"order-{uuid.uuid4()}"
    email = {"from": "demo@example.com", "to": ["ana@example.com"], "subject": key, "text": "t"}

    first = stack.post_email(email, key)
    again = stack.post_email(email, key)
    other_body = stack.post_email({**email, "subject": "another email"}, key)

    assert first.status_code == again.status_code == 202
    assert again.content == first.content, "the first answer, replayed"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other_body.status_code == 422
    queued = first.json()
    await wait_for_commit(stack, queued["partition"], queued["offset"] + 1)
    stack.wait_until_delivered(queued["id"])
    assert stack.deliveries_of(queued["id"]) == 1


async def test_clean_worker_restart_resumes_and_redelivers_nothing(stack: RunningStack) -> None:
    before = [stack.send(partition=2) for _ in range(3)]
    stack.wait_until_delivered(*(q["id"] for q in before))

    stack.command("stop", "worker")  # the clean stop commits what it finished
    committed = await committed_offset(stack, 2)
    assert committed == before[-1]["offset"] + 1
    while_stopped = [stack.send(partition=2) for _ in range(2)]
    assert await committed_offset(stack, 2) == committed
    assert [stack.deliveries_of(q["id"]) for q in while_stopped] == [0, 0]
    log_before_restart = len(stack.worker_log())
    stack.command("start", "worker")

    stack.wait_until_delivered(*(q["id"] for q in while_stopped))
    restart_log = stack.worker_log()[log_before_restart:]
    log_end = while_stopped[-1]["offset"] + 1
    resumed = (
        f"{stack.settings.email_topic}-2: resuming at offset {committed} (log end {log_end}, lag 2)"
    )
    assert resumed in restart_log, restart_log
    assert "duplicate" not in restart_log, "a clean stop commits exactly what was processed"
    for queued in before + while_stopped:
        assert stack.deliveries_of(queued["id"]) == 1


async def test_a_permanent_failure_is_dead_lettered_and_the_partition_moves_on(
    stack: RunningStack,
) -> None:
    bounced = stack.send(to=BOUNCING_RECIPIENT, partition=0)
    following = stack.send(partition=0)

    assert bounced["partition"] == following["partition"] == 0
    stack.wait_until_delivered(following["id"])
    [dead] = [
        record
        for record in await dead_letters(stack, count=1)
        if record.key == bounced["id"].encode()
    ]
    headers = headers_of(dead)
    assert headers["dlq.original.topic"] == stack.settings.email_topic
    assert headers["dlq.original.partition"] == "0"
    assert headers["dlq.original.offset"] == str(bounced["offset"])
    assert "550" in headers["dlq.error"]
    assert headers["dlq.attempts"] == "1"
    assert headers["schema_version"] == "1", "the original record's headers are kept"
    assert stack.deliveries_of(bounced["id"]) == 0


async def test_a_poison_record_is_dead_lettered_and_the_partition_moves_on(
    stack: RunningStack,
) -> None:
    partitions = stack.settings.topic_partitions
    poison_key = next(  # a Kafka key that the default partitioner puts on partition 0
        key
        for key in (f"poison-{n}" for n in range(1000))
        if (murmur2(key.encode()) & 0x7FFFFFFF) % partitions == 0
    )
    poison = f"not an email {uuid.uuid4()}"
    produced = run_kafka_tool(
        "kafka-console-producer.sh",
        "--bootstrap-server", stack.settings.kafka_bootstrap_servers,
        "--topic", stack.settings.email_topic,
        "--property", "parse.key=true", "--property", "key.separator=|",
        stdin=f"{poison_key}|{poison}\n",
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    after = stack.send(partition=0)

    stack.wait_until_delivered(after["id"])

    async def poison_dead_letter() -> ConsumerRecord[bytes, bytes]:
        while True:
            for record in await dead_letters(stack, count=1):
                if record.value == poison.encode():
                    return record
            await asyncio.sleep(0.2)

    async with asyncio.timeout(20):
        dead = await poison_dead_letter()
    assert headers_of(dead)["dlq.error"].startswith("poison record: the record is not JSON")
    assert headers_of(dead)["dlq.original.partition"] == "0"
    assert int(headers_of(dead)["dlq.original.offset"]) < after["offset"]


async def test_a_deferred_recipient_waits_in_a_retry_topic_while_its_partition_moves_on(
    stack: RunningStack,
) -> None:
    held = stack.send(to=GREYLISTED_RECIPIENT, partition=1)
    following = stack.send(partition=1)

    stack.wait_until_delivered(following["id"])
    first_retry = f"{stack.settings.email_topic}.retry-2s"
    async with asyncio.timeout(20):
        while not (deferrals := await events_of(stack, held["id"], "deferred")):  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    assert deferrals[0]["retry_topic"] == first_retry
    assert deferrals[0]["reply"]["code"] == 451
    await wait_for_commit(stack, 1, following["offset"] + 1)  # the partition did not wait
    assert stack.deliveries_of(held["id"]) == 0

    stack.command("restart", "smtp_sink", SINK_FAIL_4XX_RECIPIENTS="")

    stack.wait_until_delivered(held["id"])
    assert stack.deliveries_of(held["id"]) == 1
    async with asyncio.timeout(20):
        while not (sent := await events_of(stack, held["id"], "sent")):  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    [delivery] = sent
    assert delivery["attempt"] >= 1
    assert delivery["record"]["topic"].startswith(f"{stack.settings.email_topic}.retry-")


async def events_of(stack: RunningStack, message_id: str, event_type: str) -> list[dict[str, Any]]:
    """The email's events of one type on the stack's email.events, each id once."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: dict[str, dict[str, Any]] = {}
    try:
        topic = stack.settings.events_topic
        partitions = [TopicPartition(topic, p) for p in range(stack.settings.topic_partitions)]
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)

        async def behind() -> bool:
            return any([await consumer.position(tp) < offset for tp, offset in end.items()])

        while await behind():
            batches = await consumer.getmany(timeout_ms=500)
            for record in (r for batch in batches.values() for r in batch):
                event = json.loads(record.value or b"{}")
                if event["message_id"] == message_id and event["type"] == event_type:
                    found.setdefault(event["event_id"], event)
    finally:
        await consumer.stop()
    return list(found.values())


def test_the_sink_prints_each_delivery(stack: RunningStack) -> None:
    queued = stack.send(subject="printed subject")
    stack.wait_until_delivered(queued["id"])

    sink_log = (stack.settings.run_dir / "logs" / "smtp_sink.log").read_text()
    assert stack.message_id_header(queued["id"]) in sink_log
    assert "printed subject" in sink_log


def test_two_workers_split_the_partitions_and_one_takes_over_when_the_other_dies(
    stack: RunningStack,
) -> None:
    stack.command("add-worker")
    second = stack.settings.run_dir / "pids" / "worker-2.pid"
    try:
        owners = group_owners(stack)
        assert len(set(owners.values())) == 2, f"both workers own partitions: {owners}"
        second_pid = int(second.read_text())
        orphaned = next(p for p, owner in owners.items() if owner.endswith(f"-{second_pid}"))

        os.kill(second_pid, signal.SIGKILL)  # no goodbye: the group notices when it goes silent
        wait_until(lambda: len(set(group_owners(stack).values())) == 1, 30, "no takeover")

        queued = stack.send(partition=orphaned)
        assert queued["partition"] == orphaned
        stack.wait_until_delivered(queued["id"])
    finally:
        stack.command("stop", "worker-2")


def group_owners(stack: RunningStack) -> dict[int, str]:
    """Partition -> CLIENT-ID of its owner, from the official kafka-consumer-groups.sh."""
    result = run_kafka_tool(
        "kafka-consumer-groups.sh",
        "--bootstrap-server", stack.settings.kafka_bootstrap_servers,
        "--group", stack.settings.consumer_group,
        "--describe",
    )  # fmt: skip
    owners = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 9 and fields[1] == stack.settings.email_topic and fields[6] != "-":
            owners[int(fields[2])] = fields[8]
    return owners
