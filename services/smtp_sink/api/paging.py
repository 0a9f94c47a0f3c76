"""The start and limit of a page of messages, read from a request's query string.

Pure. A value the sink cannot use is a PagingError whose text is the 400 answer: SQLite's
integers are 64-bit, so a larger number would fail in the store, as a 500, if it got there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LARGEST_SQLITE_INTEGER = 2**63 - 1
DEFAULT_LIMIT = 50  # Mailpit's default page size

_WHOLE_NUMBER = re.compile(r"([+-]?)([0-9]+)")
_SHOWN_CHARS = 40


class PagingError(ValueError):
    """A start or limit the sink will not use; its message is the 400 answer."""


@dataclass(frozen=True)
class Paging:
    start: int  # messages skipped, newest first
    limit: int  # the most messages on the page


def read_paging(start: str, limit: str) -> Paging:
    """The page that `start` and `limit` ask for, as Mailpit reads them where they are usable:
    left out or empty is the default (0 and 50), and so is a limit of 0.

    Unlike Mailpit, which quietly uses the default for anything else it cannot use, a value
    that is not a whole number, is negative or is beyond SQLite's integers is refused: a client
    that sent one has a bug it should hear about.
    """
    return Paging(
        start=_count("start", start, default=0),
        limit=_count("limit", limit, default=DEFAULT_LIMIT) or DEFAULT_LIMIT,
    )


def _count(name: str, value: str, default: int) -> int:
    if not value:
        return default
    number = _WHOLE_NUMBER.fullmatch(value)
    if number is None:
        raise PagingError(
            f"{name} must be a whole number from 0 to {LARGEST_SQLITE_INTEGER}, "
            f"not {_shown(value)}; leave it out for {default}"
        )
    sign, digits = number[1], number[2].lstrip("0")
    if sign == "-" and digits:
        raise PagingError(
            f"{name} must be 0 or more, not {_shown(value)}; leave it out for {default}"
        )
    # Compared as text first: int() refuses numbers of more than 4300 digits.
    if len(digits) > len(str(LARGEST_SQLITE_INTEGER)) or int(digits or 0) > LARGEST_SQLITE_INTEGER:
        raise PagingError(
            f"{name} must be at most {LARGEST_SQLITE_INTEGER} (SQLite's largest integer), "
            f"not {_shown(value)}"
        )
    return int(digits or 0)


def _shown(value: str) -> str:
    """The value as the answer quotes it: short, whatever the client sent."""
    if len(value) <= _SHOWN_CHARS:
        return repr(value)
    return f"{value[:_SHOWN_CHARS]!r}... ({len(value)} characters)"
