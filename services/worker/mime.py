"""The MIME message for a record, rendered straight to the bytes of SMTP DATA. No I/O here.

`delivery.build_message` is the reference it must match, and the fallback for the rare email
whose mailboxes need SMTPUTF8; this path skips its header parsing and generator (~1 ms a mail).
"""

from __future__ import annotations

import email.policy
import functools
import re
import secrets
from dataclasses import dataclass
from email import quoprimime
from email.header import Header
from email.utils import format_datetime, formataddr, getaddresses

from services.worker.delivery import accepted_at_header, build_message, message_id_header
from shared.schema import EmailRecord

CRLF = "\r\n"
FOLD_AT = 78  # RFC 5322, 2.1.1: lines SHOULD stay within 78 characters...
MAX_LINE = 998  # ...and MUST stay within 998, CRLF excluded
MAX_BOUNDARY = 70  # RFC 2046, 5.1.1
# The longest address that still fits on a line of its own in the longest address header.
LONGEST_ADDRESS = MAX_LINE - len("Reply-To: ,")

# Printable ASCII and tab: unstructured text a header can carry as is, unless it holds "=?",
# which a reader would take for the start of an RFC 2047 encoded word.
PLAIN_HEADER_TEXT = re.compile(r"[\t\x20-\x7e]*")
# What a 7bit body cannot hold (RFC 2045, 2.7): any octet but printable ASCII, tab, and CRLF.
NOT_7BIT = re.compile(rb"[^\t\r\n\x20-\x7e]")


@dataclass(frozen=True)
class OutgoingEmail:
    message_id: str  # the Message-ID header value, e.g. "<uuid@domain>"
    sender: str  # envelope MAIL FROM: the bare address of record.sender
    recipients: list[str]  # envelope RCPT TO: bare addresses of to + cc + bcc, in that order
    data: bytes  # the whole message, CRLF line endings, ready for SMTP DATA
    smtputf8: bool  # True only when a mailbox (not a display name) is non-ASCII


def render_email(record: EmailRecord, message_id_domain: str) -> OutgoingEmail:
    """The message `build_message` makes, as 7-bit clean bytes; Bcc is in the envelope only."""
    message_id = message_id_header(record.message_id, message_id_domain)
    sender = parsed_address(record.sender)[1]
    recipients = [parsed_address(value)[1] for value in record.recipients]
    reply_to = [parsed_address(value)[1] for value in record.reply_to]
    if not all(mailbox.isascii() for mailbox in [sender, *recipients, *reply_to]):
        message = build_message(record, message_id_domain)
        data = message.as_bytes(policy=email.policy.SMTPUTF8)
        return OutgoingEmail(message_id, sender, recipients, data, smtputf8=True)
    content_fields, body = mime_body(record)
    fields = [*header_fields(record, message_id), *content_fields]
    data = (CRLF.join(fields) + CRLF + CRLF).encode("ascii") + body
    return OutgoingEmail(message_id, sender, recipients, data, smtputf8=False)


def header_fields(record: EmailRecord, message_id: str) -> list[str]:
    """Every header but the Content-* ones, in build_message's order."""
    fields = [
        f"Message-ID: {message_id}",
        f"Date: {format_datetime(record.created_at)}",
        f"X-Accepted-At: {accepted_at_header(record)}",
        address_field("From", [record.sender]),
    ]
    if record.to:
        fields.append(address_field("To", record.to))
    if record.cc:
        fields.append(address_field("Cc", record.cc))
    if record.reply_to:
        fields.append(address_field("Reply-To", record.reply_to))
    fields.append(unstructured_field("Subject", record.subject))
    if record.tags:
        fields.append(unstructured_field("X-Tags", ", ".join(record.tags)))
    # build_message's set_content clears every Content-* header, custom ones included: the
    # body's own Content-* headers describe it, and only they may.
    fields.extend(
        unstructured_field(name, value)
        for name, value in record.headers.items()
        if not name.lower().startswith("content-")
    )
    fields.append("MIME-Version: 1.0")
    return fields


@functools.lru_cache(maxsize=4096)
def parsed_address(value: str) -> tuple[str, str]:
    """(display name, mailbox) of one schema-validated `Ana <ana@example.com>`-style value."""
    return getaddresses([value])[0]


@functools.lru_cache(maxsize=4096)
def rendered_address(value: str) -> str:
    """One address for a header: ASCII names quoted when needed, others as encoded words."""
    name, mailbox = parsed_address(value)
    rendered = formataddr((name, mailbox), charset="utf-8")
    if len(rendered) <= LONGEST_ADDRESS:
        return rendered
    # Too long for one line: only encoded words can fold a name anywhere. formataddr makes a
    # single word, which readers decode best; Header splits the name into several, and the
    # mailbox goes on a line of its own, as Header cannot leave room for it on the last one.
    return f"{Header(name, 'utf-8').encode(linesep=CRLF)}{CRLF} <{mailbox}>"


def address_field(name: str, values: list[str]) -> str:
    """`To: a, b`, folded after a comma wherever the next address would pass 78 characters."""
    addresses = [rendered_address(value) for value in values]
    pieces = [f"{address}," for address in addresses[:-1]] + addresses[-1:]
    field = [f"{name}:"]
    line_length = len(name) + 1
    for index, piece in enumerate(pieces):
        first_line, folded, _ = piece.partition(CRLF)
        if index > 0 and line_length + 1 + len(first_line) > FOLD_AT:
            field.append(CRLF)
            line_length = 0
        field.append(f" {piece}")
        if folded:
            line_length = len(piece) - piece.rindex(CRLF) - len(CRLF)
        else:
            line_length += 1 + len(piece)
    return "".join(field)


def unstructured_field(name: str, value: str) -> str:
    """`Subject: value`: as is when plain and short, else folded, encoded when it must be."""
    plain = PLAIN_HEADER_TEXT.fullmatch(value) is not None and "=?" not in value
    if plain:
        field = f"{name}: {value}"
        if len(field) <= FOLD_AT:
            return field
        # Folding ASCII happens only at spaces: a long word can leave a line past 998.
        folded = folded_field(name, value, "us-ascii")
        if max(len(line) for line in folded.split(CRLF)) <= MAX_LINE:
            return folded
    return folded_field(name, value, "utf-8")


def folded_field(name: str, value: str, charset: str) -> str:
    encoded = Header(value, charset, header_name=name).encode(linesep=CRLF)
    # With no room left on the first line (a long header name), Header starts the value on the
    # next one, and that fold would add a space to the value as a reader unfolds it.
    return f"{name}: {encoded.removeprefix(CRLF + ' ')}"


def mime_body(record: EmailRecord) -> tuple[list[str], bytes]:
    """(the Content-* headers of the message, its body): one text part, or both alternatives."""
    if record.text is not None and record.html is not None:
        return alternative_body(record.message_id, record.text, record.html)
    if record.text is not None:
        return text_part("plain", record.text)
    if record.html is not None:
        return text_part("html", record.html)
    raise ValueError("the record has no body: give text, html or both")


def text_part(subtype: str, content: str) -> tuple[list[str], bytes]:
    transfer_encoding, body = encoded_text(content)
    content_fields = [
        f'Content-Type: text/{subtype}; charset="utf-8"',
        f"Content-Transfer-Encoding: {transfer_encoding}",
    ]
    return content_fields, body


def alternative_body(message_id: str, text: str, html: str) -> tuple[list[str], bytes]:
    parts = [text_part("plain", text), text_part("html", html)]
    boundary = multipart_boundary(message_id, [part_body for _, part_body in parts])
    delimiter = f"--{boundary}{CRLF}".encode("ascii")
    body = b"".join(
        # The CRLF before each boundary belongs to the delimiter, not to the part above it.
        delimiter + (CRLF.join(content_fields) + CRLF + CRLF).encode("ascii") + part_body + b"\r\n"
        for content_fields, part_body in parts
    )
    content_fields = [f'Content-Type: multipart/alternative;{CRLF} boundary="{boundary}"']
    return content_fields, body + f"--{boundary}--{CRLF}".encode("ascii")


def multipart_boundary(message_id: str, part_bodies: list[bytes]) -> str:
    """The same boundary on every attempt, unless a part happens to contain it."""
    # Quoted-printable never holds "=_" (its "=" is always followed by hex digits or CRLF), so
    # only a 7bit part could collide with this one.
    boundary = f"=_alt_{message_id}"[:MAX_BOUNDARY]
    while any(boundary.encode("ascii") in part_body for part_body in part_bodies):
        boundary = f"=_alt_{secrets.token_hex(16)}"
    return boundary


def encoded_text(content: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, body) for UTF-8 text: CRLF after every line, the last too.

    Line endings \\r\\n, \\r and \\n all become CRLF, and an unterminated last line is ended,
    as build_message does (bytes.splitlines, unlike str.splitlines, splits at only those three).
    """
    lines = content.encode("utf-8").splitlines()
    body = b"\r\n".join(lines) + b"\r\n"
    if max(map(len, lines), default=0) <= MAX_LINE and NOT_7BIT.search(body) is None:
        return "7bit", body
    # Latin-1 maps each UTF-8 octet to one character, which body_encode then quotes, in lines
    # of RFC 2045's 76 characters (the stdlib's content manager passes 78).
    quoted = quoprimime.body_encode(body.decode("latin-1"), eol=CRLF)
    return "quoted-printable", quoted.encode("ascii")
