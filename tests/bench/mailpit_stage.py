"""Our sink against Mailpit, the SMTP sink most teams test with: the same ready-made emails,
the same direct SMTP client over the same persistent connections, in the same run. Each
stores every message durably (ours in SQLite with a commit per batch, Mailpit in SQLite),
and each rate is timed by the server's own clock, first stored to last, read through the same
Mailpit API v1 that both serve."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import httpx

from deploy.local.mailpit import fetch_mailpit
from deploy.local.settings import LocalSettings
from services.worker.mime import OutgoingEmail, render_email
from shared.settings import Settings
from tests.bench.smtp_blast import blast
from tests.bench.stages import Bench, email_record
from tests.mailpit import running_mailpit

PAGE = 1000


async def until_holds(api_url: str, count: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=10) as client:
        while time.monotonic() < deadline:
            response = await client.get(f"{api_url}/api/v1/messages", params={"limit": 1})
            if response.status_code == 200 and response.json()["total"] >= count:
                return
            await asyncio.sleep(0.25)
    raise RuntimeError(f"{api_url} did not hold {count} messages within {seconds} s")


async def first_to_last_created(api_url: str) -> float:
    """Seconds from the first message stored to the last, by the server's `Created` times."""
    created: list[float] = []
    async with httpx.AsyncClient(timeout=60) as client:
        start = 0
        while True:
            page = (
                await client.get(
                    f"{api_url}/api/v1/messages", params={"start": start, "limit": PAGE}
                )
            ).json()
            created += [datetime.fromisoformat(m["Created"]).timestamp() for m in page["messages"]]
            start += len(page["messages"])
            if not page["messages"] or start >= page["total"]:
                break
    return max(max(created) - min(created), 1e-3)


async def ingest_rate(
    api_url: str, smtp_port: int, emails: list[OutgoingEmail], connections: int
) -> float:
    await blast("127.0.0.1", smtp_port, emails, connections)
    await until_holds(api_url, len(emails), seconds=len(emails) / 100 + 60)
    return (len(emails) - 1) / await first_to_last_created(api_url)


async def ours(bench: Bench, emails: list[OutgoingEmail], connections: int) -> float:
    stack = bench.stack(f"versus-sink-{connections}")
    sink = stack.stack.sink()
    await stack.start(sink)
    try:
        return await ingest_rate(stack.sink_url, stack.settings.sink_smtp_port, emails, connections)
    finally:
        bench.note_peak_rss(stack, [sink])
        await stack.stop(sink)


async def mailpit(bench: Bench, emails: list[OutgoingEmail], connections: int) -> float:
    binary = fetch_mailpit(LocalSettings().mailpit_cache_dir).binary
    directory = bench.run_dir / f"versus-mailpit-{connections}"
    # --max 0 keeps every message (its default keeps the newest 500).
    with running_mailpit(binary, directory, "--max", "0", "--quiet") as server:
        return await ingest_rate(server.api, server.smtp_port, emails, connections)


async def sink_against_mailpit(bench: Bench) -> dict[str, Any]:
    records = [email_record(n, bench.run_id) for n in range(bench.sizes.emails)]
    domain = Settings().message_id_domain
    emails = [render_email(record, domain) for record in records]
    by_connections: dict[int, dict[str, float]] = {}
    for connections in bench.sizes.versus_connections:
        by_connections[connections] = {
            "sink": await ours(bench, emails, connections),
            "mailpit": await mailpit(bench, emails, connections),
        }
    sink_best = max(rates["sink"] for rates in by_connections.values())
    mailpit_best = max(rates["mailpit"] for rates in by_connections.values())
    return {
        "sink_emails_per_second": sink_best,
        "mailpit_emails_per_second": mailpit_best,
        "sink/mailpit": sink_best / mailpit_best,
        "by_connections": by_connections,
    }
