"""The worker's SMTP connections, shared by every lane of both consumers: at most
SMTP_MAX_CONNECTIONS open, the idle ones reused last-in first-out, as Postfix's connection
cache reuses them, so a relay that counts connections sees no more than it allows."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from services.worker.mime import OutgoingEmail
from services.worker.send_limiter import SendLimiter
from services.worker.smtp import SmtpConnection, SmtpServer, Transaction


class SmtpPool:
    def __init__(
        self, server: SmtpServer, limiter: SendLimiter, max_connections: int | None
    ) -> None:
        self._server = server
        self._limiter = limiter
        # Counts the connections in a transaction; with the idle ones, never more are open.
        self._slots = asyncio.Semaphore(max_connections) if max_connections else None
        self._idle: list[SmtpConnection] = []
        self._in_use = 0

    @property
    def open_connections(self) -> int:
        """In a transaction or idle; an idle one the relay closed meanwhile is counted until
        its next use finds out."""
        return self._in_use + sum(connection.is_open for connection in self._idle)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[SmtpConnection]:
        if self._slots is not None:
            await self._slots.acquire()
        connection = self._idle.pop() if self._idle else SmtpConnection(self._server, self._limiter)
        self._in_use += 1
        try:
            yield connection
        finally:
            self._in_use -= 1
            self._idle.append(connection)
            if self._slots is not None:
                self._slots.release()

    def lane(self) -> PooledMailer:
        return PooledMailer(self)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(connection.close() for connection in idle))


class PooledMailer:
    """A lane's way to the relay: each email borrows a connection from the pool for its
    transaction (processor.Mailer)."""

    def __init__(self, pool: SmtpPool) -> None:
        self._pool = pool
        self._borrowed: SmtpConnection | None = None

    @property
    def awaiting_final_reply(self) -> bool:
        """Whether this lane's email has its final "." sent and its reply not yet read: a stop
        then waits for the reply rather than cut the connection."""
        return self._borrowed is not None and self._borrowed.awaiting_final_reply

    async def send(self, email: OutgoingEmail, recipients: list[str]) -> Transaction:
        async with self._pool.connection() as connection:
            self._borrowed = connection
            try:
                return await connection.send(email, recipients)
            finally:
                self._borrowed = None

    async def close(self) -> None:
        """The connection goes back to the pool, which closes it at the end."""
