"""The embedded web server leaves SIGTERM and SIGINT to the service (shared/http_server.py):
the pin on the one uvicorn internal it relies on, `Server.capture_signals`."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette

from shared.http_server import embedded_server
from shared.signals import STOP_SIGNALS


def app_telling(started: asyncio.Event) -> Starlette:
    """An app that sets `started` as the server starts it, signal handlers already in place."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        started.set()
        yield

    return Starlette(lifespan=lifespan)


async def handlers_while_serving(server: uvicorn.Server, started: asyncio.Event) -> dict[int, Any]:
    """The Python-level handler of each stop signal while `server` serves."""
    serving = asyncio.create_task(server.serve(sockets=[socket.create_server(("127.0.0.1", 0))]))
    try:
        await asyncio.wait_for(started.wait(), timeout=10)
        return {number: signal.getsignal(number) for number in STOP_SIGNALS}
    finally:
        server.should_exit = True
        await serving


async def test_the_services_signal_handlers_stay_while_the_server_serves() -> None:
    before = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    started = asyncio.Event()
    server = embedded_server(app_telling(started), "127.0.0.1", 0)

    during = await handlers_while_serving(server, started)

    assert during == before


async def test_uvicorns_own_server_still_takes_the_signals() -> None:
    """When this fails, uvicorn leaves the signals alone by itself: EmbeddedServer's override of
    capture_signals can go."""
    started = asyncio.Event()
    server = uvicorn.Server(uvicorn.Config(app_telling(started), log_config=None))

    during = await handlers_while_serving(server, started)

    assert during == dict.fromkeys(STOP_SIGNALS, server.handle_exit)
