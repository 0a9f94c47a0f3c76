"""An email's journey through the console, over real HTTP: the console passes `GET /emails/{id}`
to a stand-in for the API (an HTTP server in the test answering as the API does) and answers
what it answered; with no API listening, a 502 that says so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from services.console.app import create_app
from services.console.sources import ApiSource
from shared.http_server import embedded_server, listen
from tests.conftest import free_port
from tests.unit.console.test_loop import Counting, FakeKafka, snapshot_loop

MESSAGE_ID = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
# The answer of `GET /emails/{id}` as docs/api.md has it.
EMAIL = {
    "id": MESSAGE_ID,
    "status": "deferred",
    "from": "shop@example.com",
    "subject": "Your order",
    "tags": ["orders"],
    "created_at": "2026-11-25T09:30:00Z",
    "recipients": [
        {
            "address": "deferred+1@simulator.example.com",
            "kind": "to",
            "state": "deferred",
            "last_reply": {"code": 450, "enhanced": "4.2.0", "text": "try again later"},
            "attempts": 1,
            "next_try_at": "2026-11-25T09:31:00Z",
        }
    ],
    "history": [
        {
            "at": "2026-11-25T09:30:00Z",
            "type": "accepted",
            "recipient": None,
            "reply": None,
            "attempt": None,
            "record": {"topic": "email.send", "partition": 1, "offset": 41},
            "event": {"partition": 1, "offset": 97},
        },
        {
            "at": "2026-11-25T09:30:00.2Z",
            "type": "deferred",
            "recipient": "deferred+1@simulator.example.com",
            "reply": {"code": 450, "enhanced": "4.2.0", "text": "try again later"},
            "attempt": 0,
            "record": {"topic": "email.send", "partition": 1, "offset": 41},
            "event": {"partition": 1, "offset": 98},
        },
    ],
}


def stand_in_api(asked: list[str]) -> FastAPI:
    api = FastAPI()

    @api.get("/emails/{message_id}")
    async def email(message_id: str) -> JSONResponse:
        asked.append(message_id)
        if message_id != MESSAGE_ID:
            return JSONResponse({"detail": f"no email with id {message_id}"}, 404)
        return JSONResponse(EMAIL)

    return api


@pytest.fixture
async def api(api_port: int) -> AsyncIterator[tuple[str, list[str]]]:
    """A stand-in API on a free port: its URL, and the ids it was asked about."""
    asked: list[str] = []
    http_socket = listen("stand-in API", "127.0.0.1", api_port)
    server = embedded_server(stand_in_api(asked), "127.0.0.1", api_port)
    # Listening already: a connection waits in the socket's backlog until the server serves.
    serving = asyncio.create_task(server.serve(sockets=[http_socket]))
    yield f"http://127.0.0.1:{api_port}", asked
    server.should_exit = True
    await serving


@pytest.fixture
def api_port() -> int:
    return free_port()


async def journey(api_url: str, message_id: str) -> httpx.Response:
    """The page's question to the console, which asks the API at `api_url`."""
    async with httpx.AsyncClient(timeout=5) as http:
        loop = snapshot_loop(FakeKafka(), Counting(), Counting())
        console = create_app(loop, 5, ApiSource(http, api_url).email)
        transport = httpx.ASGITransport(app=console)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as page:
            return await page.get(f"/api/emails/{message_id}")


async def test_the_console_answers_what_the_api_answers(api: tuple[str, list[str]]) -> None:
    api_url, asked = api

    found = await journey(api_url, MESSAGE_ID)
    unknown = await journey(api_url, "no-such-id")

    assert (found.status_code, found.json()) == (200, EMAIL)
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "no email with id no-such-id"}
    assert asked == [MESSAGE_ID, "no-such-id"]


async def test_no_api_listening_is_a_502_naming_the_api(api_port: int) -> None:
    answer = await journey(f"http://127.0.0.1:{api_port}", MESSAGE_ID)

    detail: Any = answer.json()["detail"]
    assert answer.status_code == 502
    assert detail.startswith(f"the API does not answer: http://127.0.0.1:{api_port}/emails/")
    assert "ConnectError" in detail
