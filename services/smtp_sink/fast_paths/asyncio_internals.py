"""The one module that uses asyncio's private names: a StreamReader's buffer limit, set for a
while and then put back.

What it relies on: asyncio's StreamReader keeps the limit it was made with in `_limit`, and
readuntil reads it on every call (how far it looks for the separator before LimitOverrunError),
as feed_data does (the transport is paused past twice the limit). No public API changes the
limit of a reader made by someone else, and aiosmtpd makes each connection's reader with its
line length limit (1001 bytes). tests/unit/smtp_sink/fast_paths/test_asyncio_internals.py fails
when asyncio changes that.

What it gains: fast_paths/data_section.py reads a DATA section in readuntil calls up to the next
line that ends in a dot, each taking up to a megabyte with the limit set here; at aiosmtpd's
limit each would stop after a kilobyte. That bulk reading, as a whole, took aiosmtpd's 13 us of
Python for a small email to 5.6 us (README, "What made the difference"); the share of the
raised limit alone was not measured.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def stream_reader_limit(reader: asyncio.StreamReader, limit: int) -> Iterator[None]:
    """The reader's buffer limit at `limit` inside the block, and back at its own after it."""
    own_limit = reader._limit  # type: ignore[attr-defined]
    reader._limit = limit  # type: ignore[attr-defined]
    try:
        yield
    finally:
        reader._limit = own_limit  # type: ignore[attr-defined]
