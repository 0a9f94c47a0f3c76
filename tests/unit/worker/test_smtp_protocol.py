"""SessionProtocol, the open session's reader: commands in one write, every reply parsed into a
queue whichever way the bytes are cut, each reply read as aiosmtplib reads it, the replies that
came before a loss read before the loss, and nothing that was not asked for."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtplib import (
    SMTPReadTimeoutError,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
)
from aiosmtplib.protocol import SMTPProtocol

from services.worker.smtp_protocol import MAX_LINE_BYTES, SessionProtocol


class Transport:
    """What SessionProtocol writes to: keeps the writes; a close is reported to its protocol."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.protocol: asyncio.BaseProtocol | None = None

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing and self.protocol is not None:
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)
        self.closing = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


class Replaced(asyncio.Protocol):
    """aiosmtplib's protocol, told when the connection is lost."""

    def __init__(self) -> None:
        self.lost: list[Exception | None] = []

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


def session(pipelining: bool = True) -> tuple[SessionProtocol, Transport, Replaced]:
    transport, replaced = Transport(), Replaced()
    protocol = SessionProtocol(transport, replaced, pipelining=pipelining, smtputf8=False)  # type: ignore[arg-type]
    transport.protocol = protocol
    return protocol, transport, replaced


async def test_commands_go_in_one_write_each_owing_a_reply() -> None:
    protocol, transport, _ = session()

    protocol.send(b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.com>", b"DATA")
    protocol.data_received(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go ahead\r\n")

    assert transport.writes == [b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"]
    assert [await protocol.reply(1) for _ in range(3)] == [
        SMTPResponse(250, "2.1.0 Ok"),
        SMTPResponse(250, "2.1.5 Ok"),
        SMTPResponse(354, "Go ahead"),
    ]


async def test_a_reply_cut_in_pieces_is_read_once_whole() -> None:
    protocol, _, _ = session()
    protocol.send(b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.com>")
    reading = asyncio.create_task(protocol.reply(1))

    for piece in (b"25", b"0-2.1.0 first\r", b"\n250 2.1.0 sec"):
        protocol.data_received(piece)
        await asyncio.sleep(0)
        assert not reading.done()
    protocol.data_received(b"ond\r\n25")
    first = await reading
    protocol.data_received(b"0 2.1.5 Ok\r\n")

    assert first == SMTPResponse(250, "2.1.0 first\n2.1.0 second")
    assert await protocol.reply(1) == SMTPResponse(250, "2.1.5 Ok")


async def read_by_aiosmtplib(data: bytes) -> SMTPResponse | SMTPResponseException:
    reader = SMTPProtocol()
    reader.connection_made(Transport())  # type: ignore[arg-type]
    reader.data_received(data)
    try:
        return await reader.read_response(timeout=1)
    except SMTPResponseException as error:
        return error


async def read_by_session(data: bytes) -> SMTPResponse | SMTPResponseException:
    protocol, _, _ = session()
    protocol.send(b"NOOP")
    protocol.data_received(data)
    try:
        return await protocol.reply(1)
    except SMTPResponseException as error:
        return error


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"250 2.1.0 Ok\r\n", id="one_line"),
        pytest.param(b"250-first\r\n250-second\r\n250 third\r\n", id="multi_line"),
        pytest.param(b"250-\r\n250 after an empty line\r\n", id="an_empty_first_line"),
        pytest.param(b"250-a\n250 b\n", id="bare_lf"),
        pytest.param(b"250-first\r\n251 the last line's code\r\n", id="codes_that_differ"),
        pytest.param(b"250\r\n", id="a_code_alone"),
        pytest.param(b"250 \t spaced out \t \r\n", id="blanks_around"),
        pytest.param(b"250 caf\xc3\xa9\r\n", id="utf8"),
        pytest.param(b"250 queued \xff\xfe as 4F2A\r\n", id="not_utf8"),
        pytest.param(b"hello there\r\n", id="malformed"),
        pytest.param(b"250 " + b"x" * MAX_LINE_BYTES + b"\r\n", id="a_line_too_long"),
    ],
)
async def test_a_reply_reads_as_aiosmtplib_reads_it(data: bytes) -> None:
    ours, theirs = await read_by_session(data), await read_by_aiosmtplib(data)

    if isinstance(theirs, SMTPResponseException):
        assert isinstance(ours, SMTPResponseException)
        assert (ours.code, ours.message) == (theirs.code, theirs.message)
    else:
        assert ours == theirs


async def test_an_unreadable_reply_closes_the_connection_after_the_replies_before_it() -> None:
    protocol, transport, _ = session()
    protocol.send(b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.com>")

    protocol.data_received(b"250 Ok\r\nwhat?\r\n")

    assert await protocol.reply(1) == SMTPResponse(250, "Ok")
    with pytest.raises(SMTPResponseException, match="Malformed SMTP response line"):
        await protocol.reply(1)
    assert transport.closing
    assert not protocol.is_open


async def test_a_reply_that_never_ends_is_refused_past_aiosmtplibs_bound() -> None:
    protocol, transport, _ = session()
    protocol.send(b"EHLO client.example.com")

    for _ in range(5):
        protocol.data_received(b"250-" + b"x" * 8000 + b"\r\n")

    with pytest.raises(SMTPResponseException, match="Response too long"):
        await protocol.reply(1)
    assert transport.closing


async def test_what_nobody_asked_for_is_dropped() -> None:
    protocol, _, _ = session()
    protocol.data_received(b"421 4.4.2 idle too long\r\n")  # between transactions

    protocol.send(b"MAIL FROM:<a@example.com>")
    protocol.data_received(b"250 Ok\r\n250 one too many\r\n")
    protocol.send(b"RCPT TO:<b@example.com>")
    protocol.data_received(b"250 2.1.5 Ok\r\n")

    assert await protocol.reply(1) == SMTPResponse(250, "Ok")
    assert await protocol.reply(1) == SMTPResponse(250, "2.1.5 Ok")


async def test_the_replies_before_a_loss_are_read_before_it() -> None:
    protocol, _, replaced = session()
    protocol.send(b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.com>", b"DATA")
    reset = ConnectionResetError(104, "Connection reset by peer")

    protocol.data_received(b"250 Ok\r\n421 4.7.0 slow down\r\n")
    protocol.connection_lost(reset)

    assert await protocol.reply(1) == SMTPResponse(250, "Ok")
    assert await protocol.reply(1) == SMTPResponse(421, "4.7.0 slow down")
    with pytest.raises(SMTPServerDisconnected) as lost:
        await protocol.reply(1)
    assert lost.value.__cause__ is reset
    assert replaced.lost == [reset], "aiosmtplib's protocol is told, and closes its SMTP"
    assert not protocol.is_open


async def test_a_loss_wakes_the_reader_waiting() -> None:
    protocol, _, _ = session()
    protocol.send(b"MAIL FROM:<a@example.com>")
    reading = asyncio.create_task(protocol.reply(5))
    await asyncio.sleep(0)

    assert protocol.eof_received() is False, "the transport closes"
    protocol.connection_lost(None)

    with pytest.raises(SMTPServerDisconnected, match="Unexpected EOF"):
        await reading


async def test_no_reply_in_time_is_a_read_timeout() -> None:
    protocol, _, _ = session()
    protocol.send(b"DATA")

    with pytest.raises(SMTPReadTimeoutError):
        await protocol.reply(0.01)


async def test_a_timed_out_session_is_closed_so_a_late_reply_is_never_the_next_commands() -> None:
    protocol, transport, _ = session()
    protocol.send(b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.com>")
    protocol.data_received(b"250 2.1.0 Ok\r\n")
    assert await protocol.reply(1) == SMTPResponse(250, "2.1.0 Ok")

    with pytest.raises(SMTPReadTimeoutError):
        await protocol.reply(0.01)
    protocol.data_received(b"550 5.1.1 too late\r\n")  # the RCPT's reply, late

    assert not protocol.is_open
    assert transport.closing
    with pytest.raises(SMTPReadTimeoutError):
        protocol.send(b"MAIL FROM:<c@example.com>")


async def test_a_session_is_open_for_the_next_command_only_once_every_reply_is_read() -> None:
    protocol, _, _ = session()
    protocol.send(b"NOOP")
    assert not protocol.is_open  # owed

    protocol.data_received(b"250 2.0.0 Ok\r\n")
    assert not protocol.is_open  # come, not read

    await protocol.reply(1)
    assert protocol.is_open


async def test_nothing_is_written_once_the_connection_is_lost() -> None:
    protocol, transport, _ = session()
    protocol.connection_lost(None)

    with pytest.raises(SMTPServerDisconnected):
        protocol.send(b"MAIL FROM:<a@example.com>")
    assert transport.writes == []


async def test_a_command_with_a_line_break_is_refused_and_nothing_written() -> None:
    protocol, transport, _ = session()

    with pytest.raises(ValueError, match="prohibited control character"):
        protocol.send(b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.com>\r\nDATA")
    assert transport.writes == []


async def test_waiting_for_a_reply_nothing_owes_is_a_bug_not_a_hang() -> None:
    protocol, _, _ = session()

    with pytest.raises(RuntimeError, match="no reply is owed"):
        await protocol.reply(60)


async def test_quit_reads_its_reply_then_closes() -> None:
    protocol, transport, replaced = session()
    quitting = asyncio.create_task(protocol.quit(1))
    await asyncio.sleep(0)

    protocol.data_received(b"221 2.0.0 Bye\r\n")
    await quitting
    await asyncio.sleep(0)

    assert transport.writes == [b"QUIT\r\n"]
    assert transport.closing
    assert replaced.lost == [None]
