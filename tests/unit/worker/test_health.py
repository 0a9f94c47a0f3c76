"""The worker's /readyz: ready once it is a member of the group, with the partitions it owns."""

from __future__ import annotations

import httpx
from aiokafka.structs import TopicPartition

from services.worker.health import create_health_app


class WorkerState:
    def __init__(self) -> None:
        self.joined_group = False
        self.partitions: dict[TopicPartition, object] = {}
        self.rebalances = 0
        self.last_rebalance_seconds: float | None = None


async def test_ready_only_once_a_member_of_the_group() -> None:
    worker = WorkerState()
    app = create_health_app(worker, "email-send-group")  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as c:
        assert (await c.get("/healthz")).status_code == 200
        before = await c.get("/readyz")
        worker.joined_group = True
        worker.partitions = {TopicPartition("email.send", 2): object()}
        worker.rebalances, worker.last_rebalance_seconds = 1, 0.25
        after = await c.get("/readyz")

    assert before.status_code == 503
    assert before.json() == {"status": "not yet a member of email-send-group"}
    assert after.json() == {
        "status": "ready",
        "partitions": ["email.send-2"],
        "rebalances": 1,
        "last_rebalance_seconds": 0.25,
    }
