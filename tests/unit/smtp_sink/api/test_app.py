"""The sink's app built in-process on a fake store: twice in one process, metrics kept apart;
its chaos routes set the very policy the SMTP handler reads; its info counts what it deletes."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI

from services.smtp_sink.api.app import build_app
from services.smtp_sink.api.metrics import SinkMetrics
from services.smtp_sink.api.search import Filter
from services.smtp_sink.mailbox import MailboxPage, SearchPage, Sighting, SinkStats, StoredMessage
from services.smtp_sink.simulator.faults import (
    ChaosTrigger,
    ChaosTriggers,
    FaultPolicy,
    recipient_refusal,
)


class EmptyStore:
    def __init__(self, db_path: Path = Path("no/such/messages.sqlite3"), deletes: int = 0) -> None:
        self.db_path = db_path
        self.deletes = deletes

    async def page(self, start: int, limit: int) -> MailboxPage:
        return MailboxPage((), 0, 0)

    async def latest_id(self) -> str | None:
        return None

    async def message(
        self, message_id: str, *, mark_read: bool
    ) -> tuple[StoredMessage, bytes] | None:
        return None

    async def raw(self, message_id: str) -> bytes | None:
        return None

    async def delete(self, message_ids: list[str] | None) -> int:
        return self.deletes

    async def search(self, filters: tuple[Filter, ...], start: int, limit: int) -> SearchPage:
        return SearchPage((), 0, 0, 0, 0)

    async def delete_matching(self, filters: tuple[Filter, ...]) -> int:
        return self.deletes

    async def stats(self) -> SinkStats:
        return SinkStats(0, 0)

    async def ping(self) -> None:
        return None


def app(
    store: EmptyStore | None = None,
    metrics: SinkMetrics | None = None,
    faults: FaultPolicy | None = None,
) -> FastAPI:
    return build_app(
        store or EmptyStore(), lambda: True, metrics or SinkMetrics(), faults or FaultPolicy.of()
    )


async def call(app: FastAPI, method: str, path: str, body: bytes = b"") -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sink") as client:
        return await client.request(method, path, content=body)


async def get(app: FastAPI, path: str) -> str:
    response = await call(app, "GET", path)
    assert response.status_code == 200
    return response.text


async def test_two_apps_in_one_process_each_serve_their_own_metrics() -> None:
    first_metrics, second_metrics = SinkMetrics(), SinkMetrics()
    first = app(metrics=first_metrics)
    second = app(metrics=second_metrics)

    first_metrics.stored(Sighting(1), 0.01)

    assert "email_sink_messages_received_total 1.0" in await get(first, "/metrics")
    assert "email_sink_messages_received_total 0.0" in await get(second, "/metrics")


async def test_metrics_in_openmetrics_when_the_scraper_asks_for_it() -> None:
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://sink") as client:
        response = await client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )

    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


async def test_the_inbox_is_read_from_the_package() -> None:
    inbox = app()

    assert (await get(inbox, "/")).startswith("<!doctype html>")
    assert "poll()" in await get(inbox, "/inbox/inbox.js")


async def test_a_chaos_put_sets_the_policy_the_smtp_handler_reads() -> None:
    faults = FaultPolicy.of()
    sink = app(faults=faults)

    response = await call(
        sink, "PUT", "/api/v1/chaos", b'{"Recipient": {"ErrorCode": 452, "Probability": 100}}'
    )

    assert response.status_code == 200, response.text
    assert response.json()["Recipient"] == {"ErrorCode": 452, "Probability": 100}
    assert faults.chaos.triggers == ChaosTriggers(recipient=ChaosTrigger(452, 100))
    assert recipient_refusal(faults, "bob@example.com") == "452 Chaos recipient error"
    assert (await call(sink, "GET", "/api/v1/chaos")).json() == response.json()


async def test_a_chaos_put_it_cannot_take_is_a_400_and_changes_nothing() -> None:
    faults = FaultPolicy.of()
    faults.chaos.triggers = ChaosTriggers(sender=ChaosTrigger(451, 5))
    sink = app(faults=faults)

    for body, says in [
        (b'{"Sender": {"ErrorCode": 200, "Probability": 5}}', "ErrorCode must be between"),
        (b'{"Sender": {"ErrorCode": 451, "Probability": 500}}', "Probability must be between"),
        (b'{"Sender": {"ErrorCode": 451, "Probability": 5}, "Typo": {}}', "unknown chaos trigger"),
        (b"{not json", "invalid JSON body"),
        (b"", "invalid JSON body"),
    ]:
        response = await call(sink, "PUT", "/api/v1/chaos", body)
        assert (response.status_code, response.headers["content-type"].split(";")[0]) == (
            400,
            "text/plain",
        ), body
        assert says in response.text, body

    assert faults.chaos.triggers == ChaosTriggers(sender=ChaosTrigger(451, 5))


async def test_info_counts_the_messages_the_api_deleted(tmp_path: Path) -> None:
    db_path = tmp_path / "messages.sqlite3"
    db_path.write_bytes(b"x" * 4096)
    (tmp_path / "messages.sqlite3-wal").write_bytes(b"x" * 1000)
    sink = app(store=EmptyStore(db_path, deletes=3))

    await call(sink, "DELETE", "/api/v1/messages")
    await call(sink, "DELETE", "/api/v1/search?query=from%3Aann")
    info = (await call(sink, "GET", "/api/v1/info")).json()

    assert info["RuntimeStats"]["MessagesDeleted"] == 6
    assert (info["Database"], info["DatabaseSize"]) == (str(db_path), 5096)
    assert info["Version"].startswith("kafka-email-pipeline ")
