"""The API as `python -m services.api` builds it, on the session's real broker: a topic of its
own per test (with the max.message.bytes the test needs), driven in-process over ASGI; and a
fresh database for the API's stores on PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
from aiokafka.admin import NewTopic

from deploy.local.postgres import LocalPostgres
from services.api.__main__ import build_app
from shared.kafka import admin_client
from shared.settings import Settings
from tests.postgres import fresh_database

NewTopicFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def store_url(postgresql: LocalPostgres) -> AsyncIterator[str]:
    """API_STORE_URL: a fresh database on the session's private PostgreSQL."""
    async with fresh_database(postgresql) as url:
        yield url


@pytest.fixture
async def new_topic(kafka: Settings) -> AsyncIterator[NewTopicFactory]:
    """Creates a fresh one-partition topic with the given settings, deleted after the test."""
    created: list[str] = []

    async def create(**configs: str) -> str:
        name = f"{kafka.email_topic}.api.{uuid.uuid4().hex[:8]}"
        async with admin_client(kafka.kafka_bootstrap_servers) as admin:
            response = await admin.create_topics([NewTopic(name, 1, 1, topic_configs=configs)])
        assert response.topic_errors[0][1] == 0, response.topic_errors
        created.append(name)
        return name

    yield create
    if created:
        async with admin_client(kafka.kafka_bootstrap_servers) as admin:
            await admin.delete_topics(created)


@asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app through its lifespan (producer, topic check, loop lag), until it has connected."""
    app = build_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api", timeout=30) as client,
    ):
        await until_connected(client, settings)
        yield client


async def until_connected(client: httpx.AsyncClient, settings: Settings) -> None:
    not_connected = f"not connected to Kafka at {settings.kafka_bootstrap_servers}"
    for _ in range(200):
        readiness = await client.get("/readyz")
        if readiness.status_code == 200 or readiness.json()["detail"] != not_connected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the API did not connect to Kafka: {readiness.text}")
