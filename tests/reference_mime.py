"""The email package's rendering of a record: the reference that the worker's own renderer
(services/worker/mime.py, `render_email`) is checked against, and what the naive worker of the
benchmark (tests/bench/naive_worker.py) sends."""

from __future__ import annotations

import email.policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from services.worker.mime import accepted_at_header, message_id_header
from shared.schema import EmailRecord, mailbox


def addresses(values: list[str]) -> list[str]:
    """The bare addresses of `Ana <ana@пример.рф>`-style values for the SMTP envelope, their
    domains as A-labels: `ana@xn--e1afmkfd.xn--p1ai`."""
    return [mailbox(value).outgoing_addr_spec for value in values]


def header_addresses(values: list[str]) -> list[Address]:
    """The addresses for a header, as the schema reads them, their domains as A-labels."""
    header_values = []
    for value in values:
        address = mailbox(value)
        username, _, domain = address.outgoing_addr_spec.rpartition("@")
        header_values.append(Address(address.display_name, username, domain))
    return header_values


def build_message(record: EmailRecord, message_id_domain: str) -> EmailMessage:
    """The MIME message for a record, built by the email package: the reference render_email
    must match. Bcc recipients are in the envelope only, never a header."""
    # Non-ASCII display names and subjects are encoded (RFC 2047) and travel anywhere, as do
    # domains as A-labels; only a non-ASCII local part needs raw UTF-8 headers, which the
    # SMTPUTF8 extension carries.
    utf8_mailbox = any(
        mailbox(value).needs_smtputf8
        for value in [record.sender, *record.recipients, *record.reply_to]
    )
    message = EmailMessage(policy=email.policy.SMTPUTF8 if utf8_mailbox else email.policy.SMTP)
    message["Message-ID"] = message_id_header(record.message_id, message_id_domain)
    message["Date"] = format_datetime(record.created_at)
    message["X-Accepted-At"] = accepted_at_header(record)
    message["From"] = header_addresses([record.sender])
    if record.to:
        message["To"] = header_addresses(record.to)
    if record.cc:
        message["Cc"] = header_addresses(record.cc)
    if record.reply_to:
        message["Reply-To"] = header_addresses(record.reply_to)
    message["Subject"] = record.subject
    if record.tags:
        message["X-Tags"] = ", ".join(record.tags)  # the header Mailpit reads tags from
    for name, value in record.headers.items():
        message[name] = value
    if record.text is not None:
        message.set_content(record.text)
        if record.html is not None:
            message.add_alternative(record.html, subtype="html")
    elif record.html is not None:
        message.set_content(record.html, subtype="html")
    return message
