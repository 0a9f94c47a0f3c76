"""The sink's fast paths through aiosmtpd's private names (services/smtp_sink/fast_paths/
aiosmtpd_internals.py) give aiosmtpd's own answers, are the paths aiosmtpd takes, and rely only on
what aiosmtpd has.

A failure here after an upgrade of aiosmtpd: compare FastPathSMTP with the aiosmtpd code the
failure names, bring it in line, and only then pin the new source.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
from typing import Any

import aiosmtpd
import aiosmtpd.smtp
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from services.smtp_sink.fast_paths.aiosmtpd_internals import FastPathSMTP

PATHS = [
    "<a@b.c>",
    "<a@b.c> SIZE=100",
    "<a@b.c>  SIZE=100 BODY=8BITMIME",
    " <a@b.c>",
    "<A.B+tag@Example-Mail.COM>",
    "<o'brien@example.com>",
    "<a..b@example.com>",
    "<.a@example.com>",
    "<a@example..com>",
    "<a@-example.com>",
    "<a@[192.0.2.1]>",
    '<"two words"@example.com>',
    "<@relay.example:a@b.c>",
    "<>",
    "",
    "a@b.c",
    "<a@b.c",
    "<ü@example.com>",
    "<a@exämple.com>",
    "<a b@example.com>",
    "<" + "x" * 65 + "@example.com>",
    "<" + "x" * 64 + "@example.com>",
]

# aiosmtpd 1.4.6's source of what FastPathSMTP replaces (_getaddr, for plain paths) and repeats
# (smtp_DATA, but for its read loop): any change to either may change an answer.
PINNED_SOURCES = {
    "_getaddr": "0aeb21c56ac1260e784e430a340459c83c23640a85965e7b8de3e1ada74d85f5",
    "smtp_DATA": "3a33f30d3fd6d02f39c7d78a08288bffea9170525b62e2161568041ae7e018df",
}


def session(kind: type[SMTP], local_part_limit: int) -> SMTP:
    server = kind.__new__(kind)
    server.local_part_limit = local_part_limit
    return server


@pytest.mark.parametrize("local_part_limit", [0, 64])  # none (the sink's), RFC 5321's
@pytest.mark.parametrize("path", PATHS)
def test_a_path_reads_as_aiosmtpd_reads_it(path: str, local_part_limit: int) -> None:
    fast = session(FastPathSMTP, local_part_limit)._getaddr(path)

    assert fast == session(SMTP, local_part_limit)._getaddr(path)


@pytest.mark.parametrize(("name", "digest"), PINNED_SOURCES.items())
def test_the_aiosmtpd_code_the_fast_paths_stand_in_for_is_unchanged(name: str, digest: str) -> None:
    source = inspect.getsource(getattr(SMTP, name))

    assert hashlib.sha256(source.encode()).hexdigest() == digest, (
        f"aiosmtpd {aiosmtpd.__version__} changed SMTP.{name}: compare it with "
        f"FastPathSMTP.{name} in services/smtp_sink/fast_paths/aiosmtpd_internals.py"
    )


def test_the_private_methods_the_fast_paths_call_are_aiosmtpds() -> None:
    def parameters(method: Any) -> list[str]:
        return list(inspect.signature(method).parameters)

    assert parameters(SMTP._getaddr) == ["self", "arg"]
    assert parameters(SMTP._set_post_data_state) == ["self"]
    assert parameters(SMTP._call_handler_hook) == ["self", "command", "args"]
    assert inspect.iscoroutinefunction(SMTP._call_handler_hook)


class Wire(asyncio.Transport):
    """A connection in memory: the session writes its replies here."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.wrote = asyncio.Event()
        self.closed = asyncio.Event()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data
        self.wrote.set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("192.0.2.1", 2525) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closed.is_set()

    def close(self) -> None:
        self.closed.set()


class Capture:
    def __init__(self) -> None:
        self.contents: list[bytes | str] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.contents.append(envelope.content or b"")
        return "250 OK"


def connect(kind: type[SMTP], **options: Any) -> tuple[SMTP, Wire, Capture]:
    """A session of this kind on a connection in memory, and what it hands its handler."""
    capture = Capture()
    server = kind(capture, hostname="sink", loop=asyncio.get_running_loop(), **options)
    wire = Wire()
    server.connection_made(wire)
    return server, wire, capture


async def replies_written(wire: Wire, count: int) -> None:
    async with asyncio.timeout(5):
        while wire.written.count(b"\r\n") < count:
            wire.wrote.clear()
            await wire.wrote.wait()


async def converse(
    kind: type[SMTP], client: bytes, replies: int, **options: Any
) -> tuple[list[bytes], list[bytes | str]]:
    """The replies of a session of this kind to what the client says, the greeting first, and
    the content it handed its handler."""
    server, wire, capture = connect(kind, **options)
    server.data_received(client)
    try:
        await replies_written(wire, replies)
    finally:
        server.connection_lost(None)
        await asyncio.sleep(0)
    return bytes(wire.written).splitlines(keepends=True), capture.contents


ENVELOPE = b"HELO client\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
CONVERSATIONS = {
    "a plain message": (ENVELOPE + b"DATA\r\nSubject: hi\r\n\r\nhello\r\n.\r\n", 6),
    "stuffed dots": (ENVELOPE + b"DATA\r\n..one\r\n.\r\n", 6),
    "a line too long": (ENVELOPE + b"DATA\r\n" + b"x" * 2000 + b"\r\n.\r\n", 6),
    "too much data": (ENVELOPE + b"DATA\r\n" + (b"y" * 98 + b"\r\n") * 50 + b".\r\n", 6),
    "DATA before RCPT": (b"HELO client\r\nMAIL FROM:<a@example.com>\r\nDATA\r\n", 4),
    "DATA with an argument": (ENVELOPE + b"DATA now\r\n", 5),
    "the next commands in the same write": (ENVELOPE + b"DATA\r\nx\r\n.\r\nRSET\r\nNOOP\r\n", 8),
    "unusual paths": (b'HELO c\r\nMAIL FROM:<"a b"@example.com>\r\nRCPT TO:<a@[192.0.2.1]>\r\n', 4),
    "bad paths": (b"HELO c\r\nMAIL FROM:<a b@example.com>\r\nMAIL FROM:a@b.c\r\n", 4),
}


@pytest.mark.parametrize("decode_data", [False, True])
@pytest.mark.parametrize(("client", "replies"), CONVERSATIONS.values(), ids=CONVERSATIONS.keys())
async def test_a_conversation_is_answered_as_aiosmtpd_answers_it(
    client: bytes, replies: int, decode_data: bool
) -> None:
    options = {"data_size_limit": 4096, "decode_data": decode_data}

    fast = await converse(FastPathSMTP, client, replies, **options)

    assert fast == await converse(SMTP, client, replies, **options)


@pytest.fixture
def email_parser_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiosmtpd's path parser (the email package's), failing if it is called."""

    def refused(value: str) -> Any:
        raise AssertionError(f"the email package's parser was called for {value!r}")

    monkeypatch.setattr(aiosmtpd.smtp, "get_angle_addr", refused)
    monkeypatch.setattr(aiosmtpd.smtp, "get_addr_spec", refused)


@pytest.mark.usefixtures("email_parser_refused")
async def test_plain_mail_and_rcpt_paths_are_read_without_the_email_packages_parser() -> None:
    replies, _ = await converse(FastPathSMTP, ENVELOPE, 4)

    assert replies[1:] == [b"250 sink\r\n", b"250 OK\r\n", b"250 OK\r\n"]


async def test_a_data_section_is_read_in_bulk_not_a_line_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads = []
    readuntil = asyncio.StreamReader.readuntil

    async def counted(reader: asyncio.StreamReader, separator: bytes = b"\n") -> bytes:
        reads.append(separator)
        return await readuntil(reader, separator)

    monkeypatch.setattr(asyncio.StreamReader, "readuntil", counted)
    # Ten times aiosmtpd's line length limit, which its reader was made with.
    lines = b"".join(b"line %04d\r\n" % number for number in range(1000))

    replies, contents = await converse(FastPathSMTP, ENVELOPE + b"DATA\r\n" + lines + b".\r\n", 6)

    assert replies[-1] == b"250 OK\r\n"
    assert contents == [lines]
    assert reads.count(b".\r\n") == 1  # the whole section in one read


@pytest.mark.parametrize("kind", [SMTP, FastPathSMTP])
async def test_a_client_that_hangs_up_during_data_is_let_go(
    kind: type[SMTP], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server, wire, capture = connect(kind)
    server.data_received(ENVELOPE + b"DATA\r\nSubject: half\r\n")
    await replies_written(wire, 5)

    server.connection_lost(None)
    await asyncio.wait_for(wire.closed.wait(), 5)

    assert capture.contents == []
    logger = "mail.log" if kind is SMTP else "services.smtp_sink.smtp"
    assert (logger, "Connection lost during DATA") in [
        (record.name, record.getMessage()) for record in caplog.records
    ]
