"""The one module that uses asyncio's private names: a StreamReader's buffer limit, set for a
while and then put back.

What it relies on: asyncio's StreamReader keeps the limit it was made with in `_limit`, and
readuntil reads it on every call (how far it looks for the separator before LimitOverrunError),
as feed_data does (the transport is paused past twice the limit). No public API changes the
limit of a reader made by someone else, and aiosmtpd makes each connection's reader with its
line length limit (1001 bytes). tests/unit/smtp_sink/fast_paths/test_asyncio_internals.py fails
when asyncio changes that.

What it gains, measured by `python -m tests.bench.data_section_limit` (the same DATA sections
read by fast_paths/data_section.py with the limit raised, to at most 64 KiB, and at aiosmtpd's,
alternating, over loopback on uvloop; medians of 21 rounds on 2 cores): 39.0 us instead of 47.8
for a 2 KB email with an HTML part (1.24x), 135 instead of 145 for one of 20 KB (1.08x). At
aiosmtpd's limit, a readuntil that finds its dot line more than a kilobyte on raises
LimitOverrunError and a read follows, and the transport is paused past two kilobytes and resumed:
an HTML part, none of whose lines ends in a dot, meets both. A text email whose paragraphs each
end in a dot within a kilobyte (36 us for 1.3 KB), and sections of 100 KB and 1 MB, take the same
time either way (within 2%). The raised limit is one part of data_section.py's bulk reading,
which as a whole took aiosmtpd's 13 us of Python for a small email to 5.6 us
(docs/performance.md, "What made the difference").
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
