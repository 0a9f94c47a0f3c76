"""The sink's ceiling: a direct SMTP client sending ready-made emails over several persistent
connections, with no Kafka and no worker in the way."""

from __future__ import annotations

import asyncio
import time

from aiosmtplib import SMTP


async def blast(
    host: str, port: int, emails: list[tuple[str, list[str], bytes]], connections: int
) -> float:
    """Send every (sender, recipients, message) over `connections` connections; returns the
    seconds from the first send to the last 250."""
    pending = iter(emails)
    clients = [SMTP(hostname=host, port=port, timeout=30) for _ in range(connections)]
    await asyncio.gather(*(client.connect() for client in clients))

    async def send_over(client: SMTP) -> None:
        for sender, recipients, message in pending:
            await client.sendmail(sender, recipients, message)

    started = time.monotonic()
    try:
        await asyncio.gather(*(send_over(client) for client in clients))
    finally:
        await asyncio.gather(*(client.quit() for client in clients), return_exceptions=True)
    return time.monotonic() - started
