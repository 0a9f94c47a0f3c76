"""Reading raw bytes into a ParsedMessage: headers, addresses, bodies, parts; never an error."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from services.smtp_sink.mime import Address, canonical_header_name, decode_words, read_message
from tests.unit.smtp_sink.messages import PLAIN, UTF8_HEADERS, multipart_with_attachment


def test_plain_message_fields_are_read() -> None:
    parsed = read_message(PLAIN)

    assert parsed.message_id == "plain-1@example.com"
    assert parsed.subject == "Hello Bob"
    assert parsed.sender == Address("Ann Sender", "ann@example.com")
    assert parsed.to == (Address("", "bob@example.com"), Address("Carol", "carol@example.com"))
    assert parsed.cc == (Address("", "dan@example.com"),)
    assert parsed.bcc == ()
    assert parsed.reply_to == (Address("", "replies@example.com"),)
    assert parsed.date == datetime(2025, 11, 25, 17, 0, tzinfo=UTC)
    assert parsed.date.utcoffset() == timedelta(hours=1)
    assert parsed.text == "First line of the body.\nSecond line.\n"
    assert parsed.html == ""
    assert parsed.first_line == "First line of the body."
    assert parsed.snippet == "First line of the body. Second line."


def test_encoded_words_are_decoded_in_subject_and_names() -> None:
    parsed = read_message(multipart_with_attachment())

    assert parsed.subject == "Résumé attached"
    assert parsed.sender == Address("Zoë", "zoe@example.com")


def test_multipart_gives_text_html_and_attachment() -> None:
    parsed = read_message(multipart_with_attachment())

    assert parsed.text == "Plain version\nof the body\n"
    assert parsed.html == "<p>HTML <b>version</b> &amp; more</p>\n"
    assert [(part.file_name, part.content_type) for part in parsed.attachments] == [
        ("resume.pdf", "application/pdf")
    ]
    assert parsed.attachments[0].content() == b"%PDF-1.4 data"
    assert parsed.attachments[0].part_id == "2"
    assert parsed.inline == ()


def test_snippet_prefers_the_html_body_like_mailpit() -> None:
    assert read_message(multipart_with_attachment()).snippet == "HTML version & more"


def test_long_snippet_is_cut_at_200_characters() -> None:
    parsed = read_message(b"Subject: long\r\n\r\n" + b"word " * 100)

    assert len(parsed.snippet) == 203
    assert parsed.snippet.endswith("...")


def test_html_only_message_gets_a_text_body() -> None:
    raw = b"Content-Type: text/html\r\n\r\n<html><style>p {}</style><p>Hi</p><p>there</p></html>"

    parsed = read_message(raw)

    assert parsed.text == "Hi\nthere"
    assert parsed.first_line == "Hi"


def test_utf8_headers_and_body_are_read_as_utf8() -> None:
    parsed = read_message(UTF8_HEADERS)

    assert parsed.sender == Address("Zoë", "zoë@exämple.com")
    assert parsed.to == (Address("", "jürgen@exämple.com"),)
    assert parsed.subject == "Grüße aus Köln"
    assert parsed.message_id == "utf8-1@exämple.com"
    assert parsed.text == "Schöne Grüße\n"


def test_missing_message_id_is_empty() -> None:
    assert read_message(b"Subject: no id\r\n\r\nbody\r\n").message_id == ""


def test_empty_message_gives_empty_fields() -> None:
    parsed = read_message(b"")

    assert parsed.headers == ()
    assert (parsed.message_id, parsed.subject, parsed.text, parsed.snippet) == ("", "", "", "")
    assert parsed.sender is None
    assert parsed.date is None


def test_non_mime_garbage_is_read_as_a_body_without_headers() -> None:
    parsed = read_message(b"\x00\x01\xff\xfe this is not a message\r\n")

    assert parsed.headers == ()
    assert "this is not a message" in parsed.text


def test_unparsable_from_header_is_kept_as_the_name_like_mailpit() -> None:
    assert read_message(b"From: not an address\r\n\r\n").sender == Address("not an address", "")


def test_unparsable_date_is_none() -> None:
    assert read_message(b"Date: yesterday-ish\r\n\r\n").date is None


def test_date_without_zone_is_taken_as_utc() -> None:
    date = read_message(b"Date: Tue, 25 Nov 2025 18:00:00 -0000\r\n\r\n").date

    assert date is not None
    assert date.utcoffset() == timedelta(0)


def test_folded_headers_are_unfolded() -> None:
    parsed = read_message(b"Subject: a long\r\n  subject\r\n\r\n")

    assert parsed.subject == "a long  subject"
    assert parsed.headers == (("Subject", "a long  subject"),)


def test_an_unknown_charset_falls_back_to_utf8() -> None:
    raw = b"Content-Type: text/plain; charset=no-such-charset\r\n\r\ncaf\xc3\xa9\r\n"

    assert read_message(raw).text == "café\n"


def test_inline_image_with_content_id_is_inline() -> None:
    raw = (
        b'Content-Type: multipart/related; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/html\r\n\r\n<img src=cid:logo>\r\n"
        b"--b\r\nContent-Type: image/png\r\nContent-ID: <logo>\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\niVBORw==\r\n--b--\r\n"
    )

    parsed = read_message(raw)

    assert [(part.content_id, part.content_type) for part in parsed.inline] == [
        ("logo", "image/png")
    ]
    assert parsed.attachments == ()


@pytest.mark.parametrize(
    ("raw_name", "canonical"),
    [("message-id", "Message-Id"), ("CONTENT-TYPE", "Content-Type"), ("X-Tags", "X-Tags")],
)
def test_header_names_are_canonical_like_go(raw_name: str, canonical: str) -> None:
    assert canonical_header_name(raw_name) == canonical


def test_undecodable_encoded_words_stay_as_they_are() -> None:
    assert decode_words("=?no-such-charset?q?abc?=") == "=?no-such-charset?q?abc?="


def test_random_bytes_never_raise() -> None:
    chaos = random.Random(1025)
    pieces = [b"From: ", b"To: ", b"\r\n", b"\r\n\r\n", b"--b", b"=?utf-8?q?", b"<", b">", b":"]
    pieces += [b'Content-Type: multipart/mixed; boundary="b"\r\n', b"\xff", b"\x00", b"=\r\n"]
    for _ in range(500):
        raw = b"".join(
            chaos.choice(pieces) if chaos.random() < 0.5 else chaos.randbytes(chaos.randint(0, 20))
            for _ in range(chaos.randint(0, 30))
        )
        parsed = read_message(raw)
        _ = (parsed.snippet, parsed.first_line, parsed.date)
        for part in (*parsed.inline, *parsed.attachments):
            part.content()
