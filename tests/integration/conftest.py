"""Fixtures for tests against real servers: a fresh one-partition topic per test on the real
broker, and a private PostgreSQL for the stores that hosts share."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from aiokafka.admin import NewTopic

from deploy.local.postgres import LocalPostgres
from shared.kafka import admin_client
from shared.settings import Settings
from tests.postgres import private_postgres


@pytest.fixture(scope="session")
def postgresql() -> Iterator[LocalPostgres]:
    """PostgreSQL 15 on a free port, in a directory of its own; stopped by its pid at the end."""
    with private_postgres() as server:
        yield server


@pytest.fixture
async def one_partition_topic(kafka: Settings) -> AsyncIterator[str]:
    """A new topic named after email.send with a single partition, as in the seed's pictures."""
    name = f"{kafka.email_topic}.{uuid.uuid4().hex[:8]}"
    async with admin_client(kafka.kafka_bootstrap_servers) as admin:
        response = await admin.create_topics([NewTopic(name, 1, 1)])
        assert response.topic_errors[0][1] == 0, response.topic_errors
    yield name
    async with admin_client(kafka.kafka_bootstrap_servers) as admin:
        await admin.delete_topics([name])
