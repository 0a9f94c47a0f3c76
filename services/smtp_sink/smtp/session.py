"""The sink's SMTP session: aiosmtpd's, with the fast paths of FastPathSMTP, and a limit on
failed AUTH attempts per connection; and the same with every reply late, a relay far away.

What the late one, DelayedReplySMTP, relies on in aiosmtpd 1.4.6 (pyproject.toml keeps it below
1.5): that its SMTP calls `connection_made` once per connection with the socket's transport
while its `transport` is still None, and again after STARTTLS with the TLS transport, which
writes through the one given first. tests/integration/smtp_sink/smtp/test_tls_auth.py fails when
that changes: its STARTTLS and implicit TLS tests also run with the replies late.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from services.smtp_sink.fast_paths.aiosmtpd_internals import FastPathSMTP
from services.smtp_sink.smtp.auth import AttemptLimit, Authenticator, peer_host
from services.smtp_sink.smtp.delayed_transport import DelayedTransport

# The name on the SMTP side's log lines, whichever of its modules writes them.
log = logging.getLogger("services.smtp_sink.smtp")


class SinkSMTP(FastPathSMTP):
    """The sink's SMTP session: aiosmtpd's with the fast paths of FastPathSMTP, and a limit on
    failed AUTH attempts: AUTH is refused and the connection closed after MAX_FAILED_ATTEMPTS
    failed tries on it.
    """

    def __init__(
        self, handler: Any, *, authenticator: Authenticator | None = None, **options: Any
    ) -> None:
        # aiosmtpd makes an SMTP object per connection: the count of failures is the connection's.
        self._auth_attempts = None if authenticator is None else AttemptLimit(authenticator)
        super().__init__(handler, authenticator=self._auth_attempts, **options)

    async def smtp_AUTH(self, arg: str) -> None:
        await super().smtp_AUTH(arg)
        if self._auth_attempts is not None and self._auth_attempts.exhausted:
            assert self.session is not None
            assert self.transport is not None
            log.warning(
                "closed the connection from %s after %d failed AUTH attempts",
                peer_host(self.session),
                self._auth_attempts.failures,
            )
            self.transport.close()  # as aiosmtpd closes a session over its command limits


class DelayedReplySMTP(SinkSMTP):
    """SinkSMTP as a client far away talks to it: every byte it sends, its replies and the
    greeting first, leaves `reply_delay_seconds` late, while it goes on reading and answering
    the next commands; and each close comes only after the last of them.

    Chosen at start, when SINK_REPLY_DELAY_MS is set: without it, SinkSMTP's path is untouched.
    """

    def __init__(self, handler: Any, *, reply_delay_seconds: float, **options: Any) -> None:
        super().__init__(handler, **options)
        self._reply_delay_seconds = reply_delay_seconds
        self._delayed: DelayedTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # aiosmtpd calls it again after STARTTLS with the TLS transport, whose records already
        # go out through the delayed one beneath.
        if self.transport is None:
            self._delayed = DelayedTransport(
                cast(asyncio.Transport, transport), self._reply_delay_seconds, self.loop
            )
            transport = self._delayed
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._delayed is not None:
            self._delayed.discard()  # the client is gone: nothing pending can reach it
        super().connection_lost(error)
