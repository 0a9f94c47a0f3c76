"""Greylisting on the real sink: a recipient at a greylisted domain is refused at RCPT with
451 4.7.1 until the delay after its pair's first try has passed, then accepted at once; the
other recipients of the same email are accepted as usual, and each refusal is counted."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator

import aiosmtplib
import httpx
import pytest

from tests.integration.smtp_sink.conftest import RunningSink, email, running_sink

DELAY_SECONDS = 2.0
SENDER, ORDINARY, GREY = "ann@example.com", "ok@example.com", "a@grey.example"
GREYLISTED = re.compile(r"4\.7\.1 Greylisted: try again in (\d+) seconds")


@pytest.fixture
def greylisting_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSink]:
    with running_sink(
        tmp_path_factory.mktemp("grey"),
        SINK_GREYLIST_DOMAINS="Grey.Example,other.example",
        SINK_GREYLIST_SECONDS=str(DELAY_SECONDS),
    ) as sink:
        yield sink


async def rejected_so_far(sink: RunningSink) -> int:
    async with httpx.AsyncClient(base_url=sink.api) as api:
        rejected: int = (await api.get("/api/v1/info")).json()["RuntimeStats"]["SMTPRejected"]
        return rejected


async def rcpt_replies(sink: RunningSink, *recipients: str) -> list[tuple[int, str]]:
    """MAIL FROM the sender, then RCPT TO each recipient: the replies; the transaction is reset."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.smtp_port) as client:
        await client.mail(SENDER)
        replies = []
        for recipient in recipients:
            reply = await client.execute_command(b"RCPT", f"TO:<{recipient}>".encode())
            replies.append((reply.code, reply.message))
        await client.rset()
    return replies


async def test_a_greylisted_recipient_is_451_until_the_delay_then_250(
    greylisting_sink: RunningSink,
) -> None:
    rejected_before = await rejected_so_far(greylisting_sink)
    first_try = time.monotonic()

    first = await rcpt_replies(greylisting_sink, ORDINARY, GREY)
    retry = await rcpt_replies(greylisting_sink, GREY)
    await asyncio.sleep(max(0.0, first_try + DELAY_SECONDS + 0.2 - time.monotonic()))
    after_the_delay = await rcpt_replies(greylisting_sink, GREY)
    later_email = await rcpt_replies(greylisting_sink, GREY)

    assert first[0] == (250, "2.1.5 OK")
    assert first[1] == (451, "4.7.1 Greylisted: try again in 2 seconds")
    assert retry[0][0] == 451
    assert (match := GREYLISTED.fullmatch(retry[0][1])) is not None
    assert 1 <= int(match[1]) <= 2
    assert after_the_delay == [(250, "2.1.5 OK")]
    assert later_email == [(250, "2.1.5 OK")], "accepted at once for every later email"
    assert await rejected_so_far(greylisting_sink) - rejected_before == 2
    output = greylisting_sink.output()
    assert output.count("greylisted 'ann@example.com' -> 'a@grey.example': its first try") == 1
    assert " INFO    services.smtp_sink.greylist: greylisted 'ann@example.com'" in output


async def test_an_email_to_greylisted_and_ordinary_recipients_is_stored_for_the_ordinary(
    greylisting_sink: RunningSink,
) -> None:
    refused, reply = await aiosmtplib.send(
        email(to=f"{ORDINARY}, {GREY}"),
        hostname="127.0.0.1",
        port=greylisting_sink.smtp_port,
        sender=SENDER,
        recipients=[ORDINARY, GREY],
    )

    async with httpx.AsyncClient(base_url=greylisting_sink.api) as api:
        stored = (await api.get("/api/v1/messages")).json()["total"]
    assert reply.startswith("2.0.0 OK stored as ")
    assert stored == 1
    assert {recipient: error.code for recipient, error in refused.items()} == {GREY: 451}
    assert (
        f"--- refused RCPT from {SENDER} to {GREY}: 451 4.7.1 Greylisted: try again in 2 seconds"
    ) in greylisting_sink.output()


async def test_the_sink_says_at_start_what_it_greylists(greylisting_sink: RunningSink) -> None:
    assert (
        "greylisting recipients at grey.example, other.example: a new sender and recipient "
        "pair is refused with 451 4.7.1 for 2 s"
    ) in greylisting_sink.output()
