"""A large body read in passes, so that a thread reading it lets the event loop run, gives what
one pass over it gives; and hostile HTML is read in time linear in its length."""

from __future__ import annotations

import html
import re
import time
from unittest.mock import patch

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.smtp_sink import mime
from services.smtp_sink.api import search
from services.smtp_sink.api.search import clean
from services.smtp_sink.mime import SNIPPET_CHARS, html_to_text, read_message

# Passes of a few characters, so that small examples cross many cuts.
TINY_PASSES = 3

MARKUP = st.lists(
    st.sampled_from(
        [
            "<script>", "</script>", "<SCRIPT a=1>", "</Script >", "<style>", "</style>",
            "<scripts>", "<br>", "<BR/>", "</p>", "<p>", "<b>", "<", ">", "<br", "&amp;",
            "&lt", "&", "&#65;", "text", " ", "\n", "Ünïcödé",
        ]
    ),
    max_size=40,
).map("".join)  # fmt: skip
WHITESPACE_AND_WORDS = st.lists(
    st.sampled_from(
        [
            "word", "Σ", "ΑΣ", " ", "  ", "\t", "\n", "\r", "\r\n", "\x0b", "\x1c", "\x85",
            "\u2028", "\u00a0", "\ufeff", "<", ">", ";", '"', " " * 300, "x" * 150,
        ]
    ),
    max_size=60,
).map("".join)  # fmt: skip


def html_to_text_in_one_pass(markup: str) -> str:
    """html_to_text as three substitutions over the whole markup (quadratic on hostile input)."""
    without_code = re.sub(r"<(script|style)\b.*?</\1\s*>", " ", markup, flags=re.I | re.S)
    with_breaks = re.sub(r"<(br|/p|/div|/tr|/h[1-6]|/li)\b[^>]*>", "\n", without_code, flags=re.I)
    return html.unescape(re.sub(r"<[^>]*>", "", with_breaks)).strip()


def text_message(body: str) -> mime.ParsedMessage:
    raw = b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body.encode()
    return read_message(raw)


@given(MARKUP)
@example("<p>one</p><script>x<br>y</script><b>two</b><br/>&amp; &lt <")
def test_html_in_passes_reads_as_html_in_one_pass(markup: str) -> None:
    with patch.object(mime, "PASS_CHARS", TINY_PASSES):
        assert html_to_text(markup) == html_to_text_in_one_pass(markup)


@given(WHITESPACE_AND_WORDS)
@example("x" * 150 + " Word;ΑΣ\u2028end ")
def test_cleaning_in_passes_is_cleaning_in_one_pass(text: str) -> None:
    in_one_pass = " ".join(text.translate(search._SEPARATORS).split()).lower()

    with patch.object(search, "PASS_CHARS", TINY_PASSES):
        assert clean(text) == in_one_pass


@given(WHITESPACE_AND_WORDS)
@example("a\r\nbc\r\n\r\nd\r")
def test_line_ends_in_passes_are_line_ends_in_one_pass(body: str) -> None:
    with patch.object(mime, "PASS_CHARS", TINY_PASSES):
        assert text_message(body).text == body.replace("\r\n", "\n")


@given(WHITESPACE_AND_WORDS)
@example(" \n\x1c \u2028  first line \x85second")
def test_the_first_line_is_the_first_non_blank_line(body: str) -> None:
    parsed = text_message(body)

    lines = parsed.text.splitlines()
    assert parsed.first_line == next((line.strip() for line in lines if line.strip()), "")


@given(WHITESPACE_AND_WORDS)
@example(" " * 900 + "word " * 300)
def test_the_snippet_from_the_start_of_the_body_is_the_snippet_of_the_whole(body: str) -> None:
    parsed = text_message(body)

    collapsed = re.sub(r"\s+", " ", parsed.body_text.replace("\ufeff", " ")).strip()
    whole = collapsed if len(collapsed) <= SNIPPET_CHARS else collapsed[:SNIPPET_CHARS] + "..."
    assert parsed.snippet == whole


@pytest.mark.parametrize(
    ("markup", "text"),
    [
        ("<script>" * 200_000, ""),  # never closed: the one-pass expression took hours
        ("<style " * 200_000, ("<style " * 200_000).strip()),
        ("<" * 1_000_000, "<" * 1_000_000),  # no ">" at all
        ("<br" * 300_000, "<br" * 300_000),
        ("<b>x</b>" + "<" * 1_000_000, "x" + "<" * 1_000_000),
    ],
    ids=["unclosed scripts", "unclosed styles", "lone <", "unclosed <br", "tags, then lone <"],
)
def test_hostile_html_is_read_in_linear_time(markup: str, text: str) -> None:
    started = time.monotonic()

    assert html_to_text(markup) == text
    assert time.monotonic() - started < 5
