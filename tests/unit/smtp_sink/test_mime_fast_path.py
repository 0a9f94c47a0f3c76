"""The single-part fast path of read_message gives exactly what the email package's reading
gives, for every message it takes; anything else it leaves to the email package."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from services.smtp_sink.mime import (
    MimePart,
    ParsedMessage,
    _read_any,
    _read_single_text_part,
    read_message,
)
from services.worker.mime import render_email
from shared.schema import EmailRecord
from tests.unit.smtp_sink.messages import PLAIN, multipart_with_attachment

HEAD = b"From: Ann <ann@example.com>\r\nTo: bob@example.com\r\nSubject: Hi\r\nMessage-ID: <m@x>\r\n"


def record(**fields: object) -> EmailRecord:
    return EmailRecord.model_validate(
        {
            "message_id": "0b1c2d3e-0000-4000-8000-000000000001",
            "created_at": datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC),
            "from": "Shop <shop@example.com>",
            "to": ["Ana <ana@example.com>"],
            "subject": "Your order",
            "text": "It ships today.\n",
            **fields,
        }
    )


WORKER_EMAILS = {
    "text": record(),
    "html only": record(text=None, html="<p>Hello <b>there</b></p>"),
    "non-ASCII subject and names": record(subject="Résumé ✓ " * 12, to=["Zoë <zoe@example.com>"]),
    "non-ASCII body": record(text="Grüße aus Köln, 東京\n" * 40),
    "cc, reply-to, tags, headers": record(
        cc=["c@example.com"], reply_to=["r@example.com"], tags=["a", "b"],
        headers={"X-Campaign": "spring " * 30, "List-Unsubscribe": "<mailto:u@example.com>"},
    ),
    "long lines": record(text="x" * 2000 + "\n"),
    "dots and CRs": record(text=".\n..leading dots\r\nand a bare \r in the middle\n"),
    "text and html": record(html="<p>both</p>"),  # multipart: not the fast path's
}  # fmt: skip

HANDMADE = {
    "plain, no Content-Type": PLAIN,
    "quoted-printable": HEAD
    + b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable"
    b"\r\n\r\nCaf=E9 au lait, a soft=\r\n break.\r\n",
    "upper-case type, quoted charset": HEAD
    + b'Content-Type: TEXT/HTML; charset="UTF-8"\r\n\r\n<p>Hi</p>\r\n',
    "unknown charset": HEAD + b"Content-Type: text/plain; charset=x-unheard-of\r\n\r\nabc\r\n",
    "folded Content-Type": HEAD
    + b"Content-Type: text/plain;\r\n\tcharset=utf-8\r\n\r\nfolded\r\n",
    "folded subject": b"Subject: one\r\n two\r\n\tthree\r\nTo: a@b.c\r\n\r\nbody\r\n",
    "8-bit header": b"From: J\xc3\xb6rg <j@example.com>\r\nSubject: \xc3\xa9t\xc3\xa9\r\n\r\nx\r\n",
    "empty header value": b"Subject:\r\nTo: a@b.c\r\nX-Empty:\r\n  later\r\n\r\nbody\r\n",
    "no body": HEAD + b"\r\n",
    "attachment disposition": HEAD
    + b"Content-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\nx\r\n",
    "content id": HEAD + b"Content-Type: text/html\r\nContent-ID: <c@x>\r\n\r\n<p>x</p>\r\n",
    "named text part": HEAD + b'Content-Type: text/plain; name="a.txt"\r\n\r\nx\r\n',
    "base64": HEAD
    + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n",
    "two Content-Types": HEAD
    + b"Content-Type: text/plain\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n",
    "bare LF": b"Subject: lf\nTo: a@b.c\n\nbody\n",
    "mbox From line": b"From someone Tue Nov 25 2025\r\nSubject: x\r\n\r\nbody\r\n",
    "space before colon": b"Subject : x\r\nTo: a@b.c\r\n\r\nbody\r\n",
    "no blank line": b"Subject: x\r\nTo: a@b.c\r\n",
    "garbage": b"\x00\xff\xfe not an email",
    "multipart": multipart_with_attachment(),
}  # fmt: skip

ALL = {
    **{name: render_email(email, "x.local").data for name, email in WORKER_EMAILS.items()},
    **HANDMADE,
}
FAST = {
    "text", "html only", "non-ASCII subject and names", "non-ASCII body",
    "cc, reply-to, tags, headers", "long lines", "dots and CRs", "plain, no Content-Type",
    "quoted-printable", "upper-case type, quoted charset", "unknown charset",
    "folded Content-Type", "folded subject", "8-bit header", "empty header value", "no body",
}  # fmt: skip


def comparable(parsed: ParsedMessage) -> tuple[object, ...]:
    """Parts hold the email package's Message objects, equal only to themselves: by content."""

    def by_content(parts: tuple[MimePart, ...]) -> tuple[object, ...]:
        return tuple(
            (part.part_id, part.content_type, part.file_name, part.content()) for part in parts
        )

    without_parts = dataclasses.replace(parsed, inline=(), attachments=())
    return without_parts, by_content(parsed.inline), by_content(parsed.attachments)


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_message_reads_as_the_email_package_reads_it(name: str) -> None:
    raw = ALL[name]

    assert comparable(read_message(raw)) == comparable(_read_any(raw))


@pytest.mark.parametrize("name", sorted(ALL))
def test_the_fast_path_takes_only_single_plain_text_parts(name: str) -> None:
    taken = _read_single_text_part(ALL[name]) is not None

    assert taken == (name in FAST)
