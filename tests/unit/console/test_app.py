"""The console's HTTP side: read-only routes, the snapshot's documented keys, the page's
Content-Security-Policy, readiness that follows Kafka, and an email's journey passed through
from the API as it answers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from services.console.app import create_app
from services.console.loop import SnapshotLoop
from services.console.sources import SourceError
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


class FakeApi:
    """The API's `GET /emails/{id}`: the answer given, or no answer at all."""

    def __init__(self, status_code: int = 200, answer: dict[str, Any] | None = None) -> None:
        self.status_code, self.answer = status_code, answer or {}
        self.asked: list[str] = []

    async def email(self, message_id: str) -> tuple[int, dict[str, Any]]:
        self.asked.append(message_id)
        if self.status_code == 0:
            raise SourceError("http://127.0.0.1:8000/emails/x: ConnectError connection refused")
        return self.status_code, self.answer


def console(loop: SnapshotLoop | None = None, api: FakeApi | None = None) -> FastAPI:
    loop = loop or snapshot_loop(FakeKafka(), Counting(), Counting())
    return create_app(loop, kafka_stale_seconds=5, email_of=(api or FakeApi()).email)


def test_no_route_changes_anything() -> None:
    app = console()

    routes = [route for route in app.routes if isinstance(route, APIRoute)]
    methods = {method for route in routes for method in route.methods or ()}

    assert methods == {"GET"}


async def test_the_snapshot_has_the_documented_keys() -> None:
    loop = snapshot_loop(FakeKafka(), Counting(), Counting())
    await loop.tick()
    async with client_for(console(loop)) as client:
        snapshot = (await client.get("/api/snapshot")).json()

    assert snapshot.keys() >= SNAPSHOT_KEYS
    assert set(snapshot["partitions"][0]) == PARTITION_KEYS
    assert "end_offsets" in snapshot["dlq"]


async def test_the_page_allows_no_inline_script() -> None:
    loop = snapshot_loop(FakeKafka(), Counting(), Counting())
    async with client_for(console(loop)) as client:
        page = await client.get("/")
        script = await client.get("/static/console.js")

    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "<script>" not in page.text  # the one script is a file: the policy allows it
    assert script.status_code == 200


async def test_ready_once_kafka_was_read() -> None:
    loop = snapshot_loop(FakeKafka(), Counting(), Counting())
    async with client_for(console(loop)) as client:
        before = await client.get("/readyz")
        await loop.tick()
        after = await client.get("/readyz")

    assert before.status_code == 503
    assert "Kafka" in before.json()["status"]
    assert after.status_code == 200


JOURNEY = {
    "id": "m-1",
    "status": "deferred",
    "recipients": [{"address": "a@example.com", "state": "deferred", "attempts": 1}],
    "history": [
        {"type": "accepted", "record": {"topic": "email.send", "partition": 1, "offset": 4}}
    ],
}


@pytest.mark.parametrize(
    ("status_code", "answer"),
    [(200, JOURNEY), (404, {"detail": "no email with id m-1"}), (503, {"detail": "not ready"})],
)
async def test_an_emails_journey_is_the_apis_answer_passed_through(
    status_code: int, answer: dict[str, Any]
) -> None:
    api = FakeApi(status_code, answer)
    async with client_for(console(api=api)) as client:
        response = await client.get("/api/emails/m-1")

    assert (response.status_code, response.json()) == (status_code, answer)
    assert api.asked == ["m-1"]


async def test_an_api_that_does_not_answer_is_a_bad_gateway_that_says_so() -> None:
    async with client_for(console(api=FakeApi(status_code=0))) as client:
        response = await client.get("/api/emails/m-1")

    assert response.status_code == 502
    assert response.json()["detail"].startswith("the API does not answer: http://127.0.0.1:8000")


@pytest.mark.parametrize("message_id", ["not%20an%20id", "...", "x" * 201, "a%3Cb"])
async def test_what_is_no_message_id_is_never_asked_of_the_api(message_id: str) -> None:
    api = FakeApi()
    async with client_for(console(api=api)) as client:
        response = await client.get(f"/api/emails/{message_id}")

    assert response.status_code == 422
    assert "is not a message id" in response.json()["detail"]
    assert api.asked == []
