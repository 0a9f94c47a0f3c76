"""The sink's ceiling: a direct SMTP client sending ready-made emails over several persistent
connections, with no Kafka and no worker in the way. The client is the worker's own SMTP edge
(services/worker/smtp.py), so the same bytes go the same way as the worker's."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from services.worker.mime import OutgoingEmail
from services.worker.smtp import SmtpConnection, SmtpServer


@dataclass(frozen=True)
class Blast:
    seconds: float  # from the first send to the last reply
    cpu_seconds: float  # this process's, for the emails after each connection's first
    emails_timed: int


async def blast(host: str, port: int, emails: list[OutgoingEmail], connections: int) -> Blast:
    """Send every email over `connections` connections. Each connection's first email opens it;
    the CPU time is counted from there, as the worker's from its first delivery."""
    server = SmtpServer(host=host, port=port, timeout_seconds=30)
    clients = [SmtpConnection(server) for _ in range(connections)]
    opening, rest = emails[:connections], iter(emails[connections:])

    async def send_over(client: SmtpConnection) -> None:
        for email in rest:
            await client.send(email, email.recipients)

    started = time.monotonic()
    try:
        # Fewer emails than connections leave the last connections unopened.
        first_sends = zip(clients, opening, strict=False)
        await asyncio.gather(
            *(client.send(email, email.recipients) for client, email in first_sends)
        )
        cpu = time.process_time()
        await asyncio.gather(*(send_over(client) for client in clients))
        cpu = time.process_time() - cpu
    finally:
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
    return Blast(time.monotonic() - started, cpu, max(len(emails) - connections, 0))
