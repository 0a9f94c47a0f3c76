"""Topics and groups of their own for a console test on the shared broker: an email topic, its
dead letters, the events and two retry topics, named after the test, and the three groups that
read them."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka.admin import NewTopic

from services.console.snapshot import Watch
from shared.kafka import admin_client


def watch_named(name: str) -> Watch:
    topic = f"email.send.{name}"
    return Watch(
        topic=topic,
        dlq_topic=f"{topic}.dlq",
        group=f"email-send-group.{name}",
        events_topic=f"email.events.{name}",
        status_group=f"email-status-group.{name}",
        retry_topics=(f"{topic}.retry-2s", f"{topic}.retry-5s"),
        retry_group=f"email-retry-group.{name}",
    )


async def create_watched(bootstrap_servers: str, prefix: str, partitions: int = 3) -> Watch:
    """The topics of a new Watch, once the broker's metadata has them all."""
    watch = watch_named(f"{prefix}-{uuid.uuid4().hex[:8]}")
    async with admin_client(bootstrap_servers) as admin:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in watch.topics])
        for _ in range(50):
            described = await admin.describe_topics(list(watch.topics))
            if not any(topic["error_code"] for topic in described):
                break
            await asyncio.sleep(0.1)
    return watch


async def delete_watched(bootstrap_servers: str, watch: Watch, *more: str) -> None:
    async with admin_client(bootstrap_servers) as admin:
        await admin.delete_topics([*watch.topics, *more])
