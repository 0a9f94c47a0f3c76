"""A uvicorn server run as one task inside a service's own event loop, beside its other work.

The service owns SIGTERM and SIGINT: uvicorn's own handlers would end the process without the
service's clean stop (finish the email in flight, commit, leave the group).
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

GRACEFUL_SHUTDOWN_SECONDS = 5


class EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def embedded_server(app: ASGIApp, host: str, port: int) -> EmbeddedServer:
    """Run with `await server.serve()`; stop with `server.should_exit = True`."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        # A page left open on a stream must not hold up the stop for ever.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return EmbeddedServer(config)


def listen(service: str, host: str, port: int, what: str = "HTTP") -> socket.socket:
    """Bind before anything starts, so that a busy port is one clear line and exit status 1."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as error:
        sys.exit(f"{service}: cannot listen for {what} on {host}:{port}: {error}")
