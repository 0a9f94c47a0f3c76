"""What the console's timeline says when a member restarts, against the real broker: a static
member (a group instance id) back within the session timeout came back with its partitions and
no rebalance; a dynamic one left and joined, and the group rebalanced."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import NewTopic

from services.console.kafka_reader import create_kafka_reader
from services.console.snapshot import Picture, Reading
from shared.kafka import admin_client
from shared.settings import Settings
from tests.integration.console.watched import watch_named

PARTITIONS = 4
LOOK_SECONDS = 0.5  # the console's default refresh


def member(kafka: Settings, name: str, worker: str, static: bool) -> AIOKafkaConsumer:
    watch = watch_named(name)
    return AIOKafkaConsumer(
        watch.topic, bootstrap_servers=kafka.kafka_bootstrap_servers, group_id=watch.group,
        group_instance_id=worker if static else None, client_id=f"email-worker-{worker}",
        enable_auto_commit=False,
    )  # fmt: skip


class Console:
    """The console's reader and picture, looking every LOOK_SECONDS as its loop does."""

    def __init__(self, kafka: Settings, name: str) -> None:
        watch = watch_named(name)
        self.reader = create_kafka_reader(
            kafka.kafka_bootstrap_servers, "console-test", 5000, watch
        )
        self.picture = Picture(watch)
        self.snapshot: dict[str, Any] = {}
        self.generation_when_settled: int | None = None

    async def look(self) -> dict[str, Any]:
        self.snapshot = self.picture.update(
            Reading(time.time(), await self.reader.read(), None, None)
        )
        return self.snapshot

    async def look_for(self, seconds: float, until: str = "") -> None:
        """Look for `seconds`, or until an event of the kind `until` is told."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and until not in kinds(self.snapshot):
            await self.look()
            await asyncio.sleep(LOOK_SECONDS)

    def texts(self, kind: str) -> list[str]:
        return [event["text"] for event in self.snapshot["timeline"] if event["kind"] == kind]


def kinds(snapshot: dict[str, Any]) -> set[str]:
    return {event["kind"] for event in snapshot.get("timeline", [])}


async def restart_a_member(kafka: Settings, static: bool) -> Console:
    """worker-a and worker-b share the topic; worker-a stops and is back 2 s later (the
    session timeout is 10 s). The console looks all along."""
    name = f"members-{uuid.uuid4().hex[:8]}"
    watch = watch_named(name)
    async with admin_client(kafka.kafka_bootstrap_servers) as admin:
        await admin.create_topics(
            [NewTopic(watch.topic, PARTITIONS, 1)]
            + [NewTopic(topic, 1, 1) for topic in watch.topics if topic != watch.topic]
        )
    console = Console(kafka, name)
    first, second = (
        member(kafka, name, "worker-a", static),
        member(kafka, name, "worker-b", static),
    )
    await first.start()
    await second.start()
    back = member(kafka, name, "worker-a", static)
    try:
        async with asyncio.timeout(30):
            while len(first.assignment()) + len(second.assignment()) != PARTITIONS:
                await asyncio.gather(first.getmany(timeout_ms=100), second.getmany(timeout_ms=100))
        await console.look_for(2)  # settled
        console.generation_when_settled = console.snapshot["group_generation"]
        assert console.generation_when_settled is not None, console.snapshot["timeline"]
        await first.stop()
        await console.look_for(2)
        await back.start()
        await console.look_for(8, until="static_member_back" if static else "member_joined")
        await console.look_for(3)  # a rebalance, if any, shows in the looks after
    finally:
        await asyncio.gather(back.stop(), second.stop())
        await console.reader.close()
    return console


async def test_a_static_member_back_in_time_is_told_apart_from_a_rebalance(kafka: Settings) -> None:
    console = await restart_a_member(kafka, static=True)

    [came_back] = console.texts("static_member_back")
    assert came_back.startswith("worker-a (static) came back: same partitions "), came_back
    generation = console.generation_when_settled
    assert came_back.endswith(f"no rebalance (generation {generation}, unchanged)"), came_back
    assert console.snapshot["group_generation"] == generation
    assert console.texts("generation") == []
    assert console.texts("member_left") == console.texts("member_joined") == []
    assert sorted(m["group_instance_id"] for m in console.snapshot["members"]) == [
        "worker-a",
        "worker-b",
    ]


async def test_a_dynamic_member_restarting_leaves_joins_and_the_group_rebalances(
    kafka: Settings,
) -> None:
    console = await restart_a_member(kafka, static=False)

    [left] = console.texts("member_left")
    assert re.fullmatch(r"email-worker-worker-a \(.+\) left the group", left), left
    assert len(console.texts("member_joined")) == 1
    assert console.texts("static_member_back") == []
    # The leave and the join, 2 s apart: a rebalance, and a generation, each.
    assert console.generation_when_settled is not None
    assert console.snapshot["group_generation"] >= console.generation_when_settled + 2
    assert len(console.texts("generation")) >= 1
    assert all(m["group_instance_id"] is None for m in console.snapshot["members"])
