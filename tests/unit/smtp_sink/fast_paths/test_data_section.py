"""The DATA section's per-read steps: unstuffing and the line length check, read by read, give
what the whole section gives, wherever the reads split it (a CRLF or a leading dot included)."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.smtp_sink.fast_paths.data_section import LineLimit, unstuff

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
