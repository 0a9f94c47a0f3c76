"""The status consumer on the session's real broker: events reach the read model and the group
commits past them (an unreadable one included), a restart resumes at the committed offset, and
the API's own `accepted` event is found at once and gets its place once its copy is read."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import NewTopic
from aiokafka.errors import GroupCoordinatorNotAvailableError

from services.api.__main__ import status_consumer
from services.api.status import EventPosition
from services.api.status_projector import StatusProjector
from services.api.status_store import EventRow, SqliteStatusStore
from shared.events import Event, parse_event
from shared.kafka import admin_client, create_producer, topic_configs
from shared.settings import Settings
from tests.integration.api.conftest import NewTopicFactory, running_api
from tests.unit.api.email_events import MESSAGE_ID, accepted, sent

ANA = "ana@example.com"
PARTITIONS = 3


@pytest.fixture
async def settings(kafka: Settings, tmp_path: Path) -> AsyncIterator[Settings]:
    """An events topic and a status group of the test's own, and a read model in tmp_path."""
    name = uuid.uuid4().hex[:8]
    topic = f"{kafka.events_topic}.api.{name}"
    async with admin_client(kafka.kafka_bootstrap_servers) as admin:
        response = await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    assert response.topic_errors[0][1] == 0, response.topic_errors
    yield kafka.model_copy(
        update={
            "events_topic": topic,
            "status_consumer_group": f"email-status-group.{name}",
            "api_db_path": tmp_path / "api" / "store.sqlite3",
        }
    )
    async with admin_client(kafka.kafka_bootstrap_servers) as admin:
        await admin.delete_topics([topic])


class CountingStore(SqliteStatusStore):
    """The SQLite read model, counting the rows each batch brings."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.added: list[str] = []

    async def add(self, rows: Sequence[EventRow]) -> None:
        await super().add(rows)
        self.added.extend(row.type for row in rows)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[CountingStore]:
    store = CountingStore(settings.api_db_path)
    await store.open()
    yield store
    await store.close()


async def produce(settings: Settings, *values: Event | bytes) -> list[Any]:
    """Each event (or raw bytes, keyed by MESSAGE_ID) to the events topic; where each went."""
    producer = create_producer(settings, client_id="test-events", request_timeout_ms=10_000)
    await producer.start()
    try:
        placed = []
        for value in values:
            headers: list[tuple[str, bytes]] = []
            key = MESSAGE_ID.encode()
            if not isinstance(value, bytes):
                key, value, headers = value.to_kafka()
            placed.append(
                await producer.send_and_wait(settings.events_topic, value, key=key, headers=headers)
            )
        return placed
    finally:
        await producer.stop()


async def committed(settings: Settings) -> dict[int, int]:
    """The status group's CURRENT-OFFSET of each partition it has committed (none while its
    coordinator is not there yet)."""
    try:
        async with admin_client(settings.kafka_bootstrap_servers) as admin:
            offsets = await admin.list_consumer_group_offsets(settings.status_consumer_group)
    except GroupCoordinatorNotAvailableError:
        return {}
    return {
        partition.partition: found.offset
        for partition, found in offsets.items()
        if partition.topic == settings.events_topic
    }


async def until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 30) -> None:
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {seconds:g} s: {what}")


@pytest.fixture
async def projectors() -> AsyncIterator[list[StatusProjector]]:
    running: list[StatusProjector] = []
    yield running
    for projector in running:
        await projector.stop()


async def started(
    settings: Settings, store: CountingStore, projectors: list[StatusProjector]
) -> StatusProjector:
    projector = StatusProjector(settings, lambda: status_consumer(settings), store, topic_configs)
    await projector.start()
    projectors.append(projector)
    return projector


async def test_events_reach_the_read_model_and_the_group_commits_past_them(
    settings: Settings, store: CountingStore, projectors: list[StatusProjector]
) -> None:
    placed = await produce(settings, accepted(ANA), b"not an event", sent(ANA))
    [partition] = {metadata.partition for metadata in placed}  # keyed by the message id
    end: int = placed[-1].offset + 1
    await started(settings, store, projectors)

    async def all_applied() -> bool:
        return (await committed(settings)).get(partition) == end

    await until(all_applied, "the group commits past the last event")

    kept = await store.events_of(MESSAGE_ID)
    assert [k.type for k in kept] == ["accepted", "sent"], "the unreadable one is skipped"
    assert [k.position for k in kept] == [
        EventPosition(partition=partition, offset=placed[0].offset),
        EventPosition(partition=partition, offset=placed[2].offset),
    ]
    assert parse_event(kept[1].body.encode()) == sent(ANA)


async def test_a_restart_resumes_at_the_committed_offset(
    settings: Settings, store: CountingStore, projectors: list[StatusProjector]
) -> None:
    [first] = await produce(settings, accepted(ANA))
    projector = await started(settings, store, projectors)

    def committed_up_to(offset: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return (await committed(settings)).get(first.partition) == offset

        return check

    await until(committed_up_to(first.offset + 1), "the first event is committed")
    await projector.stop()
    [second] = await produce(settings, sent(ANA))
    await started(settings, store, projectors)
    await until(committed_up_to(second.offset + 1), "the second event is committed")

    assert store.added == ["accepted", "sent"], "nothing applied twice after a clean stop"
    assert [k.type for k in await store.events_of(MESSAGE_ID)] == ["accepted", "sent"]


async def test_an_email_is_found_right_after_its_202_and_follows_its_events(
    settings: Settings, new_topic: NewTopicFactory
) -> None:
    settings = settings.model_copy(update={"email_topic": await new_topic()})
    async with running_api(settings) as client:
        sent_email = await client.post(
            "/emails",
            json={"from": "shop@example.com", "to": [ANA], "subject": "s", "text": "t"},
        )
        right_after = await client.get(sent_email.headers["Location"])
        message_id = sent_email.json()["id"]
        delivered = sent(ANA).model_copy(update={"message_id": message_id})
        await produce(settings, delivered)

        async def says_delivered() -> bool:
            answer = (await client.get(f"/emails/{message_id}")).json()
            return bool(answer["status"] == "delivered" and answer["history"][0]["event"])

        await until(says_delivered, "GET /emails/{id} says delivered, its events read back")
        answer = (await client.get(f"/emails/{message_id}")).json()

    assert sent_email.status_code == 202
    assert right_after.status_code == 200
    assert right_after.json()["status"] == "queued"
    assert [entry["type"] for entry in answer["history"]] == ["accepted", "sent"]
    accepted_entry = answer["history"][0]
    assert accepted_entry["record"] == {
        "topic": settings.email_topic,
        "partition": sent_email.json()["partition"],
        "offset": sent_email.json()["offset"],
    }
    assert accepted_entry["event"]["partition"] == answer["history"][1]["event"]["partition"]
    assert accepted_entry["event"]["offset"] < answer["history"][1]["event"]["offset"]
