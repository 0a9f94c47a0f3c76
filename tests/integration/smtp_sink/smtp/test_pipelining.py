"""PIPELINING (RFC 2920) on the real sink over a real socket: offered in EHLO, a group of
commands in one write answered in order, a refused recipient's reply in its place, DATA refused
when no recipient was accepted, and the stored email the same as without pipelining."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.smtp_sink.conftest import NOBODY, RawSmtp, RunningSink

MESSAGE = (
    b"From: Ann <a@example.com>\r\n"
    b"To: b@example.com\r\n"
    b"Subject: Pipelined\r\n"
    b"Message-ID: <pipelined@example.com>\r\n"
    b"\r\n"
    b"First line\r\n"
    b"Second line\r\n"
)
GROUP = ("MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "RCPT TO:<c@example.com>", "DATA")
STORED = "250 2.0.0 OK stored as "


async def stored_messages(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every stored message in full (source included), oldest first."""
    summaries = (await api.get("/api/v1/messages")).json()["messages"]
    return [(await api.get(f"/api/v1/messages/{m['ID']}")).json() for m in reversed(summaries)]


async def test_ehlo_offers_pipelining(sink: RunningSink) -> None:
    async with RawSmtp(sink) as smtp:
        smtp.write(b"EHLO client.example.com\r\n")
        lines = await smtp.reply_lines()

    assert "250-PIPELINING" in lines
    assert lines[0].startswith("250-smtp-sink")
    assert lines[-1] == "250 HELP", "the reply still ends as aiosmtpd ends it"


async def test_a_group_in_one_write_is_answered_in_order_and_the_message_stored(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    async with RawSmtp(sink) as smtp:
        await smtp.command("EHLO client.example.com")
        replies = await smtp.commands(*GROUP)
        final = await smtp.message(MESSAGE)

    assert [reply[:3] for reply in replies] == ["250", "250", "250", "354"]
    assert final.startswith(STORED)
    [stored] = await stored_messages(api)
    assert stored["Raw"] == MESSAGE.decode()
    assert [to["Address"] for to in stored["Bcc"]] == ["c@example.com"]


async def test_the_stored_email_is_the_same_as_without_pipelining(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    async with RawSmtp(sink) as smtp:
        await smtp.command("EHLO client.example.com")
        for line in GROUP:
            await smtp.command(line)
        one_at_a_time = await smtp.message(MESSAGE)
        await smtp.commands(*GROUP)
        pipelined = await smtp.message(MESSAGE)

    assert one_at_a_time.startswith(STORED)
    assert pipelined.startswith(STORED)
    first, second = await stored_messages(api)
    different = {"ID", "Created", "Date", "MessageIDCount", "Duplicate"}  # the arrival's own
    assert {k: v for k, v in first.items() if k not in different} == {
        k: v for k, v in second.items() if k not in different
    }


async def test_a_refused_recipient_gets_its_reply_in_its_place(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    async with RawSmtp(sink) as smtp:
        await smtp.command("EHLO client.example.com")
        replies = await smtp.commands(
            "MAIL FROM:<a@example.com>",
            "RCPT TO:<b@example.com>",
            f"RCPT TO:<{NOBODY}>",
            "RCPT TO:<c@example.com>",
            "DATA",
        )
        final = await smtp.message(MESSAGE)

    assert [reply[:3] for reply in replies] == ["250", "250", "550", "250", "354"]
    assert final.startswith(STORED)
    [stored] = await stored_messages(api)
    assert NOBODY not in str(stored["To"]) + str(stored["Bcc"])


async def test_data_is_refused_when_no_recipient_was_accepted_and_the_session_goes_on(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    async with RawSmtp(sink) as smtp:
        await smtp.command("EHLO client.example.com")
        refused = await smtp.commands(
            "MAIL FROM:<a@example.com>", f"RCPT TO:<{NOBODY}>", f"RCPT TO:<{NOBODY}>", "DATA"
        )
        # RFC 2920: after DATA's refusal the client sends no message; it resets and goes on.
        after = await smtp.commands("RSET", *GROUP)
        final = await smtp.message(MESSAGE)

    assert [reply[:3] for reply in refused] == ["250", "550", "550", "503"]
    assert refused[-1] == "503 Error: need RCPT command"  # aiosmtpd's; RFC 5321 allows 503 or 554
    assert [reply[:3] for reply in after] == ["250", "250", "250", "250", "354"]
    assert final.startswith(STORED)
    assert len(await stored_messages(api)) == 1


@pytest.mark.parametrize(
    ("after_the_message", "replies"),
    [
        pytest.param(("QUIT",), ["221"], id="quit"),
        pytest.param(GROUP, ["250", "250", "250", "354"], id="next_transaction"),
    ],
)
async def test_commands_in_the_write_that_ends_a_message_are_answered_after_it(
    sink: RunningSink,
    api: httpx.AsyncClient,
    after_the_message: tuple[str, ...],
    replies: list[str],
) -> None:
    async with RawSmtp(sink) as smtp:
        await smtp.command("EHLO client.example.com")
        await smtp.commands(*GROUP)
        smtp.write(MESSAGE + b".\r\n" + "".join(f"{c}\r\n" for c in after_the_message).encode())
        final = await smtp.reply()
        answers = [await smtp.reply() for _ in after_the_message]

    assert final.startswith(STORED)
    assert [answer[:3] for answer in answers] == replies
    [stored] = await stored_messages(api)
    assert stored["Raw"] == MESSAGE.decode()
