"""A uvicorn server run as one task inside a service's own event loop, beside its other work.

The service owns SIGTERM and SIGINT (shared.signals): uvicorn's own handlers would stop the
server at the signal, ahead of the service's clean stop (finish the email in flight, commit,
leave the group; end the console's open streams), and its probes would go unanswered meanwhile.

The one reliance on uvicorn's internals, here only: `uvicorn.Server.serve` installs its
handlers for SIGINT and SIGTERM inside `self.capture_signals()`, a context manager it does not
document, and raises the signal again once it has stopped; uvicorn has no public setting to
leave the signals alone. EmbeddedServer replaces that context manager with one that does
nothing. tests/unit/shared/test_http_server.py fails if the service's handlers are replaced
while the server serves, and once uvicorn's own server no longer takes the signals (then the
override can go).
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
    """uvicorn's server, without its signal handlers: the service's stay in place."""

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
