"""The one module that relies on aiosmtplib's internals: once aiosmtplib has opened a session
(connect, EHLO, STARTTLS, AUTH), its transport is read by SessionProtocol, which parses every
reply into a queue, so that the replies to a pipelined group (RFC 2920) all arrive, in order.

Why not aiosmtplib's own protocol: its `SMTPProtocol` pairs one parsed reply with one waiter. Its
`data_received` parses only the first complete reply in its buffer, drops the data that arrives
while a parsed reply waits to be picked up, and leaves the other replies unparsed until more data
comes: read after one write of MAIL, RCPT and DATA, the second reply can be lost, or waited for
forever. A subclass would need its private buffer and waiter. So aiosmtplib keeps the hard
parts (connecting, TLS, EHLO, AUTH), and then hands the connection over: every transaction,
pipelined or not, and QUIT are written and read here, by one reader of the connection.

What it relies on (aiosmtplib 5.x; pyproject.toml keeps it below 6):
- `SMTP.transport`, the open connection's transport (the TLS one after STARTTLS), moved to
  SessionProtocol with asyncio's public `set_protocol`, which asyncio's and uvloop's transports,
  plain and TLS, all have;
- `SMTP.protocol`, its `SMTPProtocol`, whose `connection_lost` SessionProtocol calls in turn:
  aiosmtplib then closes the `SMTP` object, as it would have without the move;
- that the opened session has no reply pending: aiosmtplib has read the reply to its last
  command (EHLO or AUTH) when it returns.
The replies are parsed as aiosmtplib parses them (the code of the last line, the lines' text
joined with "\n", decoded as UTF-8 with surrogate escapes, the same limits on sizes), so a reply
reads the same either way. tests/integration/worker/test_smtp_protocol.py fails when aiosmtplib
changes what this relies on, over plain TCP, STARTTLS and TLS, on asyncio's loop and uvloop.

What it gains: a transaction takes two round trips, not four, when the server offers PIPELINING
(MAIL, every RCPT and DATA in one write, then the message): one email over an open connection to
the sink 20 ms away (SINK_REPLY_DELAY_MS=20) went from 83 ms to 42 ms, so a lane delivers twice
as many emails to a remote relay. Fewer writes and wake-ups cost less CPU too: blasting 3,000
emails over 32 connections to the local sink on uvloop (tests/bench/smtp_blast.py), the client's
CPU an email went from 0.16-0.20 ms to 0.13-0.15 ms (six runs each, interleaved).
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from typing import cast

from aiosmtplib import (
    SMTP,
    SMTPReadTimeoutError,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPStatus,
)

# aiosmtplib's bounds on what a server may send: a line, and a reply with its continuations.
MAX_LINE_BYTES = 8192
MAX_REPLY_BYTES = 4 * MAX_LINE_BYTES
INVALID_RESPONSE = SMTPStatus.invalid_response.value  # -1, the code of a reply unreadable
# A command line holds no control character: CR or LF would end it early (injection).
CONTROL_CHARACTER = re.compile(rb"[\x00-\x1f\x7f]")


class SessionProtocol(asyncio.Protocol):
    """An open SMTP session's connection: commands written, alone or several in one write, and
    every reply parsed as it arrives, queued in order, read one at a time."""

    def __init__(
        self,
        transport: asyncio.Transport,
        told_when_lost: asyncio.BaseProtocol,
        pipelining: bool,
        smtputf8: bool,
    ) -> None:
        self.pipelining = pipelining  # what the server offered in its EHLO reply
        self.smtputf8 = smtputf8
        self._transport = transport
        self._told_when_lost = told_when_lost
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._owed = 0  # replies to the commands written that have not been parsed yet
        self._waiter: asyncio.Future[None] | None = None
        self._failure: Exception | None = None  # the connection lost, or a reply unreadable

    @property
    def is_open(self) -> bool:
        """Open, with every reply read: one still to come, or come and not read, would be
        read as the next command's."""
        return (
            self._failure is None
            and not self._owed
            and not self._replies
            and not self._transport.is_closing()
        )

    def send(self, *commands: bytes) -> None:
        """Write the commands (each without its CRLF) in one write; each owes one reply.
        ValueError for a command that holds a control character, as aiosmtplib refuses it."""
        for command in commands:
            if CONTROL_CHARACTER.search(command):
                raise ValueError("Command arg contains a prohibited control character")
        self._write(b"\r\n".join(commands) + b"\r\n", len(commands))

    def send_message(self, data: bytes) -> None:
        """Write DATA's content, ready to go (dot-stuffed, ending in CRLF "." CRLF): one reply."""
        self._write(data, 1)

    def _write(self, data: bytes, replies: int) -> None:
        if self._failure is not None:
            raise self._failure
        if self._transport.is_closing():
            raise SMTPServerDisconnected("Connection lost")
        self._owed += replies
        self._transport.write(data)

    async def reply(self, timeout: float) -> SMTPResponse:  # noqa: ASYNC109 - RFC 5321's waits
        """The next reply, in the order of the commands: SMTPReadTimeoutError when none comes
        within `timeout` seconds, SMTPServerDisconnected when the connection is lost first (the
        replies that came before the loss are read first)."""
        while not self._replies:
            if self._failure is not None:
                raise self._failure
            if not self._owed:
                raise RuntimeError("no reply is owed: no command waits for one")
            waiter = self._waiter = self._loop.create_future()
            timer = self._loop.call_later(timeout, _time_out, waiter)
            try:
                await waiter
            except SMTPReadTimeoutError as error:
                # Its reply may still come, and be read as the next command's: never again.
                self._fail(error)
                self._transport.close()
                raise
            finally:
                timer.cancel()
                self._waiter = None
        return self._replies.popleft()

    async def quit(self, timeout: float) -> None:  # noqa: ASYNC109 - as above
        """QUIT and its reply, then the connection is closed."""
        try:
            self.send(b"QUIT")
            await self.reply(timeout)
        finally:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if not self._owed or self._failure is not None:
            return  # nothing was asked: dropped, as aiosmtplib drops it
        self._buffer += data
        try:
            self._parse_replies()
        except SMTPResponseException as error:
            self._fail(error)  # the replies parsed before it are read first
            self._transport.close()
        else:
            if self._replies:
                self._wake()

    def _parse_replies(self) -> None:
        """Every complete reply in the buffer, owed, into the queue, as aiosmtplib's
        `SMTPProtocol._read_response_from_buffer` reads one."""
        buffer = self._buffer
        offset = parsed = 0
        text = bytearray()
        while self._owed:
            line_end = buffer.find(b"\n", offset)
            if line_end == -1:
                break
            line = bytes(buffer[offset : line_end + 1])
            if len(line) > MAX_LINE_BYTES:
                raise SMTPResponseException(INVALID_RESPONSE, "Response too long")
            try:
                code = int(line[:3])
            except ValueError:
                raise SMTPResponseException(
                    INVALID_RESPONSE,
                    f"Malformed SMTP response line: {line.decode('utf-8', errors='ignore')}",
                ) from None
            offset = line_end + 1
            if text:
                text += b"\n"
            text += line[4:].strip(b" \t\r\n")
            if line[3:4] != b"-":
                self._replies.append(SMTPResponse(code, text.decode("utf-8", "surrogateescape")))
                self._owed -= 1
                parsed = offset
                text = bytearray()
        del buffer[:parsed]
        if not self._owed:
            buffer.clear()  # beyond the replies owed: nothing was asked
        elif len(buffer) > MAX_REPLY_BYTES:
            raise SMTPResponseException(INVALID_RESPONSE, "Response too long")

    def eof_received(self) -> bool:
        self._fail(SMTPServerDisconnected("Unexpected EOF received"))
        return False  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        lost = SMTPServerDisconnected("Connection lost")
        lost.__cause__ = exc
        self._fail(lost)
        self._told_when_lost.connection_lost(exc)

    def _fail(self, error: Exception) -> None:
        if self._failure is None:
            self._failure = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(SMTPReadTimeoutError("Timed out waiting for server response"))
        waiter.exception()  # retrieved, should a cancellation in the same turn leave it unread


def take_over(client: SMTP) -> SessionProtocol:
    """The session `client` has opened (connected, greeted, over TLS and logged in as the
    settings say), its connection now read by a SessionProtocol."""
    transport, replaced = client.transport, client.protocol
    if transport is None or replaced is None or transport.is_closing():
        raise SMTPServerDisconnected("Connection lost")
    protocol = SessionProtocol(
        cast(asyncio.Transport, transport),
        replaced,
        pipelining=client.supports_extension("pipelining"),
        smtputf8=client.supports_extension("smtputf8"),
    )
    transport.set_protocol(protocol)
    return protocol
