"""An SMTP relay in memory, as the transport of an open session: it reads what the client writes,
answers each command as scripted, and hands its replies back in the segments a test chooses,
each in a callback of its own, as a socket would."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from typing import Any

TAKEN = {
    "MAIL": b"250 2.1.0 Ok\r\n",
    "RCPT": b"250 2.1.5 Ok\r\n",
    "DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    "message": b"250 2.0.0 Ok: queued as 4F2A\r\n",
    "QUIT": b"221 2.0.0 Bye\r\n",
}
NO_RECIPIENT = b"503 Error: need RCPT command\r\n"  # aiosmtpd's, and the sink's, to DATA
NO_VALID_RECIPIENT = b"554 5.5.1 Error: no valid recipients\r\n"  # Postfix's, to the "."

Cut = Callable[[bytes], list[bytes]]


def whole(replies: bytes) -> list[bytes]:
    """The replies to one write in one segment."""
    return [replies]


def byte_by_byte(replies: bytes) -> list[bytes]:
    return [replies[n : n + 1] for n in range(len(replies))]


def random_cuts(seed: int) -> Cut:
    """Cut anywhere: inside a line, between CR and LF, several replies in one segment."""
    chance = random.Random(seed)

    def cut(replies: bytes) -> list[bytes]:
        points = sorted(chance.sample(range(1, len(replies)), k=min(len(replies) - 1, 4)))
        edges = [0, *points, len(replies)]
        return [replies[start:end] for start, end in itertools.pairwise(edges)]

    return cut


class ScriptedRelay:
    """The transport under SessionProtocol, and the relay behind it. Each step ("MAIL", "RCPT",
    "DATA", "message", "RSET", "QUIT") is answered with TAKEN's reply but where `answers` says
    otherwise (an address's RCPT by the address), DATA with a 503 and the message with a 554
    when no recipient was taken. At the step
    named `lost_at` the connection is lost instead of its reply (after the replies before it),
    and from the step named `silent_at` on, nothing is answered. Every write is kept."""

    def __init__(
        self,
        answers: dict[str, bytes] | None = None,
        cut: Cut = whole,
        lost_at: str | None = None,
        silent_at: str | None = None,
    ) -> None:
        self.answers = answers or {}
        self.cut = cut
        self.lost_at = lost_at
        self.silent_at = silent_at
        self.writes: list[bytes] = []
        self.on_write: Callable[[], None] | None = None  # called as each write arrives
        self.steps: list[str] = []
        self.protocol: Any = None
        self._closing = False
        self._silent = False
        self._message: bytearray | None = None  # between a 354 and the final "."
        self._recipients_taken = 0

    # asyncio.Transport, as SessionProtocol uses it.

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def write(self, data: bytes) -> None:
        assert not self._closing, "written after the close"
        self.writes.append(data)
        if self.on_write is not None:
            self.on_write()
        replies = b""
        lost = False
        for step, line in self._read(data):
            self.steps.append(step)
            if step == self.silent_at:
                self._silent = True
            if self._silent:
                continue
            if step == self.lost_at:
                lost = True
                break
            reply = self._answer(step, line)
            replies += reply
            if step == "DATA" and reply.startswith(b"354"):
                self._message = bytearray()
        loop = asyncio.get_running_loop()
        if replies:
            for segment in self.cut(replies):
                loop.call_soon(self.protocol.data_received, segment)
        if lost:
            self._closing = True
            loop.call_soon(self.protocol.connection_lost, ConnectionResetError(104, "reset"))

    def _read(self, data: bytes) -> list[tuple[str, bytes]]:
        """The steps in `data`: command lines, or the message up to its final "."."""
        if self._message is not None:
            self._message += data
            lone_dot = self._message == b".\r\n"  # RFC 2920's, after a 354 to no recipient
            assert lone_dot or self._message.endswith(b"\r\n.\r\n"), "a message in one piece"
            self._message = None
            return [("message", b"")]
        assert data.endswith(b"\r\n"), "whole command lines"
        lines = data.split(b"\r\n")[:-1]
        return [(line.split(b" ", 1)[0].decode(), line) for line in lines]

    def _answer(self, step: str, line: bytes) -> bytes:
        if step == "RCPT":
            address = line.decode().removeprefix("RCPT TO:<").removesuffix(">")
            reply = self.answers.get(address, TAKEN["RCPT"])
            self._recipients_taken += reply.startswith(b"2")
            return reply
        if step == "DATA" and "DATA" not in self.answers and not self._recipients_taken:
            return NO_RECIPIENT
        if step == "message" and "message" not in self.answers and not self._recipients_taken:
            return NO_VALID_RECIPIENT
        reply = self.answers.get(step, TAKEN.get(step, b"250 Ok\r\n"))
        if step in ("message", "RSET"):
            self._recipients_taken = 0
        return reply

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default
