"""Hypothesis strategies for the emails the wire schema accepts, across its whole space (IDN
domains, quoted and encoded names, long words, every body shape), for the property tests of the
schema and of the renderer."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from shared.schema import MAX_DISPLAY_NAME_LENGTH, MAX_SUBJECT_LENGTH, RESERVED_HEADERS

# Characters a header may carry: printable ASCII with the specials that need quoting, tab and
# controls, and non-ASCII of one to four UTF-8 octets. Line breaks are the refusal tests'.
HEADER_CHARACTERS = (
    string.ascii_letters + string.digits + " ,;:.\"\\()<>[]@=?_!#$%&*+-/^`{|}~'\t\x01\x7f"
    "éüßøñçЖжλ李東京☕€😀\u0301\u00a0"
)


def repeated(
    text: st.SearchStrategy[str], min_length: int, max_length: int
) -> st.SearchStrategy[str]:
    """Long text, cheaply: a short text repeated to a length in [min_length, max_length]."""
    return st.builds(
        lambda unit, length: (unit * length)[:length],
        text.filter(bool),
        st.integers(min_length, max_length),
    )


ATEXT = string.ascii_lowercase + string.digits + "!#$%&'*+-/=?^_`{|}~"
ASCII_LABELS = st.builds(
    "{}{}".format,
    st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=12),
    st.sampled_from(["", "-x", "-0-a"]),
)
# Scripts whose letters make valid IDNA 2008 labels on their own (no contextual rules).
IDN_LABELS = st.one_of(
    st.text("абвгдежзийклмнопрстуфхцчшщэюяАБВГДЕЖЗ", min_size=1, max_size=12),
    st.text("αβγδεζηθικλμνξοπρτυφχψω", min_size=1, max_size=12),
    st.text("中文字测试网络東京", min_size=1, max_size=8),
    st.builds(
        "".join,
        st.lists(st.sampled_from(["stra", "ß", "e", "ü", "ö", "ç", "ñ"]), min_size=1, max_size=8),
    ),
    st.sampled_from(["пример", "bücher", "faß", "münchen", "ελληνικά", "日本語"]),
)
TOP_LEVEL_DOMAINS = st.sampled_from(["com", "org", "de", "io", "COM", "рф", "中国", "xn--p1ai"])


@st.composite
def domains(draw: st.DrawFn) -> str:
    labels = draw(st.lists(st.one_of(ASCII_LABELS, IDN_LABELS), min_size=1, max_size=3))
    return ".".join([*labels, draw(TOP_LEVEL_DOMAINS)])


LOCAL_PARTS = st.one_of(
    st.builds(".".join, st.lists(st.text(ATEXT, min_size=1, max_size=12), min_size=1, max_size=3)),
    repeated(st.text(ATEXT, max_size=8), 60, 64),  # up to RFC 5321's longest
    st.sampled_from(["josé", "zoë", "用户", "пользователь", "ana.maría"]),  # needs SMTPUTF8
)


@st.composite
def addr_specs(draw: st.DrawFn) -> str:
    return f"{draw(LOCAL_PARTS)}@{draw(domains())}"


DISPLAY_NAMES = st.one_of(
    st.text(HEADER_CHARACTERS, max_size=40),
    repeated(st.text(HEADER_CHARACTERS, max_size=10), 100, MAX_DISPLAY_NAME_LENGTH),
    repeated(st.text("é李😀 ", max_size=4), MAX_DISPLAY_NAME_LENGTH, MAX_DISPLAY_NAME_LENGTH),
    st.sampled_from(["Ana", "Smith, Bob", "Dr. O'Neil", "Zoë Müller", "=?utf-8?q?x?=", " Ana "]),
)


@st.composite
def addresses(draw: st.DrawFn) -> str:
    """One address as a client writes it: bare, with a quoted or a plain name, or a comment."""
    addr_spec = draw(addr_specs())
    name = draw(DISPLAY_NAMES)
    quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return draw(
        st.sampled_from(
            [addr_spec, f"{quoted} <{addr_spec}>", f"Ana María <{addr_spec}>", f"{addr_spec} (Ana)"]
        )
    )


HEADER_VALUES = st.one_of(
    st.text(HEADER_CHARACTERS, max_size=120),
    repeated(st.text(HEADER_CHARACTERS, max_size=30), 120, MAX_SUBJECT_LENGTH),
    st.builds(
        lambda n, unit: (unit * n)[:MAX_SUBJECT_LENGTH],
        st.integers(1, 998),
        st.sampled_from(["x", "é", "😀", "a b", "=?"]),
    ),
)
HEADER_NAME_CHARACTERS = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) != ":")
HEADER_NAMES = st.one_of(
    st.builds("X-{}".format, st.text(HEADER_NAME_CHARACTERS, min_size=1, max_size=12)),
    st.builds("X-{}".format, repeated(st.text(HEADER_NAME_CHARACTERS, max_size=4), 60, 74)),
).filter(lambda name: name.lower() not in RESERVED_HEADERS)
BODY_LINE_ENDINGS = st.sampled_from(["\n", "\r\n", "\r", "\n\r"])
BODIES = st.one_of(
    st.text(max_size=300),  # any character but a lone surrogate
    st.text(HEADER_CHARACTERS, max_size=300),
    st.builds(
        lambda lines, ending, last: ending.join(lines) + last,
        st.lists(st.text(HEADER_CHARACTERS, max_size=120), max_size=20),
        BODY_LINE_ENDINGS,
        st.sampled_from(["", "\n", "\r"]),
    ),
    st.builds(
        lambda n, unit: unit * n,
        st.integers(0, 3000),
        st.sampled_from(["a", "é", ".\n", "x y ", "\r"]),
    ),
)


@st.composite
def email_contents(draw: st.DrawFn) -> dict[str, Any]:
    """The JSON of `POST /emails` for an email the schema should accept."""
    recipient_lists = st.lists(addresses(), max_size=4)
    email: dict[str, Any] = {
        "from": draw(addresses()),
        "to": draw(recipient_lists),
        "cc": draw(recipient_lists),
        "bcc": draw(recipient_lists),
        "reply_to": draw(st.lists(addresses(), max_size=2)),
        "subject": draw(HEADER_VALUES),
        "headers": draw(st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=3)),
        "tags": draw(st.lists(st.text(HEADER_CHARACTERS, min_size=1, max_size=100), max_size=3)),
    }
    if not email["to"] + email["cc"] + email["bcc"]:
        email["to"] = [draw(addresses())]
    bodies = draw(st.sampled_from(["text", "html", "text and html"]))
    email["text"] = draw(BODIES) if "text" in bodies else None
    email["html"] = draw(BODIES) if "html" in bodies else None
    return email


CREATED_AT = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
)
MESSAGE_IDS = st.one_of(
    st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=40),
    repeated(st.text(string.ascii_letters + string.digits + "._-", max_size=8), 190, 200),
)


@st.composite
def email_records(draw: st.DrawFn) -> dict[str, Any]:
    """The fields of a record of `email.send` the schema should accept."""
    return {
        **draw(email_contents()),
        "message_id": draw(MESSAGE_IDS),
        "created_at": draw(CREATED_AT),
    }
