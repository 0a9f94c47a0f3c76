"""DATA as the worker writes it (RFC 5321 4.5.2): CRLF line ends, a dot doubled at the start of
a line, and the end of data, so that no line of the message can end it early."""

from __future__ import annotations

import pytest

from services.worker.smtp_data import dot_stuffed


@pytest.mark.parametrize(
    ("message", "data"),
    [
        pytest.param(b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n", id="a_line_that_is_just_a_dot"),
        pytest.param(b"a\r\n.", b"a\r\n..\r\n.\r\n", id="a_last_line_that_is_just_a_dot"),
        pytest.param(b".a\r\n", b"..a\r\n.\r\n", id="a_dot_first_on_the_first_line"),
        pytest.param(b"a\r\n.b\r\n..c\r\n", b"a\r\n..b\r\n...c\r\n.\r\n", id="dots_first_mid_body"),
        pytest.param(b"a.b\r\n a .\r\n", b"a.b\r\n a .\r\n.\r\n", id="dots_not_first_are_kept"),
    ],
)
def test_a_dot_at_the_start_of_a_line_is_doubled(message: bytes, data: bytes) -> None:
    assert dot_stuffed(message) == data


@pytest.mark.parametrize(
    ("message", "data"),
    [
        pytest.param(b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n", id="crlf_kept"),
        pytest.param(b"a\nb\rc", b"a\r\nb\r\nc\r\n.\r\n", id="bare_lf_and_cr_become_crlf"),
        pytest.param(b"a\n\rb", b"a\r\n\r\nb\r\n.\r\n", id="lf_then_cr_are_two_line_ends"),
        pytest.param(b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n", id="cr_then_crlf_are_two_line_ends"),
        pytest.param(b"a", b"a\r\n.\r\n", id="an_unended_last_line_is_ended"),
    ],
)
def test_every_line_ends_with_crlf_and_the_data_with_a_dot_line(
    message: bytes, data: bytes
) -> None:
    assert dot_stuffed(message) == data


def test_a_dot_after_a_bare_line_end_is_doubled_too() -> None:
    """A reader takes a bare CR or LF for a line end: the dot after it starts a line."""
    assert dot_stuffed(b"a\n.\rb\r.") == b"a\r\n..\r\nb\r\n..\r\n.\r\n"
