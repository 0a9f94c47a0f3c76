"""Mailpit's GET /api/v1/info on the real sink: the mailbox's counts, its database, and what the
sink has done since it started, counted as the mail comes and goes."""

from __future__ import annotations

from email.policy import SMTP
from typing import Any

import aiosmtplib
import httpx
import pytest

from tests.integration.smtp_sink.conftest import LATER, RunningSink, email, send


async def info(api: httpx.AsyncClient) -> dict[str, Any]:
    response = await api.get("/api/v1/info")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_info_follows_the_mailbox_and_counts_since_the_start(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    before = (await info(api))["RuntimeStats"]
    sizes = []
    for subject in ("One", "Two", "Three"):
        message = email(subject=subject)
        sizes.append(len(message.as_bytes(policy=SMTP)))
        await send(sink, message)
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await send(sink, email(to=LATER))
    await api.get("/api/v1/message/latest")
    oldest = (await api.get("/api/v1/messages")).json()["messages"][-1]["ID"]
    await api.request("DELETE", "/api/v1/messages", json={"IDs": [oldest]})

    after = await info(api)

    assert (after["Messages"], after["Unread"], after["Tags"]) == (2, 1, {})
    runtime = after["RuntimeStats"]
    assert runtime["SMTPAccepted"] - before["SMTPAccepted"] == 3
    assert runtime["SMTPAcceptedSize"] - before["SMTPAcceptedSize"] == sum(sizes)
    assert runtime["SMTPRejected"] - before["SMTPRejected"] == 1  # the listed recipient
    assert runtime["MessagesDeleted"] - before["MessagesDeleted"] == 1
    assert runtime["Uptime"] >= before["Uptime"]
    assert runtime["SMTPIgnored"] == 0, "the sink keeps duplicates; it flags them"


async def test_info_names_the_sinks_database_and_version(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    await send(sink, email())

    answer = await info(api)

    database = sink.run_dir / "sink" / "messages.sqlite3"
    assert answer["Database"] == str(database)
    assert answer["DatabaseSize"] >= database.stat().st_size > 0
    assert answer["Version"].startswith("kafka-email-pipeline ")
    assert answer["LatestVersion"] == "disabled", "the sink never looks for releases"
