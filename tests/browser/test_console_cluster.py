"""The console of a stack on a private three-node cluster, in a real browser: a killed node is
marked down and the partitions it led under-replicated, with their new leader; started again,
it is up and every replica back in sync; the group's generation is read throughout. A
screenshot of each step is saved in the test's temporary directory."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from deploy.local.kafka_cluster import KafkaCluster
from deploy.local.settings import LocalSettings
from tests.browser.console_page import LANES
from tests.private_cluster import private_cluster
from tests.private_stack import PrivateStack

CHANGE_SECONDS = 60.0  # a killed node is fenced in 3 s; started again, it catches up in seconds
WHOLE_AGAIN_SECONDS = 120.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    cluster = private_cluster(
        tmp_path_factory.mktemp("browser-cluster"), LocalSettings().kafka_libs_dir
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
async def cluster_stack(
    cluster: KafkaCluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[PrivateStack]:
    stack = PrivateStack(
        "browser-cluster",
        tmp_path_factory.mktemp("browser-cluster-stack"),
        cluster.bootstrap_servers,
        TOPIC_REPLICATION_FACTOR="3",
        TOPIC_MIN_INSYNC_REPLICAS="2",
    )
    await stack.up(console=True)
    try:
        yield stack
    finally:
        await stack.down()


async def test_a_killed_node_is_marked_down_and_its_partitions_under_replicated_until_back(
    page: Page, cluster: KafkaCluster, cluster_stack: PrivateStack, tmp_path: Path
) -> None:
    await page.goto(cluster_stack.console_url)
    brokers = page.get_by_test_id("broker")
    lanes = page.get_by_test_id("partition-lane")
    await expect(brokers).to_have_count(3, timeout=15_000)
    await expect(page.locator("[data-testid=broker][data-status=up]")).to_have_count(3)
    await expect(lanes).to_have_count(3)
    await expect(page.locator("[data-testid=partition-lane][data-isr='1,2,3']")).to_have_count(3)
    await expect(page.get_by_test_id("replication")).to_have_text(
        "every partition has all its replicas in sync"
    )
    generation = page.get_by_test_id("group-generation")
    await expect(generation).to_have_text(re.compile(r"^\d+$"))
    victim = int(await lanes.first.get_attribute("data-leader") or 0)
    led = [
        lane["partition"] for lane in await page.evaluate(LANES) if lane["leader"] == str(victim)
    ]
    await page.screenshot(path=tmp_path / "1-three-brokers-up.png", full_page=True)

    await asyncio.to_thread(cluster.kill_node, victim)
    try:
        victim_broker = page.locator(f"[data-testid=broker][data-node-id='{victim}']")
        await expect(victim_broker).to_have_attribute("data-status", "down", timeout=30_000)
        await expect(victim_broker.get_by_test_id("broker-status")).to_have_text("down")
        for partition in led:
            lane = page.locator(f"[data-testid=partition-lane][data-partition='{partition}']")
            await expect(lane).to_have_attribute("data-under-replicated", "true")
            await expect(lane.get_by_test_id("under-replicated-badge")).to_be_visible()
            new_leader = await lane.get_attribute("data-leader")
            assert new_leader not in ("", str(victim)), new_leader
            assert str(victim) not in (await lane.get_attribute("data-isr") or "").split(",")
            await expect(lane.get_by_test_id("lane-leader")).to_have_text(str(new_leader))
        await expect(page.get_by_test_id("replication")).to_contain_text("under-replicated")
        await expect(page.get_by_test_id("kafka-status")).to_have_text("live")
        moved = page.locator('[data-testid=timeline-event][data-kind="leader_moved"]')
        await expect(moved.first).to_contain_text(f"{victim} →")
        await page.screenshot(path=tmp_path / "2-node-killed.png", full_page=True)
    finally:
        await asyncio.to_thread(cluster.start_node, victim)

    await expect(victim_broker).to_have_attribute(
        "data-status", "up", timeout=CHANGE_SECONDS * 1000
    )
    await expect(
        page.locator("[data-testid=partition-lane][data-under-replicated=true]")
    ).to_have_count(0, timeout=CHANGE_SECONDS * 1000)
    await expect(page.get_by_test_id("replication")).to_have_text(
        "every partition has all its replicas in sync"
    )
    in_sync = page.locator('[data-testid=timeline-event][data-kind="in_sync"]')
    await expect(in_sync.first).to_be_visible()
    # Read on through the group's coordinator, wherever the node loss moved it.
    await expect(generation).to_have_text(re.compile(r"^\d+$"))
    await page.screenshot(path=tmp_path / "3-back-in-sync.png", full_page=True)
    # Leave the cluster whole for whatever runs next on it.
    await asyncio.to_thread(cluster.wait_until_whole, time.monotonic() + WHOLE_AGAIN_SECONDS)
