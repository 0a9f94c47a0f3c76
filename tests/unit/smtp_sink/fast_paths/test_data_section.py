"""The DATA section's per-read steps: unstuffing and the line length check, read by read, give
what the whole section gives, wherever the reads split it (a CRLF or a leading dot included);
and a section many times what a reader holds at once is read whole, or refused for its size."""

from __future__ import annotations

import asyncio
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.smtp_sink.fast_paths.data_section import (
    TOO_MUCH_DATA_REPLY,
    DataSection,
    LineLimit,
    read_data_section,
    unstuff,
)

# Sections made of the bytes that matter: CR, LF, dots, and text.
SECTIONS = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"a", b"bc"])).map(
    b"".join
)


def whole_section_unstuffed(section: bytes) -> bytes:
    """Every line's leading dot removed, the whole section at once."""
    unstuffed = section.replace(b"\r\n.", b"\r\n")
    return unstuffed[1:] if unstuffed.startswith(b".") else unstuffed


def in_pieces(section: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted({min(cut, len(section)) for cut in cuts}), len(section)]
    return [section[start:end] for start, end in pairwise(bounds)]


@given(SECTIONS, st.lists(st.integers(min_value=0, max_value=40), max_size=6))
def test_unstuffing_read_by_read_is_unstuffing_the_whole_section(
    section: bytes, cuts: list[int]
) -> None:
    before = b"\r\n"  # the section starts a line
    unstuffed = []
    for piece in in_pieces(section, cuts):
        unstuffed.append(unstuff(piece, before=before))
        before = (before + piece)[-2:]

    assert b"".join(unstuffed) == whole_section_unstuffed(section)


@settings(max_examples=500)
@given(
    SECTIONS,
    st.lists(st.integers(min_value=0, max_value=40), max_size=8),
    st.integers(min_value=0, max_value=16),
)
def test_a_line_over_the_limit_read_by_read_is_one_in_the_whole_section(
    section: bytes, cuts: list[int], most: int
) -> None:
    lines = LineLimit(most)
    for piece in in_pieces(section, cuts):
        lines.read(piece)

    assert lines.exceeded == (max(map(len, section.split(b"\r\n"))) > most)


@pytest.mark.parametrize(
    ("pieces", "exceeded"),
    [
        ([b"a\r\n", b"b\r\n", b"c"], False),  # short reads, each ending a line
        ([b"abc\r", b"\nde\r\n"], False),  # the CR is the CRLF's, not the line's
        ([b"abc\r", b"\r\n"], True),  # a bare CR is the line's
        ([b"ab", b"cd\r\n"], True),  # a line across two reads
        ([b"abc\r\nabc"], False),
    ],
)
def test_a_line_is_measured_across_reads_without_its_crlf(
    pieces: list[bytes], exceeded: bool
) -> None:
    lines = LineLimit(3)
    for piece in pieces:
        lines.read(piece)

    assert lines.exceeded == exceeded


# 440 KB of lines, one in 100 starting with a dot and one in 10,000 ending in one: many times
# the 64 KiB a reader holds while a section is read, and more than that between two dot lines.
LARGE_CONTENT = b"".join(
    (b".%05d\r\n" if n % 100 == 0 else b"line %05d.\r\n" if n % 10_000 == 1 else b"line %05d\r\n")
    % n
    for n in range(40_000)
)


def stuffed(content: bytes) -> bytes:
    """The DATA section a client writes for this content."""
    lines = content.replace(b"\r\n.", b"\r\n..")
    return (b"." if lines.startswith(b".") else b"") + lines + b".\r\n"


async def read_as_it_comes(section: bytes, size_limit: int) -> tuple[DataSection, bytes]:
    """The section and a command after it, written in 16 KB pieces to a reader made with
    aiosmtpd's limit; returns what read_data_section made of it and what it left."""
    reader = asyncio.StreamReader(limit=1001)
    sent = section + b"NOOP\r\n"

    async def write() -> None:
        for start in range(0, len(sent), 16_384):
            reader.feed_data(sent[start : start + 16_384])
            await asyncio.sleep(0)
        reader.feed_eof()

    writing = asyncio.create_task(write())
    read = await read_data_section(reader, size_limit, 1001)
    await writing
    return read, await reader.read()


async def test_a_section_many_times_what_a_reader_holds_is_read_whole() -> None:
    read, left = await read_as_it_comes(stuffed(LARGE_CONTENT), size_limit=10 * 1024 * 1024)

    assert read == DataSection(LARGE_CONTENT)
    assert left == b"NOOP\r\n"


async def test_a_section_over_a_size_limit_above_what_a_reader_holds_is_refused() -> None:
    size_limit = len(LARGE_CONTENT) - 1

    read, left = await read_as_it_comes(stuffed(LARGE_CONTENT), size_limit)

    assert read == DataSection(b"", TOO_MUCH_DATA_REPLY)
    assert left == b"NOOP\r\n"
