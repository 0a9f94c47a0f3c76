"""A page's start and limit from the query string: Mailpit's defaults for what is left out,
a 400's message for what the sink cannot use (SQLite's integers are 64-bit)."""

from __future__ import annotations

import pytest

from services.smtp_sink.api.paging import Paging, PagingError, read_paging

LARGEST = "9223372036854775807"


@pytest.mark.parametrize(
    ("start", "limit", "paging"),
    [
        ("", "", Paging(0, 50)),  # left out
        ("0", "50", Paging(0, 50)),
        ("7", "0", Paging(7, 50)),  # a limit of 0 is Mailpit's default, 50
        ("+3", "007", Paging(3, 7)),
        ("-0", "1", Paging(0, 1)),
        (LARGEST, LARGEST, Paging(2**63 - 1, 2**63 - 1)),
    ],
)
def test_a_usable_start_and_limit_are_the_page(start: str, limit: str, paging: Paging) -> None:
    assert read_paging(start, limit) == paging


@pytest.mark.parametrize(
    ("start", "limit", "message"),
    [
        (
            "abc",
            "",
            "start must be a whole number from 0 to 9223372036854775807, not 'abc'; "
            "leave it out for 0",
        ),
        (
            "0",
            "1.5",
            "limit must be a whole number from 0 to 9223372036854775807, not '1.5'; "
            "leave it out for 50",
        ),
        ("-1", "", "start must be 0 or more, not '-1'; leave it out for 0"),
        ("", "-50", "limit must be 0 or more, not '-50'; leave it out for 50"),
        (
            "9223372036854775808",
            "",
            "start must be at most 9223372036854775807 (SQLite's largest integer), "
            "not '9223372036854775808'",
        ),
        (
            "",
            "9" * 5000,
            "limit must be at most 9223372036854775807 (SQLite's largest integer), "
            f"not '{'9' * 40}'... (5000 characters)",
        ),
        ("\uff11", "", "start must be a whole number from 0 to 9223372036854775807, not '\uff11'"),
    ],
    ids=[
        "not a number",
        "a fraction",
        "negative",
        "negative limit",
        "2**63",
        "5000 digits",
        "fullwidth",
    ],
)
def test_an_unusable_start_or_limit_is_an_error_that_says_what_and_how(
    start: str, limit: str, message: str
) -> None:
    with pytest.raises(PagingError) as error:
        read_paging(start, limit)

    assert str(error.value).startswith(message)
