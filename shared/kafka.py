"""Kafka helpers the services, the local stack and the tests share.

Topic provisioning lives here so that `make topics`, the test fixtures and the services'
readiness checks agree on what `email.send` and `email.send.dlq` look like.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from shared.settings import Settings

TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


@dataclass(frozen=True)
class TopicState:
    name: str
    partitions: int
    created: bool


@asynccontextmanager
async def admin_client(
    bootstrap_servers: str, request_timeout_ms: int = 10_000
) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=request_timeout_ms,
        client_id="email-pipeline-admin",
    )
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def ensure_topics(settings: Settings) -> list[TopicState]:
    """Create `email.send` and its dead-letter topic unless they exist; safe to run again.

    An existing topic is left as it is, whatever its partition count: Kafka can add
    partitions but never remove them, and adding them would move keys to other partitions.
    """
    wanted = [settings.email_topic, settings.dlq_topic]
    async with admin_client(settings.kafka_bootstrap_servers) as admin:
        existing = {
            topic["topic"]
            for topic in await admin.describe_topics(wanted)
            if topic["error_code"] == 0
        }
        missing = [name for name in wanted if name not in existing]
        created = set()
        if missing:
            response = await admin.create_topics(
                [NewTopic(name, settings.topic_partitions, 1) for name in missing]
            )
            for name, error_code, *error_message in response.topic_errors:
                if error_code == 0:
                    created.add(name)
                elif error_code != TOPIC_ALREADY_EXISTS:
                    raise for_code(error_code)(f"cannot create topic {name}: {error_message}")
        described = await admin.describe_topics(wanted)
    return [
        TopicState(topic["topic"], len(topic["partitions"]), topic["topic"] in created)
        for topic in described
    ]
