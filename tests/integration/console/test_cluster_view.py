"""The console's view of a private three-node cluster (tests/private_cluster.py): a killed node
is down, the partitions it led have a new leader and are under-replicated, every look still
answers meanwhile; started again, it is up and every replica is back in sync."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from deploy.local.kafka_cluster import KafkaCluster
from deploy.local.settings import LocalSettings
from services.console.kafka_reader import create_kafka_reader
from services.console.snapshot import Picture, Reading, Watch
from shared.kafka import ensure_topics
from shared.settings import Settings
from tests.private_cluster import private_cluster

LOOK_SECONDS = 0.5
CHANGE_SECONDS = 60.0  # a killed node is fenced in 3 s; a restarted one catches up in seconds


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    cluster = private_cluster(
        tmp_path_factory.mktemp("console-cluster"), LocalSettings().kafka_libs_dir
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


class Console:
    """The console's reader and picture on the cluster, every bootstrap server configured."""

    def __init__(self, settings: Settings) -> None:
        watch = Watch.of(settings)
        self.reader = create_kafka_reader(
            settings.kafka_bootstrap_servers, "console-test", 5000, watch
        )
        self.picture = Picture(watch, settings.kafka_bootstrap_servers)
        self.failed_looks: list[str] = []

    async def until(self, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Look every LOOK_SECONDS until the snapshot shows what `condition` wants."""
        deadline = time.monotonic() + CHANGE_SECONDS
        while True:
            try:
                reading = await self.reader.read()
            except Exception as error:
                self.failed_looks.append(repr(error))
                reading = None
            snapshot = self.picture.update(Reading(time.time(), reading, None, None))
            if reading is not None and condition(snapshot):
                return snapshot
            assert time.monotonic() < deadline, snapshot
            await asyncio.sleep(LOOK_SECONDS)


def status(snapshot: dict[str, Any]) -> dict[int | None, str]:
    return {broker["node_id"]: broker["status"] for broker in snapshot["brokers"]}


async def test_a_killed_node_is_down_its_partitions_move_and_come_back_in_sync(
    cluster: KafkaCluster,
) -> None:
    settings = cluster.client_settings.model_copy(
        update={
            "email_topic": "email.send.console",
            "dlq_topic": "email.send.console.dlq",
            "consumer_group": "email-send-group.console",
        }
    )
    await ensure_topics(settings)
    console = Console(settings)
    try:
        whole = await console.until(
            lambda s: status(s) == {1: "up", 2: "up", 3: "up"} and not s["under_replicated"]
        )
        victim = whole["partitions"][0]["leader"]
        console.failed_looks.clear()  # the topics' first moments, leaders still being elected

        assert await asyncio.to_thread(cluster.kill_node, victim)
        down = await console.until(lambda s: status(s)[victim] == "down")
        moved = await console.until(
            lambda s: all(lane["leader"] not in (victim, None) for lane in s["partitions"])
        )
        await asyncio.to_thread(cluster.start_node, victim)
        back = await console.until(
            lambda s: status(s)[victim] == "up" and not s["under_replicated"]
        )
    finally:
        await console.reader.close()

    assert all(lane["replicas"] and lane["isr"] == [1, 2, 3] for lane in whole["partitions"])
    assert all(lane["under_replicated"] for lane in down["partitions"]), down["partitions"]
    assert all(victim not in lane["isr"] for lane in moved["partitions"]), moved["partitions"]
    assert moved["under_replicated"] == [
        f"{topic}-{p}"
        for topic in sorted(Watch.of(settings).topics)
        for p in range(settings.topic_partitions)
    ]
    kinds = [event["kind"] for event in back["timeline"]]
    assert {"broker_down", "under_replicated", "leader_moved", "broker_up", "in_sync"} <= set(kinds)
    assert all(lane["isr"] == [1, 2, 3] for lane in back["partitions"]), back["partitions"]
    # The other two brokers answered every look while one was dying and restarting.
    assert console.failed_looks == []
