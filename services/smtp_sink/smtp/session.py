"""The sink's SMTP session: aiosmtpd's, with the fast paths of FastPathSMTP, and a limit on
failed AUTH attempts per connection.
"""

from __future__ import annotations

import logging
from typing import Any

from services.smtp_sink.fast_paths.aiosmtpd_internals import FastPathSMTP
from services.smtp_sink.smtp.auth import AttemptLimit, Authenticator, peer_host

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
