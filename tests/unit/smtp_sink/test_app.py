"""The sink's app built in-process on a fake store: twice in one process, metrics kept apart."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from services.smtp_sink.api import build_app
from services.smtp_sink.mailbox import MailboxPage, SearchPage, Sighting, SinkStats, StoredMessage
from services.smtp_sink.metrics import SinkMetrics
from services.smtp_sink.search import Filter


class EmptyStore:
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
        return 0

    async def search(self, filters: tuple[Filter, ...], start: int, limit: int) -> SearchPage:
        return SearchPage((), 0, 0, 0, 0)

    async def delete_matching(self, filters: tuple[Filter, ...]) -> int:
        return 0

    async def stats(self) -> SinkStats:
        return SinkStats(0, 0)

    async def ping(self) -> None:
        return None


async def get(app: FastAPI, path: str) -> str:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sink") as client:
        response = await client.get(path)
    assert response.status_code == 200
    return response.text


async def test_two_apps_in_one_process_each_serve_their_own_metrics() -> None:
    first_metrics, second_metrics = SinkMetrics(), SinkMetrics()
    first = build_app(EmptyStore(), lambda: True, first_metrics)
    second = build_app(EmptyStore(), lambda: True, second_metrics)

    first_metrics.stored(Sighting(1), 0.01)

    assert "email_sink_messages_received_total 1.0" in await get(first, "/metrics")
    assert "email_sink_messages_received_total 0.0" in await get(second, "/metrics")


async def test_the_inbox_is_read_from_the_package() -> None:
    app = build_app(EmptyStore(), lambda: True, SinkMetrics())

    assert (await get(app, "/")).startswith("<!doctype html>")
    assert "poll()" in await get(app, "/inbox/inbox.js")
