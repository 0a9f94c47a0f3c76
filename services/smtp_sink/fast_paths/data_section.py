"""Reading an SMTP DATA section in a few bulk reads, where aiosmtpd reads it a line at a time.

The same answers as aiosmtpd's own loop (tests/integration/smtp_sink/fast_paths/
test_data_section.py holds them side by side): the message ends at a line holding only "."; a
leading dot is removed from every line (RFC 5321 4.5.2); a section over the size limit is refused
with 552 and one with an over-long line with 500, both only after the whole section is read
(RFC 5321 4.2.5).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

from services.smtp_sink.fast_paths.asyncio_internals import stream_reader_limit

# aiosmtpd's own replies, word for word.
LINE_TOO_LONG_REPLY = "500 Line too long (see RFC5321 4.5.3.1.6)"
TOO_MUCH_DATA_REPLY = "552 Error: Too much mail data"

_CRLF = b"\r\n"
# The end of a DATA section is "." CRLF at the start of a line: these three bytes where the
# section starts or right after a CRLF. Elsewhere they are a line that ends in a dot.
_DOT_LINE_END = b".\r\n"
# The most a reader holds while a section is read (asyncio pauses the transport past twice
# its limit); a larger message comes in several reads. At a megabyte, a 1 MB section over
# loopback took a fifth longer than at aiosmtpd's own limit; at 64 KiB, the same time
# (python -m tests.bench.data_section_limit).
_MOST_BUFFERED = 64 * 1024
# A read of what is already buffered does not wait, so it does not let the event loop run
# either: after this many bytes read so, the loop runs once (a section of lines that end in a
# dot, one read per line, would hold it for a fifth of a second per buffer).
_BYTES_BETWEEN_YIELDS = 64 * 1024


@dataclass(frozen=True)
class DataSection:
    """A DATA section as read: the message (dots unstuffed), or the reply refusing it."""

    content: bytes
    refusal: str | None = None


async def read_data_section(
    reader: asyncio.StreamReader, size_limit: int | None, line_length_limit: int
) -> DataSection:
    """Read up to and including the lone "." line; the reader is left at the next command.

    While the section is read, the reader's buffer limit is raised (to at most 64 KiB, by
    fast_paths.asyncio_internals), so that one readuntil takes everything up to the next line
    that ends in a dot.
    """
    # None or 0 is aiosmtpd's "no limit"; below 0, it refuses everything but an empty message.
    limit = max(size_limit or sys.maxsize, 0)
    # Each read is unstuffed and measured as it comes, not the whole section at its end: a
    # 10 MB section is then a few milliseconds of work per read, never one long stall of the
    # event loop that every other session waits for.
    kept: list[bytes] = []  # as received, for a refusal's line-by-line decision
    unstuffed: list[bytes] = []
    lines = LineLimit(line_length_limit - len(_CRLF))
    received = 0
    yielded_at = 0  # received, when the event loop last ran
    refusal: _AiosmtpdRefusal | None = None  # once the section is over the size limit
    # A dot line ends the section only at the start of a line: right after a CRLF, which may
    # have come in the read before; the section itself starts at the start of a line.
    last_two = _CRLF
    with stream_reader_limit(reader, min(limit, _MOST_BUFFERED) + len(_DOT_LINE_END)):
        while True:
            try:
                chunk = await reader.readuntil(_DOT_LINE_END)
            except asyncio.LimitOverrunError as overrun:
                # No line ending in a dot within the reader's limit: take what came so far.
                data = await reader.read(overrun.consumed)
                ended = False
            else:
                data = chunk[: -len(_DOT_LINE_END)]
                ended = _last_two(last_two, data) == _CRLF
                if not ended:
                    data = chunk  # a line that ends in a dot: part of the message
            received += len(data)
            if refusal is not None:
                refusal.read(data)  # the message is refused; read on to its end
            else:
                kept.append(data)
                unstuffed.append(unstuff(data, before=last_two))
                lines.read(data)
                if received > limit:
                    refusal = _AiosmtpdRefusal(limit, line_length_limit)
                    refusal.read(b"".join(kept))
                    kept.clear()
                    unstuffed.clear()
            if ended:
                break
            last_two = _last_two(last_two, data)
            if received - yielded_at >= _BYTES_BETWEEN_YIELDS:
                await asyncio.sleep(0)
                yielded_at = received
    if refusal is not None:
        # Every line has come, and together they are over the size limit: one of them decided.
        assert refusal.reply is not None
        return DataSection(b"", refusal.reply)
    if lines.exceeded:
        return DataSection(b"", LINE_TOO_LONG_REPLY)
    return DataSection(b"".join(unstuffed))


def unstuff(piece: bytes, before: bytes = _CRLF) -> bytes:
    """The piece without the dot that a client puts before every line starting with one.

    `before` is what came right before the piece, at least its last two bytes: a line may have
    started in the read before. The default is the start of a section, itself a line's start.
    """
    unstuffed = piece.replace(b"\r\n.", _CRLF)
    # replace() never touches the piece's first two bytes as the end of a CRLF before them.
    if before.endswith(_CRLF) and unstuffed.startswith(b"."):
        return unstuffed[1:]
    if before.endswith(b"\r") and unstuffed.startswith(b"\n."):
        return b"\n" + unstuffed[2:]
    return unstuffed


class LineLimit:
    """Whether a section, read piece by piece, has a line of more than `most` bytes without its
    CRLF: what max(map(len, section.split(CRLF))) > most says of the whole section."""

    def __init__(self, most: int) -> None:
        self._most = most
        self._ended_over = False
        self._open = 0  # the bytes so far of the line not yet ended
        self._cr_last = False

    @property
    def exceeded(self) -> bool:
        return self._ended_over or self._open > self._most

    def read(self, piece: bytes) -> None:
        if self._cr_last and piece.startswith(b"\n"):
            # A CRLF split between two reads: the open line ended before its CR.
            self._ended_over |= self._open - 1 > self._most
            self._open = 0
            piece = piece[1:]
        self._cr_last = piece.endswith(b"\r")
        if self._open + len(piece) <= self._most:
            # No line in it can be over the limit: no need to split it (nearly every message
            # is one such piece).
            last_crlf = piece.rfind(_CRLF)
            self._open = self._open + len(piece) if last_crlf < 0 else len(piece) - last_crlf - 2
            return
        *ended, last = piece.split(_CRLF)
        if ended:
            first_over = self._open + len(ended[0]) > self._most
            self._ended_over |= first_over or max(map(len, ended)) > self._most
            self._open = len(last)
        else:
            self._open += len(last)


def _last_two(before: bytes, data: bytes) -> bytes:
    return data[-2:] if len(data) >= 2 else (before + data)[-2:]


class _AiosmtpdRefusal:
    """The reply aiosmtpd refuses a section with, decided line by line in its order: the first
    line longer than the line limit, or that takes the section over the size limit, decides
    (a line over the limit before its CRLF came is too long whatever the size)."""

    def __init__(self, size_limit: int, line_length_limit: int) -> None:
        self._size_limit = size_limit
        self._line_length_limit = line_length_limit
        self._received = 0
        self._unfinished_line = b""
        self.reply: str | None = None

    def read(self, data: bytes) -> None:
        if self.reply is not None:
            return
        *lines, self._unfinished_line = (self._unfinished_line + data).split(_CRLF)
        for line in lines:
            self._decide(len(line))
            if self.reply is not None:
                return
        # A CR last may be half of the CRLF that ends the line.
        if len(self._unfinished_line.removesuffix(b"\r")) > self._line_length_limit:
            self.reply = LINE_TOO_LONG_REPLY

    def _decide(self, text_length: int) -> None:
        if text_length > self._line_length_limit:
            self.reply = LINE_TOO_LONG_REPLY
            return
        self._received += text_length + len(_CRLF)
        if self._received > self._size_limit:
            self.reply = TOO_MUCH_DATA_REPLY
        elif text_length + len(_CRLF) > self._line_length_limit:
            self.reply = LINE_TOO_LONG_REPLY
