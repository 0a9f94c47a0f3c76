"""tests/reference_mime.py: build_message, the email package's rendering of a record (the
reference render_email must match): the headers, the parts, and the bare envelope addresses."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

from shared.schema import EmailRecord
from tests.reference_mime import addresses, build_message


def record(**fields: object) -> EmailRecord:
    values: dict[str, object] = {
        "message_id": "m-1",
        "created_at": datetime(2026, 11, 25, 9, 30, tzinfo=UTC),
        "from": "Kafka Demo <demo@example.com>",
        "to": ["Ana <ana@example.com>"],
        "subject": "hello1",
        "text": "Hello, Ana",
    }
    return EmailRecord.model_validate({**values, **fields})


def parsed(message_bytes: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(message_bytes, policy=email.policy.default)


def test_message_id_is_deterministic_from_the_message_id() -> None:
    first = build_message(record(), "pipeline.test")
    again = build_message(record(), "pipeline.test")

    assert first["Message-ID"] == again["Message-ID"] == "<m-1@pipeline.test>"


def test_headers_come_from_the_record_and_bcc_stays_out() -> None:
    message = build_message(
        record(
            cc=["ops@example.com"],
            bcc=["secret@example.com"],
            reply_to=["help@example.com"],
            headers={"X-Campaign": "seed"},
            tags=["demo", "seed"],
        ),
        "pipeline.test",
    )
    read_back = parsed(message.as_bytes())

    assert read_back["From"] == "Kafka Demo <demo@example.com>"
    assert read_back["To"] == "Ana <ana@example.com>"
    assert read_back["Cc"] == "ops@example.com"
    assert read_back["Reply-To"] == "help@example.com"
    assert read_back["Subject"] == "hello1"
    assert read_back["X-Campaign"] == "seed"
    assert read_back["X-Tags"] == "demo, seed"
    assert read_back["Date"] == "Wed, 25 Nov 2026 09:30:00 +0000"
    assert read_back["X-Accepted-At"] == "2026-11-25T09:30:00.000000+00:00"
    assert "Bcc" not in read_back
    assert b"secret@example.com" not in message.as_bytes()


def test_text_and_html_make_an_alternative() -> None:
    message = build_message(record(html="<p>Hello, Ana</p>"), "pipeline.test")

    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]


def test_html_alone_is_sent_as_html() -> None:
    assert build_message(record(text=None, html="<p>hi</p>"), "d").get_content_type() == "text/html"


def test_non_ascii_subject_and_names_are_encoded() -> None:
    message = build_message(record(subject="Grüße ✉", to=["Zoë <zoe@example.com>"]), "d")
    read_back = parsed(message.as_bytes())

    assert read_back["Subject"] == "Grüße ✉"
    assert read_back["To"].addresses[0].display_name == "Zoë"


def test_envelope_addresses_are_bare() -> None:
    assert addresses(["Ana <ana@example.com>", "bob@example.com"]) == [
        "ana@example.com",
        "bob@example.com",
    ]


def test_a_non_ascii_mailbox_uses_utf8_headers() -> None:
    message = build_message(record(to=["josé@example.com"]), "d")

    assert message.policy is email.policy.SMTPUTF8
    assert "josé@example.com".encode() in message.as_bytes()
