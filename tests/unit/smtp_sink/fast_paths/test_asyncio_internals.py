"""A StreamReader's buffer limit, set for a while (services/smtp_sink/fast_paths/
asyncio_internals.py): it is where asyncio keeps it, readuntil and feed_data go by it, and it is
put back after.

A failure here after an upgrade of Python: asyncio keeps or uses the limit elsewhere, and the
sink's DATA reading (fast_paths/data_section.py) would stop at aiosmtpd's limit or not at all.
"""

from __future__ import annotations

import asyncio

import pytest

from services.smtp_sink.fast_paths.asyncio_internals import stream_reader_limit

DOT_LINE_END = b".\r\n"
SECTION = b"x" * 100 + b"\r\n" + DOT_LINE_END


async def test_a_reader_keeps_the_limit_it_was_made_with_where_the_module_sets_it() -> None:
    reader = asyncio.StreamReader(limit=1001)

    assert reader._limit == 1001  # type: ignore[attr-defined]


async def test_readuntil_goes_by_the_limit_inside_the_block() -> None:
    reader = asyncio.StreamReader(limit=8)
    reader.feed_data(SECTION)

    with stream_reader_limit(reader, len(SECTION)):
        assert await reader.readuntil(DOT_LINE_END) == SECTION


class Transport(asyncio.ReadTransport):
    """Counts the pauses the reader asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses = 0

    def pause_reading(self) -> None:
        self.pauses += 1

    def resume_reading(self) -> None: ...


async def test_feed_data_goes_by_the_limit_inside_the_block() -> None:
    """Past twice its limit a reader pauses its transport: inside the block, twice the limit
    set."""
    held, own = asyncio.StreamReader(limit=8), asyncio.StreamReader(limit=8)
    held_transport, own_transport = Transport(), Transport()
    held.set_transport(held_transport)
    own.set_transport(own_transport)

    with stream_reader_limit(held, len(SECTION)):
        held.feed_data(SECTION)
    own.feed_data(SECTION)

    assert held_transport.pauses == 0
    assert own_transport.pauses == 1


async def test_the_readers_own_limit_is_back_after_the_block() -> None:
    reader = asyncio.StreamReader(limit=8)
    with stream_reader_limit(reader, 1024):
        pass
    reader.feed_data(SECTION)

    with pytest.raises(asyncio.LimitOverrunError):
        await reader.readuntil(DOT_LINE_END)


async def test_the_readers_own_limit_is_back_after_a_block_that_fails() -> None:
    reader = asyncio.StreamReader(limit=8)
    with pytest.raises(ConnectionResetError), stream_reader_limit(reader, 1024):
        raise ConnectionResetError
    reader.feed_data(SECTION)

    with pytest.raises(asyncio.LimitOverrunError):
        await reader.readuntil(DOT_LINE_END)
