"""Mailpit's search: a query parsed into filters, the filters as an SQL condition, and the text
that free words match. Pure; every value reaches SQLite as a bound parameter, never as SQL text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum

from services.smtp_sink.api.paging import LARGEST_SQLITE_INTEGER
from services.smtp_sink.mailbox import Envelope
from services.smtp_sink.mime import PASS_CHARS, ParsedMessage

# Mailpit's cleanString: these characters separate words in both the stored text and a query.
_SEPARATORS = str.maketrans(dict.fromkeys('\r\n\t<>",;()\ufeff', " "))
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s?([a-z]{1,2})?")  # ASCII digits, as Go's \d
_SIZE_UNITS = {"": 1, "k": 1024, "kb": 1024, "m": 1024 * 1024, "mb": 1024 * 1024}


# Every term is a condition of its own, all of which must hold: a few distinctive words find
# what many would. SQLite also refuses an expression nested a thousand deep (a 500, if let by).
MAX_QUERY_TERMS = 50
MAX_QUERY_CHARS = 4096


class SearchError(ValueError):
    """A query the sink will not run; its message is the 400 answer."""


class Field(Enum):
    TEXT = "text"
    SUBJECT = "subject:"
    FROM = "from:"
    TO = "to:"
    CC = "cc:"
    BCC = "bcc:"
    REPLY_TO = "reply-to:"
    ADDRESSED = "addressed:"
    MESSAGE_ID = "message-id:"
    TAG = "tag:"
    LARGER = "larger:"
    SMALLER = "smaller:"
    READ = "is:read"
    UNREAD = "is:unread"
    TAGGED = "is:tagged"
    ATTACHMENT = "has:attachment"


_VALUED = tuple(field for field in Field if field.value.endswith(":"))
_FLAGS = {
    "is:read": Field.READ,
    "is:unread": Field.UNREAD,
    "is:tagged": Field.TAGGED,
    "has:attachment": Field.ATTACHMENT,
    "has:attachments": Field.ATTACHMENT,
}
# Mailpit filters on what the sink does not keep (inline parts) or on dates in any format;
# refused, because searching them as words would quietly match nothing (or, negated, all).
_UNSUPPORTED = ("after:", "before:", "has:inline")

# Where each address filter looks: the stored addresses JSON of services.smtp_sink.smtp.store.
_ADDRESS_PATHS = {
    Field.FROM: ("$.From",),
    Field.TO: ("$.To",),
    Field.CC: ("$.Cc",),
    Field.BCC: ("$.Bcc",),
    Field.REPLY_TO: ("$.ReplyTo",),
    Field.ADDRESSED: ("$.From", "$.To", "$.Cc", "$.Bcc", "$.ReplyTo"),
}


@dataclass(frozen=True)
class Filter:
    field: Field
    value: str | int = ""  # the words to find, a size in bytes, or nothing for a flag
    exclude: bool = False


def parse_query(query: str) -> tuple[Filter, ...]:
    """The filters of a Mailpit search query, which must all hold for a message to match.

    Like Mailpit: words are split on spaces outside double quotes (`subject:"two words"`),
    a leading `-` or `!` negates a word, and prefixes are case-insensitive. Unlike Mailpit,
    a filter without a value or an unknown size is an error rather than ignored, so that a
    DELETE by a mistyped query cannot widen to the whole mailbox; and a query has at most
    MAX_QUERY_CHARS characters and MAX_QUERY_TERMS terms.
    """
    if len(query) > MAX_QUERY_CHARS:
        raise SearchError(
            f"Error: the search query is {len(query)} characters long; the sink takes at most "
            f"{MAX_QUERY_CHARS}: search for fewer or shorter words"
        )
    filters: list[Filter] = []
    for word in _words(query):
        if not clean(word):
            continue
        if len(filters) == MAX_QUERY_TERMS:
            raise SearchError(
                f"Error: the search query has more than {MAX_QUERY_TERMS} terms, the most the "
                "sink takes: every term must match, so search for fewer, more distinctive words"
            )
        filters.append(_filter(word))
    if not filters:
        raise SearchError("Error: no search query")
    return tuple(filters)


def sql_condition(filters: tuple[Filter, ...]) -> tuple[str, tuple[str | int, ...]]:
    """The WHERE condition on `messages m` that the filters mean, and its parameters."""
    conditions: list[str] = []
    parameters: list[str | int] = []
    for found in filters:
        condition, values = _condition(found)
        conditions.append(f"NOT ({condition})" if found.exclude else f"({condition})")
        parameters.extend(values)
    return " AND ".join(conditions), tuple(parameters)


def clean(text: str) -> str:
    """Mailpit's cleanString: separators to spaces, whitespace collapsed, lower case."""
    if len(text) <= PASS_CHARS:
        return " ".join(text.translate(_SEPARATORS).split()).lower()
    # A large text in passes, cut at spaces (which no word crosses, nor a lower-casing rule).
    spaced = text.translate(_SEPARATORS)
    cleaned: list[str] = []
    start = 0
    while start < len(spaced):
        end = spaced.find(" ", start + PASS_CHARS) + 1 or len(spaced)
        if words := " ".join(spaced[start:end].split()).lower():
            cleaned.append(words)
        start = end
    return " ".join(cleaned)


def search_text(parsed: ParsedMessage) -> str:
    """What free words match, as Mailpit builds it: the addresses, the subject, the body text
    and the attachments' file names, cleaned. From the parsed fields, already decoded."""
    senders = (parsed.sender,) if parsed.sender else ()
    addresses = (*senders, *parsed.to, *parsed.cc, *parsed.bcc, *parsed.reply_to)
    return clean(
        " ".join(
            (
                parsed.subject,
                parsed.return_path,
                *(f"{address.name} {address.address}" for address in addresses),
                parsed.body_text,
                *(part.file_name for part in parsed.attachments),
            )
        )
    )


def envelope_search_text(envelope: Envelope) -> str:
    """What free words match in a message that could not be read: its envelope."""
    return clean(" ".join((envelope.mail_from, *envelope.rcpt_tos)))


def _words(query: str) -> Iterator[str]:
    word: list[str] = []
    quoted = False
    for char in query:
        if char == '"':
            quoted = not quoted
        elif char.isspace() and not quoted:
            if word:
                yield "".join(word)
            word = []
        else:
            word.append(char)
    if quoted:
        raise SearchError('Error: the search query has an unclosed double quote (")')
    if word:
        yield "".join(word)


def _filter(word: str) -> Filter:
    exclude = len(word) > 1 and word[0] in "-!"
    if exclude:
        word = word[1:]
    lowered = word.lower()
    if lowered in _FLAGS:
        return Filter(_FLAGS[lowered], exclude=exclude)
    for prefix in _UNSUPPORTED:
        if lowered.startswith(prefix):
            raise SearchError(f"Error: the sink does not support Mailpit's {prefix} filter")
    for field in _VALUED:
        if lowered.startswith(field.value):
            return _valued_filter(field, word[len(field.value) :], exclude)
    return Filter(Field.TEXT, clean(word), exclude)


def _valued_filter(field: Field, raw_value: str, exclude: bool) -> Filter:
    # As in Mailpit, a subject is matched as typed; every other value is cleaned first.
    value = raw_value.strip() if field is Field.SUBJECT else clean(raw_value)
    if not value:
        raise SearchError(f"Error: {field.value} needs a value, e.g. {field.value}something")
    if field in (Field.LARGER, Field.SMALLER):
        return Filter(field, _bytes(field, value), exclude)
    return Filter(field, value, exclude)


def _bytes(field: Field, size: str) -> int:
    """Mailpit's sizeToBytes: 2kb, 4MB or 1.5m; k and m are powers of 1024."""
    matched = _SIZE.fullmatch(size)
    unit = (matched[2] or "") if matched else ""
    if matched is None or unit not in _SIZE_UNITS:
        raise SearchError(f"Error: {field.value} needs a size such as 500, 10kb or 1.5mb")
    # Exact, where Mailpit's float64 is not past 2**53; SQLite compares 64-bit integers.
    size_bytes = Decimal(matched[1]) * _SIZE_UNITS[unit]
    if size_bytes > LARGEST_SQLITE_INTEGER:
        shown = size if len(size) <= 40 else f"{size[:40]}..."
        raise SearchError(
            f"Error: {field.value}{shown} is more bytes than the sink can compare (at most "
            f"{LARGEST_SQLITE_INTEGER}): use a smaller size, such as 10mb"
        )
    return int(size_bytes)


def _condition(found: Filter) -> tuple[str, tuple[str | int, ...]]:
    field, value = found.field, found.value
    if field is Field.TEXT:
        # The stored text and the words are both lower-cased by clean(), so instr() is a
        # case-insensitive match for every script, where LIKE folds ASCII only.
        return "m.seq IN (SELECT seq FROM message_search WHERE instr(text, ?) > 0)", (value,)
    if field is Field.SUBJECT:
        return r"m.subject LIKE ? ESCAPE '\'", (_contains(str(value)),)
    if field is Field.MESSAGE_ID:
        return r"m.message_id LIKE ? ESCAPE '\'", (_contains(str(value)),)
    if field in _ADDRESS_PATHS:
        # Matched against the stored JSON, as Mailpit does, so the value is JSON-escaped too.
        pattern = _contains(json.dumps(value, ensure_ascii=False)[1:-1])
        paths = _ADDRESS_PATHS[field]
        matches = (f"json_extract(m.addresses, '{path}') LIKE ? ESCAPE '\\'" for path in paths)
        return " OR ".join(matches), (pattern,) * len(paths)
    if field is Field.LARGER:
        return "m.size >= ?", (value,)
    if field is Field.SMALLER:
        return "m.size < ?", (value,)
    if field is Field.READ:
        return "m.read = 1", ()
    if field is Field.UNREAD:
        return "m.read = 0", ()
    if field is Field.ATTACHMENT:
        return "m.attachments > 0", ()
    # tag: and is:tagged: the sink tags nothing, so they hold for no message.
    return "0", ()


def _contains(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
