"""The wire format is a contract: an example record pinned byte for byte, and poison detection."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from email_validator import ValidatedEmail, validate_email
from pydantic import ValidationError

from shared import schema
from shared.schema import (
    EmailContent,
    EmailRecord,
    Mailbox,
    PoisonRecord,
    mailbox,
    message_id_for,
    new_message_id,
    parse_record,
)

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


def test_the_same_idempotency_key_and_body_always_give_the_same_message_id() -> None:
    body, other_body = "a" * 64, "b" * 64  # fingerprints

    assert message_id_for("order-42", body) == message_id_for("order-42", body)
    assert message_id_for("order-42", body) != message_id_for("order-43", body)
    assert message_id_for("order-42", body) != message_id_for("order-42", other_body)
    assert message_id_for("order-42", body, index=0) != message_id_for("order-42", body)
    assert message_id_for("order-42", body, index=0) != message_id_for("order-42", body, index=1)
    assert new_message_id() != new_message_id()


def test_message_ids_of_keys_are_pinned() -> None:
    """Changing them would make a retry that crosses an upgrade a second email."""
    assert message_id_for("order-42", "0" * 64) == "fa19dcd1-f7d6-514c-9f91-da9730843f1c"
    assert message_id_for("order-42", "0" * 64, index=3) == "c879ceb4-f4bc-5590-9282-1dd8e60e834f"


ADDR_SPEC_254 = "l" * 64 + "@" + "d" * 63 + "." + "e" * 63 + "." + "f" * 57 + ".com"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"to": [f'"{"N" * 129}" <ana@example.com>']}, "129 characters, at most 128"),
        ({"to": [f"{'l' * 65}@example.com"]}, "65 octets .UTF-8., at most 64"),
        ({"to": ["é" * 33 + "@example.com"]}, "66 octets .UTF-8., at most 64"),
        ({"to": [ADDR_SPEC_254 + "m"]}, "too long .1 character too many."),
        ({"to": ["a@" + "é" * 64 + ".com"]}, "not a valid email address"),
        ({"to": [f'"{"é" * 600}" <a@example.com>']}, "at most 515 characters"),
        ({"to": ["Ana <a@١٢٣.com>"]}, "not a valid email address"),  # no A-label form
        ({"to": ["a@xn--zz.com"]}, "not valid IDNA"),
        ({"headers": {"X-" + "n" * 75: "1"}}, "77 characters, at most 76"),
        (
            {"to": [f"r{n}@example.com" for n in range(60)], "cc": ["c@example.com"] * 41},
            "at most 100 recipients in to, cc and bcc together, got 101 .60 in to, 41 in cc.",
        ),
        ({"reply_to": [f"r{n}@example.com" for n in range(11)]}, "at most 10 addresses, got 11"),
        ({"headers": {f"X-{n}": "1" for n in range(51)}}, "at most 50 headers, got 51"),
        ({"tags": ["t"] * 21}, "at most 20 tags, got 21"),
        (
            {"headers": {f"X-{n}": "é" * 998 for n in range(9)}},
            "hold 18024 octets of UTF-8 together, at most 16384",
        ),
    ],
)
def test_every_field_that_reaches_a_header_is_bounded(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        content(**fields)


def test_the_longest_address_and_display_name_are_accepted() -> None:
    name = "é" * 128
    email = content(to=[f'"{name}" <{ADDR_SPEC_254}>'], headers={"X-" + "n" * 74: "1"})

    assert mailbox(email.to[0]) == Mailbox(name, ADDR_SPEC_254, ADDR_SPEC_254)


@pytest.mark.parametrize(
    ("value", "outgoing_addr_spec", "needs_smtputf8"),
    [
        ("Ana <ana@example.com>", "ana@example.com", False),
        ("ana@Example.COM", "ana@Example.COM", False),
        ("Ana <ana@пример.рф>", "ana@xn--e1afmkfd.xn--p1ai", False),
        ("ana@ПРИМЕР。РФ", "ana@xn--e1afmkfd.xn--p1ai", False),  # UTS 46 maps case and dots
        ("ana@faß.de", "ana@xn--fa-hia.de", False),  # IDNA 2008 keeps ß
        ("ana@xn--e1afmkfd.xn--p1ai", "ana@xn--e1afmkfd.xn--p1ai", False),
        ("josé@пример.рф", "josé@xn--e1afmkfd.xn--p1ai", True),
    ],
)
def test_a_mailbox_goes_out_with_its_domain_as_a_labels(
    value: str, outgoing_addr_spec: str, needs_smtputf8: bool
) -> None:
    address = mailbox(value)

    assert address.outgoing_addr_spec == outgoing_addr_spec
    assert address.needs_smtputf8 is needs_smtputf8


def test_an_idn_address_is_stored_as_given() -> None:
    """The record keeps what the client wrote; the worker sends the A-labels."""
    assert content(to=["Ana <ana@пример.рф>"]).to == ["Ana <ana@пример.рф>"]


@pytest.fixture
def addresses_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address the schema hands email_validator from now on."""
    read: list[str] = []

    def reading(address: str, **options: Any) -> ValidatedEmail:
        read.append(address)
        return validate_email(address, **options)

    monkeypatch.setattr(schema, "validate_email", reading)
    return read


@pytest.mark.parametrize("field", ["to", "cc", "bcc", "reply_to"])
def test_counts_are_checked_before_any_address_is_read(
    field: str, addresses_read: list[str]
) -> None:
    """20,000 addresses took a second to read, only to be refused for their number."""
    with pytest.raises(ValidationError, match=r"got 2000[01]"):
        content(**{field: [f"count-first-{n}@example.com" for n in range(20_000)]})
    assert addresses_read == []


def test_a_record_over_the_counts_is_poison_before_any_address_is_read(
    addresses_read: list[str],
) -> None:
    value = EXAMPLE_BYTES.replace(
        b'"cc":["ops@example.com"]',
        b'"cc":[' + b",".join(b'"poison-%d@example.com"' % n for n in range(20_000)) + b"]",
    )

    with pytest.raises(PoisonRecord, match="at most 100 recipients"):
        parse_record(value)
    assert addresses_read == []
