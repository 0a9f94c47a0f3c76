"""The sink's bulk DATA reading against aiosmtpd's own line-by-line loop, side by side.

Two real aiosmtpd servers on loopback, aiosmtpd's `SMTP` and the sink's `SinkSMTP`, take the
same conversations, the DATA sections written in awkward pieces: every reply and every
message they hand to the handler must be the same, byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from services.smtp_sink.smtp.session import SinkSMTP

SIZE_LIMIT = 4096  # small, so that the 552 path is cheap to reach
LONGEST_LINE = b"x" * (SMTP.line_length_limit - 2) + b"\r\n"  # 1001 bytes, CRLF included


@dataclass
class Capture:
    """Records what each server hands its handler."""

    contents: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.contents.append(envelope.original_content or b"")
        return "250 OK"


@dataclass
class Server:
    port: int
    capture: Capture


@contextlib.asynccontextmanager
async def side_by_side(size_limit: int | None) -> AsyncIterator[tuple[Server, Server]]:
    """aiosmtpd's SMTP and the sink's SinkSMTP, each on a free loopback port."""
    loop = asyncio.get_running_loop()
    started = []
    for protocol in (SMTP, SinkSMTP):
        capture = Capture()
        session = functools.partial(
            protocol, capture, data_size_limit=size_limit, enable_SMTPUTF8=True, loop=loop
        )
        server = await loop.create_server(session, "127.0.0.1", 0)
        started.append((server, Server(server.sockets[0].getsockname()[1], capture)))
    try:
        yield started[0][1], started[1][1]
    finally:
        for server, _ in started:
            server.close()
            await server.wait_closed()


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Server, Server]]:
    async with side_by_side(SIZE_LIMIT) as both_servers:
        yield both_servers


async def converse(port: int, pieces: Sequence[bytes], replies_after: int) -> list[str]:
    """MAIL, RCPT and DATA, then the pieces, each written on its own; returns every reply
    from DATA's 354 on, `replies_after` of them after the pieces."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()  # greeting
        for command in (b"HELO client", b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.com>"):
            writer.write(command + b"\r\n")
            assert (await reader.readline()).startswith(b"250")
        writer.write(b"DATA\r\n")
        replies = [(await reader.readline()).decode()]
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.001)  # so that the server reads the pieces apart
        for _ in range(replies_after):
            replies.append((await asyncio.wait_for(reader.readline(), 10)).decode())
        return replies
    finally:
        writer.close()
        await writer.wait_closed()


async def both(
    servers: tuple[Server, Server], pieces: Sequence[bytes], replies_after: int = 1
) -> tuple[tuple[list[str], list[bytes]], tuple[list[str], list[bytes]]]:
    answers = []
    for server in servers:
        before = len(server.capture.contents)
        replies = await converse(server.port, pieces, replies_after)
        answers.append((replies, server.capture.contents[before:]))
    return answers[0], answers[1]


SECTIONS = {
    "empty message": [b".\r\n"],
    "one line": [b"Subject: hi\r\n\r\nhello\r\n.\r\n"],
    "a line that is one dot, stuffed": [b"a\r\n..\r\nb\r\n.\r\n"],
    "lines ending in a dot": [b"Regards.\r\nA.\r\n.\r\n"],
    "leading dots": [b"..first\r\n...second\r\n.third, unstuffed by a careless client\r\n.\r\n"],
    "a dot line last but one": [b"x\r\n..\r\n.\r\n"],
    "bare CR and LF": [b"a\rb\nc\r\n\n.\r\n\r.\r\n.\r\n"],
    "8-bit": ["Grüße ✓\r\n".encode() + b"\xff\xfe\r\n.\r\n"],
    "the longest line allowed": [LONGEST_LINE + b".\r\n"],
    "a line one byte too long": [b"x" + LONGEST_LINE + b".\r\n"],
    "a line far too long": [b"y" * 5000 + b"\r\n.\r\n"],
    "exactly the size limit": [(b"z" * 62 + b"\r\n") * (SIZE_LIMIT // 64) + b".\r\n"],
    "one byte over the size limit": [b"!" + (b"z" * 62 + b"\r\n") * (SIZE_LIMIT // 64) + b".\r\n"],
    "far over the size limit": [(b"z" * 98 + b"\r\n") * 200 + b".\r\n"],
    "too long, then too much": [b"q" * 1500 + b"\r\n" + (b"z" * 98 + b"\r\n") * 60 + b".\r\n"],
    "too much, then too long": [(b"z" * 98 + b"\r\n") * 60 + b"q" * 1500 + b"\r\n.\r\n"],
    "the end split before its LF": [b"a\r\n.\r", b"\n"],
    "the end split after the CRLF before it": [b"a\r\n", b".\r\n"],
    "the end split after its dot": [b"a\r\n.", b"\r\n"],
    "a false end split": [b"a.", b"\r\nb\r", b"\n.", b"\r\n"],
    "a dot line split from its CR": [b"a\r", b"\n.\r\nNOOP\r\n"],
    "over the limit, its end in pieces": [b"z" * 3000, b"z" * 3000 + b"\r", b"\n", b".\r\n"],
    # a read that ends one byte after a CRLF, then a line of the longest text aiosmtpd reads
    # whole, which takes the section over the size limit: 552, not 500
    "over the limit on the longest whole line": [
        (b"z" * 98 + b"\r\n") * 35 + b"w" * 94 + b"\r\n" + b"x" * 1001 + b"\r\nA",
        b"\r\n.\r\n",
    ],
}


@pytest.mark.parametrize("pieces", SECTIONS.values(), ids=SECTIONS.keys())
async def test_sections_are_read_as_aiosmtpd_reads_them(
    servers: tuple[Server, Server], pieces: list[bytes]
) -> None:
    replies_after = 2 if pieces[-1].endswith(b"NOOP\r\n") else 1

    aiosmtpd_answer, sink_answer = await both(servers, pieces, replies_after)

    assert sink_answer == aiosmtpd_answer


async def test_the_next_command_in_the_same_write_is_answered(
    servers: tuple[Server, Server],
) -> None:
    pieces = [b"Subject: x\r\n\r\nbody\r\n.\r\nRSET\r\nNOOP\r\n"]

    aiosmtpd_answer, sink_answer = await both(servers, pieces, replies_after=3)

    assert sink_answer == aiosmtpd_answer
    assert sink_answer[0][1:] == ["250 OK\r\n", "250 OK\r\n", "250 OK\r\n"]


async def test_random_sections_in_random_pieces_are_read_as_aiosmtpd_reads_them(
    servers: tuple[Server, Server],
) -> None:
    draw = random.Random(20261126)
    line_kinds = [b"", b".", b"..", b"a.", b".a", b"text", b"\r", b"\n", b"x" * 1000, b"y" * 999]
    for _ in range(100):
        lines = [
            draw.choice(line_kinds) * draw.choice((1, 1, 1, 2)) for _ in range(draw.randint(0, 12))
        ]
        section = b"".join(line + b"\r\n" for line in lines if line != b".") + b".\r\n"
        cuts = sorted(draw.sample(range(1, len(section)), min(3, len(section) - 1)))
        pieces = [section[start:end] for start, end in pairwise([0, *cuts, len(section)])]

        aiosmtpd_answer, sink_answer = await both(servers, pieces)

        assert sink_answer == aiosmtpd_answer, lines


@pytest.mark.parametrize("size_limit", [None, 0, -5], ids=["None", "0", "negative"])
async def test_no_limit_and_a_negative_limit_are_read_as_aiosmtpd_reads_them(
    size_limit: int | None,
) -> None:
    sections = [[b".\r\n"], [b"a\r\n.\r\n"], [b"z" * 3000 + b"\r\n" + b"y" * 900 + b"\r\n.\r\n"]]
    async with side_by_side(size_limit) as servers:
        for pieces in sections:
            aiosmtpd_answer, sink_answer = await both(servers, pieces)

            assert sink_answer == aiosmtpd_answer
