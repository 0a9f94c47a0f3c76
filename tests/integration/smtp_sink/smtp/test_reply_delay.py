"""SINK_REPLY_DELAY_MS on the real sink over a real socket: every reply leaves one delay late,
the greeting too; a pipelined group's replies all come about one delay later, where the same
steps one at a time take a delay each; and a close comes only after the last reply.

Timings are held only to bounds far apart on a busy machine: a lower bound a little under the
delays the sink must wait (its event loop's clock may run a timer a millisecond early), and an
upper bound for one delay well below two.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.smtp_sink.conftest import (
    NOBODY,
    RawSmtp,
    RunningSink,
    email,
    running_sink,
    send,
)

DELAY_MS = 100
DELAY = DELAY_MS / 1000
EARLY = 0.01  # how much sooner than its delay a reply may come: the loop's clock resolution
ONE_DELAY_AT_MOST = 3.5 * DELAY  # one delay and room for a busy machine, short of four delays
GROUP = ("MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "RCPT TO:<c@example.com>", "DATA")
MESSAGE = b"Subject: Far away\r\n\r\nHello from afar\r\n"
STORED = "250 2.0.0 OK stored as "


@pytest.fixture(scope="module")
def far_away_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSink]:
    with running_sink(
        tmp_path_factory.mktemp("far-away"),
        SINK_REPLY_DELAY_MS=str(DELAY_MS),
        SINK_FAIL_5XX_RECIPIENTS=NOBODY,
    ) as sink:
        yield sink


@contextlib.contextmanager
def stopwatch() -> Iterator[list[float]]:
    """The seconds the block took, in the list once it ends."""
    elapsed: list[float] = []
    started = time.monotonic()
    yield elapsed
    elapsed.append(time.monotonic() - started)


async def test_the_greeting_comes_one_delay_after_the_connection(
    far_away_sink: RunningSink,
) -> None:
    # From before the connection: the sink's delay starts at its accept, which may come first.
    connecting = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", far_away_sink.smtp_port)
    greeting = await asyncio.wait_for(reader.readline(), timeout=10)
    waited = time.monotonic() - connecting
    writer.close()
    await writer.wait_closed()

    assert greeting.startswith(b"220 smtp-sink ")
    assert waited >= DELAY - EARLY


async def test_a_pipelined_groups_replies_all_come_about_one_delay_later_in_order(
    far_away_sink: RunningSink,
) -> None:
    async with RawSmtp(far_away_sink) as smtp:
        await smtp.command("EHLO client.example.com")
        smtp.write("".join(f"{line}\r\n" for line in GROUP).encode())
        sent = time.monotonic()
        replies, came_after = [], []
        for _ in GROUP:
            replies.append(await smtp.reply())
            came_after.append(time.monotonic() - sent)
        final = await smtp.message(MESSAGE)

    assert [reply[:3] for reply in replies] == ["250", "250", "250", "354"]
    assert came_after[0] >= DELAY - EARLY, "not one reply before its delay"
    assert came_after[-1] < ONE_DELAY_AT_MOST, f"four delays, not one: {came_after}"
    assert final.startswith(STORED)


async def test_the_same_steps_one_at_a_time_take_a_delay_each(
    far_away_sink: RunningSink,
) -> None:
    async with RawSmtp(far_away_sink) as smtp:
        await smtp.command("EHLO client.example.com")
        with stopwatch() as elapsed:
            replies = [await smtp.command(line) for line in GROUP[:-2]]
            replies.append(await smtp.command("DATA"))
            replies.append(await smtp.message(MESSAGE))

    assert [reply[:3] for reply in replies] == ["250", "250", "354", "250"]
    assert elapsed[0] >= 4 * (DELAY - EARLY)


async def test_a_refused_recipients_reply_keeps_its_place(far_away_sink: RunningSink) -> None:
    async with RawSmtp(far_away_sink) as smtp:
        await smtp.command("EHLO client.example.com")
        replies = await smtp.commands(
            "MAIL FROM:<a@example.com>", f"RCPT TO:<{NOBODY}>", "RCPT TO:<b@example.com>", "DATA"
        )
        final = await smtp.message(MESSAGE)

    assert [reply[:3] for reply in replies] == ["250", "550", "250", "354"]
    assert final.startswith(STORED)


async def test_quits_221_comes_before_the_connection_closes(far_away_sink: RunningSink) -> None:
    async with RawSmtp(far_away_sink) as smtp:
        with stopwatch() as elapsed:
            reply = await smtp.command("QUIT")
        closed = await smtp.closed_by_the_sink()

    assert reply == "221 Bye"
    assert elapsed[0] >= DELAY - EARLY
    assert closed


async def test_a_hang_up_after_421_comes_after_the_replies_before_it(
    far_away_sink: RunningSink,
) -> None:
    """ratelimited@ takes 5 in any second, then 421 and the sink hangs up (docs/sink.md)."""
    domain = "@simulator.example.com"
    async with RawSmtp(far_away_sink) as smtp:
        await smtp.command("EHLO client.example.com")
        replies = await smtp.commands(
            "MAIL FROM:<ann@example.com>",
            *(f"RCPT TO:<ratelimited+{uuid.uuid4().hex}{domain}>" for _ in range(6)),
        )
        closed = await smtp.closed_by_the_sink()

    assert [reply[:3] for reply in replies] == ["250"] * 6 + ["421"]
    assert closed


async def test_a_client_delivers_as_to_any_sink(far_away_sink: RunningSink) -> None:
    with stopwatch() as elapsed:
        reply = await send(far_away_sink, email(subject="Across the ocean"))
    async with httpx.AsyncClient(base_url=far_away_sink.api) as api:
        subjects = [m["Subject"] for m in (await api.get("/api/v1/messages")).json()["messages"]]

    assert reply.startswith("2.0.0 OK stored as ")
    assert "Across the ocean" in subjects
    # The greeting, EHLO, MAIL, RCPT, DATA, the message and QUIT: a delay each.
    assert elapsed[0] >= 7 * (DELAY - EARLY)


async def test_a_client_that_hangs_up_with_replies_pending_leaves_no_traceback(
    far_away_sink: RunningSink,
) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", far_away_sink.smtp_port)
    writer.write(b"EHLO c\r\n" + "".join(f"{line}\r\n" for line in GROUP).encode())
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(2 * DELAY)

    async with RawSmtp(far_away_sink) as smtp:
        assert (await smtp.command("NOOP")) == "250 OK"
    assert "Traceback" not in far_away_sink.output()


async def test_the_sink_says_at_start_that_its_replies_are_late(
    far_away_sink: RunningSink,
) -> None:
    assert f"every reply {DELAY_MS} ms late" in far_away_sink.output()
