"""The wire format is a contract: an example record pinned byte for byte, and poison detection."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared.schema import EmailContent, EmailRecord, PoisonRecord, message_id_for, parse_record

EXAMPLE_RECORD = EmailRecord(
    message_id="0b5e1c2a-8f0e-5a55-9c4e-3f1d2b7a9e10",
    created_at=datetime(2026, 11, 25, 9, 30, tzinfo=UTC),
    sender="Kafka Demo <demo@example.com>",
    to=["Ana <ana@example.com>"],
    cc=["ops@example.com"],
    subject="Hello, Kafka ✉",
    text="hello1",
    headers={"X-Campaign": "seed"},
    tags=["demo"],
)
EXAMPLE_BYTES = (
    b'{"schema_version":1,"message_id":"0b5e1c2a-8f0e-5a55-9c4e-3f1d2b7a9e10",'
    b'"created_at":"2026-11-25T09:30:00Z","from":"Kafka Demo <demo@example.com>",'
    b'"to":["Ana <ana@example.com>"],"cc":["ops@example.com"],"bcc":[],"reply_to":[],'
    b'"subject":"Hello, Kafka \xe2\x9c\x89","text":"hello1","headers":{"X-Campaign":"seed"},'
    b'"tags":["demo"]}'
)


def test_record_is_pinned_byte_for_byte() -> None:
    key, value = EXAMPLE_RECORD.to_kafka()

    assert key == b"0b5e1c2a-8f0e-5a55-9c4e-3f1d2b7a9e10"
    assert value == EXAMPLE_BYTES


def test_record_round_trips() -> None:
    assert parse_record(EXAMPLE_BYTES) == EXAMPLE_RECORD


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "no value"),
        (b"hello1", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "not an object"),
        (b'{"schema_version": 2}', "unknown schema_version 2"),
        (b'{"message_id": "x"}', "unknown schema_version None"),
        (b'{"schema_version": 1, "message_id": "x"}', "from: Field required"),
    ],
)
def test_unreadable_records_are_poison(value: bytes | None, reason: str) -> None:
    with pytest.raises(PoisonRecord, match=reason):
        parse_record(value)


def test_a_whole_record_without_its_version_is_poison() -> None:
    # Everything else valid: the version must still be written, never assumed.
    without_version = EXAMPLE_BYTES.replace(b'"schema_version":1,', b"")

    with pytest.raises(PoisonRecord, match="unknown schema_version None"):
        parse_record(without_version)


def content(**fields: object) -> EmailContent:
    email: dict[str, object] = {
        "from": "demo@example.com",
        "to": ["ana@example.com"],
        "subject": "hi",
        "text": "hello",
    }
    return EmailContent.model_validate({**email, **fields})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"to": []}, "at least one recipient"),
        ({"to": ["not-an-address"]}, "is not a valid email address"),
        ({"to": ["a@example.com, b@example.com"]}, "expected one email address"),
        ({"cc": ["Ana <ana@example.com>\r\nBcc: x@example.com"]}, "CR, LF"),
        ({"subject": "hi\r\nBcc: x@example.com"}, "CR, LF"),
        ({"subject": "x" * 999}, "at most 998 characters"),
        ({"text": None}, "a body is needed"),
        ({"headers": {"X-Ok": "1\nBcc: x@example.com"}}, "CR, LF"),
        ({"headers": {"Bad Name": "1"}}, "printable ASCII"),
        ({"headers": {"Message-ID": "<forged@example.com>"}}, "cannot be set in headers"),
        ({"headers": {"X-Accepted-At": "2000-01-01T00:00:00+00:00"}}, "cannot be set in headers"),
        ({"priority": "high"}, "Extra inputs are not permitted"),
        ({"subject": "line\u2028separator"}, "line-breaking"),
        ({"subject": "vertical\x0btab"}, "line-breaking"),
        ({"to": ["Ana\x85 <ana@example.com>"]}, "line-breaking"),
        ({"tags": ["a\x1cb"]}, "line-breaking"),
        ({"text": "lone \ud800 surrogate"}, "lone surrogate|unicode"),
        ({"subject": "lone \udfff surrogate"}, "lone surrogate|unicode"),
    ],
)
def test_invalid_emails_are_refused_with_the_reason(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        content(**fields)


def test_html_alone_is_a_body() -> None:
    assert content(text=None, html="<p>hello</p>").html == "<p>hello</p>"


def test_recipients_are_to_cc_and_bcc() -> None:
    email = content(cc=["b@example.com"], bcc=["c@example.com"])

    assert email.recipients == ["ana@example.com", "b@example.com", "c@example.com"]


def test_an_idempotency_key_always_gives_the_same_message_id() -> None:
    assert message_id_for("order-42") == message_id_for("order-42")
    assert message_id_for("order-42") != message_id_for("order-43")
    assert message_id_for(None) != message_id_for(None)
