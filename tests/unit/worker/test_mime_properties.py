"""Properties of the renderer over every email the schema accepts: lines within 998 octets, a
message Python's email package reads back to the same addresses, subject and bodies, Bcc only in
the envelope, domains as A-labels, and a render in bounded time."""

from __future__ import annotations

import email
import email.policy
import re
import time
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Any

import idna
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.worker.mime import render_email
from shared.schema import EmailRecord
from tests.unit.email_inputs import email_records

DOMAIN = "pipeline.test"
PROPERTIES = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def outgoing_form(addr_spec: str) -> str:
    """The domain as A-labels (IDNA 2008, UTS 46 mapping), worked out apart from the worker."""
    local_part, _, domain = addr_spec.rpartition("@")
    if domain.isascii():
        return addr_spec
    return f"{local_part}@{idna.encode(domain, uts46=True).decode('ascii')}"


def as_python_reads_it(display_name: str) -> str:
    """Python's reader turns each run of spaces and tabs in an encoded word of a display name
    into one space (RFC 2047 does not); a name that must be encoded is compared so."""
    if re.fullmatch(r"[\t\x20-\x7e]*", display_name) and "=?" not in display_name:
        return display_name
    return re.sub(r"[ \t]+", " ", display_name)


def expected_addresses(values: list[str]) -> list[tuple[str, str]]:
    """(display name, addr-spec) as the schema reads each value, the domain as A-labels."""
    return [
        (as_python_reads_it(name), outgoing_form(addr_spec))
        for name, addr_spec in getaddresses(values)
    ]


def read_back(addresses: tuple[Address, ...]) -> list[tuple[str, str]]:
    # Python's reader keeps raw UTF-8 (an SMTPUTF8 local part) as surrogate escapes.
    return [
        (address.display_name, address.addr_spec.encode("utf-8", "surrogateescape").decode())
        for address in addresses
    ]


def expected_content(body: str) -> str:
    """CRLF after every line, the last too (\\r\\n, \\r and \\n are line endings)."""
    return "\r\n".join(line.decode() for line in body.encode().splitlines()) + "\r\n"


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


@PROPERTIES
@given(email_records())
def test_every_accepted_email_renders_within_998_octets_a_line(fields: dict[str, Any]) -> None:
    data = render_email(EmailRecord.model_validate(fields), DOMAIN).data

    lines = data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    assert len(data.split(b"\r\n\r\n", 1)[0]) <= 32 * 1024, "sendmail's MaxHeadersLength"
    assert not any(b"\r" in line or b"\n" in line for line in lines)
    assert data.endswith(b"\r\n")


@PROPERTIES
@given(email_records())
def test_every_accepted_email_reads_back_as_written(fields: dict[str, Any]) -> None:
    record = EmailRecord.model_validate(fields)
    message = parsed(render_email(record, DOMAIN).data)

    for name, values in [
        ("From", [record.sender]),
        ("To", record.to),
        ("Cc", record.cc),
        ("Reply-To", record.reply_to),
    ]:
        header = message[name]
        assert read_back(header.addresses if header else ()) == expected_addresses(values), name
    assert "Bcc" not in message
    assert message["Subject"] == record.subject
    bodies = {
        part.get_content_type(): part.get_content()
        for part in message.walk()
        if not part.is_multipart()
    }
    if record.text is not None:
        assert bodies["text/plain"] == expected_content(record.text)
    if record.html is not None:
        assert bodies["text/html"] == expected_content(record.html)


@PROPERTIES
@given(email_records())
def test_custom_headers_and_tags_read_back_as_written(fields: dict[str, Any]) -> None:
    record = EmailRecord.model_validate(fields)
    message = parsed(render_email(record, DOMAIN).data)

    for name, value in record.headers.items():
        assert message[name] == value, name
    if record.tags:
        assert message["X-Tags"] == ", ".join(record.tags)


@PROPERTIES
@given(email_records())
def test_domains_go_as_a_labels_and_only_a_non_ascii_local_part_needs_smtputf8(
    fields: dict[str, Any],
) -> None:
    record = EmailRecord.model_validate(fields)
    outgoing = render_email(record, DOMAIN)
    mailboxes = [addr_spec for _, addr_spec in getaddresses([record.sender, *record.recipients])]
    reply_to = [addr_spec for _, addr_spec in getaddresses(record.reply_to)]
    local_parts = [addr_spec.rpartition("@")[0] for addr_spec in [*mailboxes, *reply_to]]

    assert outgoing.sender == outgoing_form(mailboxes[0])
    assert outgoing.recipients == [outgoing_form(addr_spec) for addr_spec in mailboxes[1:]]
    assert outgoing.smtputf8 == (not all(part.isascii() for part in local_parts))
    if not outgoing.smtputf8:
        assert outgoing.data.isascii()
        assert all(address.isascii() for address in [outgoing.sender, *outgoing.recipients])


@PROPERTIES
@given(email_records(), st.integers(1, 3))
def test_every_accepted_email_renders_in_bounded_time(fields: dict[str, Any], runs: int) -> None:
    """A loose bound, to catch what grows faster than the email, not a benchmark."""
    record = EmailRecord.model_validate(fields)
    started = time.perf_counter()
    for _ in range(runs):
        render_email(record, DOMAIN)

    assert (time.perf_counter() - started) / runs < 1.0
