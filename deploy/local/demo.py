"""`make demo`: the seed's story told by the running stack, with a narrated transcript.

hello1..hello4 go through the API into one partition of `email.send` and reach the sink; the
group's CURRENT-OFFSET moves past them; the worker stops, hello5 waits as LAG 1; the worker
starts, resumes at the committed offset, and only hello5 arrives. Kafka still holds all five.
Part 2 (demo_lifecycle.py) follows a deferral through a retry topic, and a bounce into the
suppression list.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping

import httpx
from aiokafka.partitioner import murmur2
from aiokafka.structs import TopicPartition

from deploy.local import demo_lifecycle
from deploy.local.errors import StackError
from deploy.local.kafka import parse_group_description, run_kafka_tool
from deploy.local.sender import DEMO_SENDER, post_email
from deploy.local.settings import LocalSettings
from deploy.local.stack import LocalStack, Service
from services.api.idempotency import email_fingerprint
from shared.kafka import admin_client
from shared.schema import EmailContent, message_id_for

PARTITION = 0
WAIT_SECONDS = 30.0


def message_id_of(email: Mapping[str, object], idempotency_key: str) -> str:
    """The message id the API gives `email` sent with this Idempotency-Key."""
    return message_id_for(idempotency_key, email_fingerprint(EmailContent.model_validate(email)))


def idempotency_key_on_partition(
    email: Mapping[str, object], prefix: str, partition: int, partitions: int
) -> str:
    """An Idempotency-Key that makes `email`'s message id one that Kafka's default
    partitioner puts on `partition`.

    The record key is the message id, and the partition is murmur2(key) mod partitions, as in
    Kafka's Java client: picking keys is how a client keeps related records in one partition.
    """
    for candidate in range(1000 * partitions):
        key = f"{prefix}-{candidate}"
        record_key = message_id_of(email, key).encode()
        if (murmur2(record_key) & 0x7FFFFFFF) % partitions == partition:
            return key
    raise StackError(f"no key of {prefix}-0.. puts the email on partition {partition}")


class Demo:
    def __init__(self, settings: LocalSettings) -> None:
        self.settings = settings
        self.stack = LocalStack(settings)
        self.http = httpx.Client(timeout=10)
        self.partition = f"{settings.email_topic}-{PARTITION}"
        self.step_number = 0

    def step(self, title: str) -> None:
        self.step_number += 1
        print(f"\n== {self.step_number}. {title}", flush=True)

    def say(self, text: str) -> None:
        print(f"   {text}", flush=True)

    def show_group(self) -> int | None:
        """`make groups`, printed for our partition; returns its CURRENT-OFFSET."""
        s = self.settings
        result = run_kafka_tool(
            s, "kafka-consumer-groups.sh", "--bootstrap-server", s.kafka_bootstrap_servers,
            "--group", s.consumer_group, "--describe",
        )  # fmt: skip
        self.say(
            f"$ deploy/kafka/bin/kafka-consumer-groups.sh --group {s.consumer_group} --describe"
        )
        rows = [row for row in parse_group_description(result.stdout) if row.topic == s.email_topic]
        header = "TOPIC            PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG"
        self.say(header)
        for row in sorted(rows, key=lambda row: row.partition):
            current = "-" if row.current_offset is None else row.current_offset
            lag = "-" if row.lag is None else row.lag
            marker = "   <- the story's partition" if row.partition == PARTITION else ""
            self.say(
                f"{row.topic:<16} {row.partition:<10} {current!s:<15} {row.log_end_offset:<15} "
                f"{lag!s:<3}{marker}"
            )
        ours = [row for row in rows if row.partition == PARTITION]
        return ours[0].current_offset if ours else None

    def email(self, subject: str) -> dict[str, object]:
        return {
            "from": DEMO_SENDER,
            "to": ["you@example.com"],
            "subject": subject,
            "text": f"{subject}: a record of {self.settings.email_topic}, delivered by the worker.",
        }

    def send(self, subject: str, key: str) -> dict[str, object]:
        queued = post_email(self.http, self.settings, self.email(subject), idempotency_key=key)
        self.say(
            f"POST /emails {subject!r:<9} -> 202, {queued['topic']}-{queued['partition']} "
            f"offset {queued['offset']}"
        )
        return queued

    def sink_counts(self, message_ids: list[str]) -> dict[str, int]:
        """How many times the sink received each message id."""
        url = f"http://{self.settings.sink_host}:{self.settings.sink_http_port}/api/v1/messages"
        messages = self.http.get(url, params={"limit": 5000}).json()["messages"]
        headers = {f"{mid}@{self.settings.message_id_domain}": mid for mid in message_ids}
        counts = dict.fromkeys(message_ids, 0)
        for message in messages:
            if message["MessageID"] in headers:
                counts[headers[message["MessageID"]]] += 1
        return counts

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while not condition():
            if time.monotonic() > deadline:
                raise StackError(f"The demo waited {WAIT_SECONDS:.0f} s for {what}; see make logs.")
            time.sleep(0.2)

    def committed_offset(self) -> int | None:
        async def fetch() -> int | None:
            async with admin_client(self.settings.kafka_bootstrap_servers) as admin:
                offsets = await admin.list_consumer_group_offsets(self.settings.consumer_group)
            committed = offsets.get(TopicPartition(self.settings.email_topic, PARTITION))
            return None if committed is None else int(committed.offset)

        return asyncio.run(fetch())

    def require_running(self) -> list[Service]:
        services = [self.stack.sink(), self.stack.api(), *self.stack.running_workers()]
        for service in services:
            try:
                ready = self.http.get(service.ready_url).status_code == 200
            except httpx.HTTPError:
                ready = False
            if not ready:
                raise StackError(
                    f"{service.name} is not ready ({service.ready_url}): run `make up` first."
                )
        if not self.stack.running_workers():
            raise StackError("No worker is running: run `make up` (or `make start-worker`) first.")
        return self.stack.running_workers()


def run(settings: LocalSettings) -> None:
    demo = Demo(settings)
    workers = demo.require_running()
    hellos = [f"hello{n}" for n in range(1, 6)]
    run_id = uuid.uuid4().hex[:8]
    keys = [
        idempotency_key_on_partition(
            demo.email(hello), f"demo-{run_id}-{hello}", PARTITION, settings.topic_partitions
        )
        for hello in hellos
    ]
    ids = [message_id_of(demo.email(hello), key) for hello, key in zip(hellos, keys, strict=True)]
    print(
        f"The seed's story on {demo.partition}: each email's Idempotency-Key is chosen so that its "
        f"message id (the record key)\nhashes to partition {PARTITION}, as in the seed's "
        "one-partition picture."
    )

    demo.step(f"Where {settings.consumer_group} stands before the story")
    start = demo.show_group() or 0

    demo.step("Send hello1..hello4 through the API")
    queued = [demo.send(subject, key) for subject, key in zip(hellos[:4], keys[:4], strict=True)]
    first_offset = int(str(queued[0]["offset"]))

    demo.step("The worker delivers them: the SMTP sink shows four emails")
    demo.wait_for(lambda: all(demo.sink_counts(ids[:4]).values()), "hello1..hello4 in the sink")
    for subject, message_id in zip(hellos[:4], ids[:4], strict=True):
        demo.say(f"sink: <{message_id}@{settings.message_id_domain}>  {subject}")

    demo.step("CURRENT-OFFSET is the next offset the group will read")
    demo.wait_for(lambda: (demo.committed_offset() or 0) >= first_offset + 4, "the commit")
    current = demo.show_group()
    done = f"{first_offset}..{first_offset + 3}"
    demo.say(f"CURRENT-OFFSET {current} on {demo.partition}: offsets {done} are done.")

    demo.step("Stop the worker (make stop-worker): it finishes, commits and leaves the group")
    for worker in workers:
        demo.stack.stop(worker)
        demo.say(f"{worker.name} stopped")

    demo.step("Send hello5 while no worker runs")
    demo.send(hellos[4], keys[4])
    time.sleep(1)
    demo.show_group()
    demo.say("LAG 1: hello5 is in Kafka, not yet read by the group. Nothing reached the sink:")
    demo.say(f"sink has hello5: {'yes' if demo.sink_counts(ids[4:])[ids[4]] else 'no'}")

    demo.step("Start the worker (make start-worker): it resumes at the committed offset")
    log_file = demo.stack.log_file(demo.stack.worker())
    log_size = log_file.stat().st_size if log_file.exists() else 0
    for worker in workers:
        demo.stack.start(worker)
    demo.wait_for(lambda: bool(demo.sink_counts(ids[4:])[ids[4]]), "hello5 in the sink")
    with log_file.open() as log:
        log.seek(log_size)
        for line in log:
            if (
                "resuming at" in line
                or "nothing committed yet" in line
                or f"delivered {ids[4]}" in line
            ):
                demo.say("worker: " + line.split(": ", 1)[-1].rstrip())

    demo.step("Only hello5 arrived; the group's CURRENT-OFFSET moved to the end")
    demo.wait_for(lambda: (demo.committed_offset() or 0) >= first_offset + 5, "the commit")
    demo.show_group()

    demo.step("Reading removes nothing: kafka-console-consumer.sh --from-beginning reads all five")
    result = run_kafka_tool(
        settings, "kafka-console-consumer.sh",
        "--bootstrap-server", settings.kafka_bootstrap_servers, "--topic", settings.email_topic,
        "--from-beginning", "--partition", str(PARTITION),
        "--property", "print.offset=true", "--max-messages", str(first_offset + 5),
        "--timeout-ms", "10000",
    )  # fmt: skip
    demo.say(
        f"$ deploy/kafka/bin/kafka-console-consumer.sh --topic {settings.email_topic} "
        f"--from-beginning --partition {PARTITION} --property print.offset=true"
    )
    for line in result.stdout.splitlines():
        if any(message_id in line for message_id in ids):
            subject = next(h for h, m in zip(hellos, ids, strict=True) if m in line)
            demo.say(f"{line.split(chr(9))[0]}  {subject}  {line.split(chr(9))[-1][:70]}...")

    counts = demo.sink_counts(ids)
    delivered = sum(1 for count in counts.values() if count >= 1)
    duplicates = sum(count - 1 for count in counts.values() if count > 1)
    lost = sum(1 for count in counts.values() if count == 0)
    print(
        f"\nverdict: delivered {delivered}/{len(ids)}, duplicates {duplicates}, lost {lost}"
        f" (started at CURRENT-OFFSET {start})"
    )
    if duplicates or lost:
        raise StackError(
            "The demo saw an email lost or delivered twice: that is a bug, please report it."
        )
    demo_lifecycle.run(settings, demo.http, demo.say, demo.step, demo.sink_counts)
