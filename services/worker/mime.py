"""The MIME message for a record, rendered straight to the bytes of SMTP DATA. No I/O here.

It is the message the email package makes (tests/reference_mime.py, the reference that
tests/unit/worker/test_mime.py checks it against), without that package's header parsing, folding
and generator: they cost about 1 ms an email and grow faster than the text, where this renders in
linear time, so that the largest email the schema accepts takes a few milliseconds
(`python -m tests.unit.worker.largest_email`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from shared.schema import EmailRecord, mailbox

CRLF = "\r\n"
FOLD_AT = 78  # RFC 5322, 2.1.1: lines SHOULD stay within 78 characters...
MAX_LINE = 998  # ...and MUST stay within 998, CRLF excluded
ENCODED_LINE = 76  # RFC 2047, 2: a line holding an encoded word, and the word 75 at most
MAX_BOUNDARY = 70  # RFC 2046, 5.1.1

# Printable ASCII and tab: unstructured text a header can carry as is, unless it holds "=?",
# which a reader would take for the start of an RFC 2047 encoded word, or starts with white
# space, which readers strip after the colon (an encoded word keeps it).
PLAIN_HEADER_TEXT = re.compile(r"(?![ \t])[\t\x20-\x7e]*")
# What folding keeps together: a word with the white space before it (a fold goes before the
# white space), and white space at the end with the word before it (a line of white space
# alone is obsolete syntax, RFC 5322, 3.2.2).
FOLDABLE_CHUNK = re.compile(r"[ \t]*[^ \t]+(?:[ \t]+$)?|[ \t]+$")
# A display name that needs neither quotes nor encoding: atoms (RFC 5322, 3.2.3) one space apart.
ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?: [A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*")
# What a quoted string can hold as is (RFC 5322, 3.2.4): printable ASCII and tab.
QUOTABLE = re.compile(r"[\t\x20-\x7e]*")
# RFC 2047's Q encoding of each octet (as a Latin-1 character): letters, digits and "!*+-/"
# as they are (the characters allowed in a phrase, 5(3)), space as "_", every other "=XX".
Q_AS_IS = frozenset(string.ascii_letters + string.digits + "!*+-/")
Q_ENCODING = {
    octet: chr(octet) if chr(octet) in Q_AS_IS else f"={octet:02X}" for octet in range(256)
} | {ord(" "): "_"}
# What a 7bit body cannot hold (RFC 2045, 2.7): any octet but printable ASCII, tab, and CRLF.
NOT_7BIT = re.compile(rb"[^\t\r\n\x20-\x7e]")


@dataclass(frozen=True)
class OutgoingEmail:
    message_id: str  # the Message-ID header value, e.g. "<uuid@domain>"
    sender: str  # envelope MAIL FROM: the bare address of record.sender
    recipients: list[str]  # envelope RCPT TO: bare addresses of to + cc + bcc, in that order
    data: bytes  # the whole message, CRLF line endings, ready for SMTP DATA
    smtputf8: bool  # True only when a local part is non-ASCII: domains go as A-labels


def message_id_header(message_id: str, domain: str) -> str:
    """The Message-ID header: the same for every attempt, so receivers can spot a repeat."""
    return f"<{message_id}@{domain}>"


def accepted_at(record: EmailRecord) -> datetime:
    """When the API accepted the email, in UTC; a created_at without a zone (not the API's
    doing, another producer's) is read as UTC too."""
    created_at = record.created_at
    if created_at.tzinfo is None:
        return created_at.replace(tzinfo=UTC)
    return created_at.astimezone(UTC)


def accepted_at_header(record: EmailRecord) -> str:
    """X-Accepted-At, to the microsecond (Date has whole seconds), so that the receiver can
    measure the whole trip: `2026-11-25T23:10:41.123456+00:00`."""
    return accepted_at(record).isoformat(timespec="microseconds")


def render_email(record: EmailRecord, message_id_domain: str) -> OutgoingEmail:
    """The message the email package makes, 7-bit clean but for a mailbox with a non-ASCII local
    part (RFC 6532); domains go as A-labels, and Bcc is in the envelope only."""
    message_id = message_id_header(record.message_id, message_id_domain)
    sender = mailbox(record.sender).outgoing_addr_spec
    recipients = [mailbox(value).outgoing_addr_spec for value in record.recipients]
    smtputf8 = any(
        mailbox(value).needs_smtputf8
        for value in [record.sender, *record.recipients, *record.reply_to]
    )
    content_fields, body = mime_body(record)
    fields = [*header_fields(record, message_id), *content_fields]
    data = (CRLF.join(fields) + CRLF + CRLF).encode("utf-8" if smtputf8 else "ascii") + body
    return OutgoingEmail(message_id, sender, recipients, data, smtputf8)


def header_fields(record: EmailRecord, message_id: str) -> list[str]:
    """Every header but the Content-* ones, in the reference's order (tests/reference_mime.py)."""
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
    # The email package's set_content clears every Content-* header, custom ones included: the
    # body's own Content-* headers describe it, and only they may.
    fields.extend(
        unstructured_field(name, value)
        for name, value in record.headers.items()
        if not name.lower().startswith("content-")
    )
    fields.append("MIME-Version: 1.0")
    return fields


@functools.lru_cache(maxsize=4096)
def rendered_address(value: str) -> str:
    """One address for a header: `Ana <ana@xn--e1afmkfd.xn--p1ai>`, its name quoted or encoded
    when it must be. The schema's bounds keep it within one line of 998 octets."""
    address = mailbox(value)
    if not address.display_name:
        return address.outgoing_addr_spec
    return f"{display_phrase(address.display_name)} <{address.outgoing_addr_spec}>"


def display_phrase(name: str) -> str:
    """A display name as atoms, a quoted string, or else one encoded word: readers join several
    differently (Python's puts a space between them, RFC 2047, 6.2 says not to)."""
    # Readers decode "=?" as the start of an encoded word, even between quotes.
    if "=?" not in name:
        if ATOMS.fullmatch(name):
            return name
        if QUOTABLE.fullmatch(name):
            return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    q_word, b_word = encoded_word("q", q_encoded(name)), encoded_word("b", b_encoded(name))
    return min(q_word, b_word, key=len)


def address_field(name: str, values: list[str]) -> str:
    """`To: a, b`, folded after a comma wherever the next address would pass 78 characters."""
    addresses = [rendered_address(value) for value in values]
    first, *others = [f"{address}," for address in addresses[:-1]] + addresses[-1:]
    lines = [f"{name}: {first}"]
    for piece in others:
        if len(lines[-1]) + 1 + len(piece) > FOLD_AT:
            lines.append(f" {piece}")
        else:
            lines[-1] += f" {piece}"
    return CRLF.join(lines)


def unstructured_field(name: str, value: str) -> str:
    """`Subject: value`: as is when plain, folded at its spaces; else in encoded words."""
    if PLAIN_HEADER_TEXT.fullmatch(value) is not None and "=?" not in value:
        folded = folded_at_white_space(name, value)
        if folded is not None:
            return folded
    # The first word fills what the name leaves of the line, or starts it if the name is long:
    # a fold before it would add a space to the value as a reader unfolds it.
    first_word_room = max(ENCODED_LINE - len(f"{name}: "), len(encoded_word("q", "=XX" * 4)))
    return f"{name}: " + f"{CRLF} ".join(encoded_words(value, first_word_room))


def folded_at_white_space(name: str, value: str) -> str | None:
    """The field folded before white space within 78 characters where it can be; None when a
    word is too long for a line of 998 octets, where only encoded words can split it."""
    chunks = FOLDABLE_CHUNK.findall(value) or [""]
    lines = [f"{name}: {chunks[0]}"]
    for chunk in chunks[1:]:
        if len(lines[-1]) + len(chunk) > FOLD_AT:
            lines.append(chunk)
        else:
            lines[-1] += chunk
    if max(map(len, lines)) > MAX_LINE:
        return None
    return CRLF.join(lines)


def encoded_word(encoding: str, payload: str) -> str:
    return f"=?utf-8?{encoding}?{payload}?="


def q_encoded(text: str) -> str:
    return text.encode("utf-8").decode("latin-1").translate(Q_ENCODING)


def b_encoded(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def encoded_words(text: str, first_word_room: int) -> list[str]:
    """Text as UTF-8 encoded words (RFC 2047) of whole characters (5), Q or B, whichever is
    shorter: the first within first_word_room characters, the others within 75."""
    encoding, encode = min(("q", q_encoded), ("b", b_encoded), key=lambda pair: len(pair[1](text)))
    overhead = len(encoded_word(encoding, ""))
    words = []
    room = first_word_room - overhead
    start = 0
    while True:
        # A character takes at least one encoded character: `room` characters at most fit.
        end = min(len(text), start + room)
        payload = encode(text[start:end])
        while len(payload) > room:
            end = start + max(1, (end - start) * room // len(payload))
            payload = encode(text[start:end])
        words.append(encoded_word(encoding, payload))
        if end == len(text):
            return words
        start = end
        room = ENCODED_LINE - 1 - overhead


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
    as the email package does (bytes.splitlines, unlike str.splitlines, splits at only those
    three).
    """
    lines = content.encode("utf-8").splitlines()
    body = b"\r\n".join(lines) + b"\r\n"
    if max(map(len, lines), default=0) <= MAX_LINE and NOT_7BIT.search(body) is None:
        return "7bit", body
    # In lines of RFC 2045's 76 characters, CRLF kept as the line ending it finds first, and a
    # line of a lone "." quoted; ten times as fast as quoprimime, which builds it in Python.
    return "quoted-printable", binascii.b2a_qp(body, quotetabs=False, istext=True, header=False)
