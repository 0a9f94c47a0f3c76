"""The console's HTTP side: read-only routes, the snapshot's documented keys, the page's
Content-Security-Policy, and readiness that follows Kafka."""

from __future__ import annotations

import httpx
from fastapi.routing import APIRoute

from services.console.app import create_app
from tests.unit.console.test_loop import Counting, FakeKafka, snapshot_loop

SNAPSHOT_KEYS = {
    "topic", "group", "group_state", "partitions", "dlq", "members", "rates",
    "brokers", "under_replicated", "group_generation", "group_protocol", "group_coordinator",
    "group_error", "events_consumer", "retries",
}  # fmt: skip
PARTITION_KEYS = {
    "partition", "log_start_offset", "log_end_offset", "current_offset", "lag", "member",
    "offsets_live", "leader", "replicas", "isr", "under_replicated",
}  # fmt: skip


def client_for(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console")  # type: ignore[arg-type]


def test_no_route_changes_anything() -> None:
    app = create_app(snapshot_loop(FakeKafka(), Counting(), Counting()), kafka_stale_seconds=5)

    routes = [route for route in app.routes if isinstance(route, APIRoute)]
    methods = {method for route in routes for method in route.methods or ()}

    assert methods == {"GET"}


async def test_the_snapshot_has_the_documented_keys() -> None:
    loop = snapshot_loop(FakeKafka(), Counting(), Counting())
    await loop.tick()
    async with client_for(create_app(loop, kafka_stale_seconds=5)) as client:
        snapshot = (await client.get("/api/snapshot")).json()

    assert snapshot.keys() >= SNAPSHOT_KEYS
    assert set(snapshot["partitions"][0]) == PARTITION_KEYS
    assert "end_offsets" in snapshot["dlq"]


async def test_the_page_allows_no_inline_script() -> None:
    loop = snapshot_loop(FakeKafka(), Counting(), Counting())
    async with client_for(create_app(loop, kafka_stale_seconds=5)) as client:
        page = await client.get("/")
        script = await client.get("/static/console.js")

    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "<script>" not in page.text  # the one script is a file: the policy allows it
    assert script.status_code == 200


async def test_ready_once_kafka_was_read() -> None:
    loop = snapshot_loop(FakeKafka(), Counting(), Counting())
    async with client_for(create_app(loop, kafka_stale_seconds=5)) as client:
        before = await client.get("/readyz")
        await loop.tick()
        after = await client.get("/readyz")

    assert before.status_code == 503
    assert "Kafka" in before.json()["status"]
    assert after.status_code == 200
