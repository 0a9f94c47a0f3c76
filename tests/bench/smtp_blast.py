"""The sink's ceiling: a direct SMTP client sending ready-made emails over several persistent
connections, with no Kafka and no worker in the way. The client is the worker's own SMTP edge
(services/worker/smtp.py), so the same bytes go the same way as the worker's."""

from __future__ import annotations

import asyncio
import time

from services.worker.mime import OutgoingEmail
from services.worker.smtp import SmtpConnection, SmtpServer


async def blast(host: str, port: int, emails: list[OutgoingEmail], connections: int) -> float:
    """Send every email over `connections` connections; returns the seconds from the first send
    to the last reply."""
    pending = iter(emails)
    server = SmtpServer(host=host, port=port, timeout_seconds=30)
    clients = [SmtpConnection(server) for _ in range(connections)]

    async def send_over(client: SmtpConnection) -> None:
        for email in pending:
            await client.send(email, email.recipients)

    started = time.monotonic()
    try:
        await asyncio.gather(*(send_over(client) for client in clients))
    finally:
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
    return time.monotonic() - started
