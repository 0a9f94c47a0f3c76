"""A private stack of our services (sink, workers, API) on a given broker: topics, a group, a
dedupe store, a sink database and free ports of its own, never the user's `make up` stack.
The chaos runner and the benchmark build on it."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from deploy.local.kafka import KafkaBroker
from deploy.local.settings import LocalSettings
from deploy.local.stack import LocalStack, Service
from shared.kafka import admin_client, ensure_topics
from tests.conftest import ISOLATED, WORKER_PORTS, free_port, settings_for


def private_broker(run_dir: Path, kafka_libs_dir: Path) -> KafkaBroker:
    """A broker of its own, on free ports, with its data under run_dir/kafka."""
    return KafkaBroker(
        LocalSettings(
            run_dir=run_dir / "kafka",
            kafka_libs_dir=kafka_libs_dir,
            kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
            kafka_controller_port=free_port(),
        )
    )


class PrivateStack:
    """`name` tells this stack's topics and group from others' on the same broker."""

    def __init__(self, name: str, run_dir: Path, bootstrap_servers: str, **overrides: str) -> None:
        sink_smtp_port = str(free_port())
        self.name = name
        self.env = {
            **os.environ,
            **ISOLATED,
            "RUN_DIR": str(run_dir),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "EMAIL_TOPIC": f"email.send.{name}",
            "DLQ_TOPIC": f"email.send.{name}.dlq",
            "EVENTS_TOPIC": f"email.events.{name}",
            "CONSUMER_GROUP": f"email-send-group.{name}",
            "RETRY_CONSUMER_GROUP": f"email-retry-group.{name}",
            "STATUS_CONSUMER_GROUP": f"email-status-group.{name}",
            "API_PORT": str(free_port()),
            "WORKER_PORT": str(free_port(span=WORKER_PORTS)),
            "SINK_SMTP_PORT": sink_smtp_port,
            "SMTP_PORT": sink_smtp_port,
            "SINK_HTTP_PORT": str(free_port()),
            "CONSOLE_PORT": str(free_port()),
            **overrides,
        }
        self.settings = settings_for(self.env)
        self.stack = LocalStack(self.settings, self.env)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    @property
    def sink_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.sink_http_port}"

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.console_port}"

    async def up_topics(self) -> None:
        await ensure_topics(self.settings)

    async def up(self, workers: int = 1, console: bool = False) -> None:
        await self.up_topics()
        services = [self.stack.sink(), *self.workers(workers), self.stack.api()]
        try:
            for service in services + ([self.stack.console()] if console else []):
                await asyncio.to_thread(self.stack.start, service)
        except BaseException:
            await self.down()
            raise

    async def down(self) -> None:
        """Stop every service this stack may have started, whatever state it is in."""
        stack = self.stack
        for service in [stack.console(), stack.api(), *self.workers(5), stack.sink()]:
            try:
                await asyncio.to_thread(self.stack.stop, service)
            except Exception as error:  # keep stopping the others
                print(f"chaos: could not stop {service.name}: {error}")

    def workers(self, count: int) -> list[Service]:
        return [self.stack.worker(number) for number in range(1, count + 1)]

    async def start(self, service: Service) -> None:
        await asyncio.to_thread(self.stack.start, service)

    async def stop(self, service: Service) -> None:
        await asyncio.to_thread(self.stack.stop, service)

    def pid(self, service: Service) -> int | None:
        return self.stack.process(service).running_pid()

    def worker_logs(self) -> str:
        logs = sorted((self.settings.run_dir / "logs").glob("worker*.log"))
        return "".join(path.read_text(errors="replace") for path in logs)

    async def worker_state(self, worker: Service) -> dict[str, Any] | None:
        """The worker's /readyz answer (its partitions, its rebalances), None while it is not
        a member of the group."""
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(worker.ready_url)
        return dict(response.json()) if response.status_code == 200 else None

    async def stored_count(self) -> int:
        """How many messages the sink holds."""
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"{self.sink_url}/api/v1/messages", params={"limit": 1})
        return int(response.raise_for_status().json()["total"])

    async def until_stored_more_than(self, count: int, seconds: float) -> None:
        """Wait until the sink holds more than `count` messages (or `seconds` have passed)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if await self.stored_count() > count:
                return
            await asyncio.sleep(0.2)

    @property
    def retry_consumer_group(self) -> str:
        """The workers' group on the retry topics (RETRY_CONSUMER_GROUP)."""
        return self.settings.retry_consumer_group

    async def lag(self) -> int:
        """Records in the topic that the group has not committed past, over all partitions."""
        return await self._lag(self.settings.consumer_group, [self.settings.email_topic])

    async def retry_lag(self) -> int | None:
        """As `lag`, for the retry group over every retry topic of this stack's email topic
        (those of an earlier schedule too, as the workers subscribe to them by pattern); None
        when there are none."""
        prefix = f"{self.settings.email_topic}.retry-"
        async with admin_client(self.settings.kafka_bootstrap_servers) as admin:
            topics = sorted(
                topic for topic in await admin.list_topics() if topic.startswith(prefix)
            )
        if not topics:
            return None
        return await self._lag(self.retry_consumer_group, topics)

    async def _lag(self, group: str, topics: list[str]) -> int:
        async with admin_client(self.settings.kafka_bootstrap_servers) as admin:
            committed = await admin.list_consumer_group_offsets(group)
            described = await admin.describe_topics(topics)
        partitions = [
            TopicPartition(topic["topic"], p["partition"])
            for topic in described
            for p in topic["partitions"]
        ]
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap_servers)
        await consumer.start()
        try:
            log_end = await consumer.end_offsets(partitions)
        finally:
            await consumer.stop()
        return sum(
            log_end[tp] - (committed[tp].offset if tp in committed else 0) for tp in partitions
        )


@dataclass
class SinkRecord:
    counts: dict[str, int]  # message id -> times stored
    arrivals: dict[str, list[float]]  # message id -> when each copy arrived
    first_stored_after: Callable[[float], float | None]


async def read_sink(stack: PrivateStack) -> SinkRecord:
    """Every message the sink stored, by message id, read through its Mailpit-shaped API."""
    suffix = f"@{stack.settings.message_id_domain}"
    counts: dict[str, int] = {}
    arrivals: dict[str, list[float]] = {}
    stored_at: list[float] = []
    async with httpx.AsyncClient(timeout=60) as client:
        start = 0
        while True:
            page = (
                await client.get(
                    f"{stack.sink_url}/api/v1/messages", params={"start": start, "limit": 1000}
                )
            ).json()
            for message in page["messages"]:
                message_id = message["MessageID"].removesuffix(suffix)
                counts[message_id] = counts.get(message_id, 0) + 1
                created = datetime.fromisoformat(message["Created"]).timestamp()
                arrivals.setdefault(message_id, []).append(created)
                stored_at.append(created)
            start += len(page["messages"])
            if not page["messages"] or start >= page["total"]:
                break
    stored_at.sort()

    def first_stored_after(moment: float) -> float | None:
        later = [at for at in stored_at if at >= moment]
        return later[0] if later else None

    return SinkRecord(counts, arrivals, first_stored_after)
