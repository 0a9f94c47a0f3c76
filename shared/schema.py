"""The wire format of `email.send`: one versioned JSON record per email, UTF-8.

The API writes records with `EmailRecord.to_kafka`; the worker reads them with `parse_record`,
which turns anything it cannot read into a `PoisonRecord` error instead of a crash.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.utils import getaddresses
from typing import Annotated, Any, Final, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

SCHEMA_VERSION: Final = 1

# Bounds on everything that reaches a header, so that rendering any accepted email takes the
# worker milliseconds and every relay takes what it sends. Counts are checked before the items.
MAX_RECIPIENTS: Final = 100  # to + cc + bcc: RFC 5321, 4.5.3.1.8, the RCPTs a server must take
MAX_REPLY_TO: Final = 10  # a reply goes to all: a team's few; a list has an address of its own
MAX_LOCAL_PART_OCTETS: Final = 64  # RFC 5321, 4.5.3.1.1
MAX_ADDR_SPEC_OCTETS: Final = 254  # RFC 5321, 4.5.3.1.3: a 256-octet path, less its "<" and ">"
# A display name goes out as one encoded word (RFC 2047), as readers split several differently:
# 128 characters of up to 4 UTF-8 octets make at most 696 characters, so the longest address
# still fits on one line of its own with "Reply-To: ", within RFC 5322's 998 (2.1.1).
MAX_DISPLAY_NAME_LENGTH: Final = 128
# As written: a display name with every character escaped and quoted, and the addr-spec in <>.
MAX_ADDRESS_LENGTH: Final = 2 * MAX_DISPLAY_NAME_LENGTH + len('"" <>') + MAX_ADDR_SPEC_OCTETS
# A subject or header value: at most one line's worth (RFC 5322, 2.1.1), which the worker folds.
MAX_SUBJECT_LENGTH = 998
MAX_HEADER_NAME_LENGTH: Final = 76  # RFC 5322, 2.1.1: "Name: " and a value start in 78
MAX_HEADER_COUNT = 50
MAX_TAGS = 20
# Every header-bound field together, in UTF-8 octets. Encoded (RFC 2047: 4/3 and a few octets a
# word) and folded, with the headers the worker adds, they stay within 32 KiB (29 KiB at worst):
# sendmail's default MaxHeadersLength for all headers together, the smallest common relay limit
# (Postfix takes 100 KiB per header, header_size_limit; Exchange's pickup directory 64 KiB in
# all). Relays truncate or refuse what is over.
MAX_HEADER_FIELDS_OCTETS: Final = 16 * 1024
COUNT_LIMITS: Final = {
    "reply_to": (MAX_REPLY_TO, "addresses"),
    "headers": (MAX_HEADER_COUNT, "headers"),
    "tags": (MAX_TAGS, "tags"),
}

# Message ids derived from an Idempotency-Key live in their own UUID namespace.
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1d7c1e-8a51-4d0c-9d43-0b8f5e0e6a10")

# Header names are printable ASCII without a colon (RFC 5322, 2.2).
HEADER_NAME = re.compile(r"[!-9;-~]+")
# The headers the worker writes itself from the record's fields: a custom header must not
# override them, or a client could forge the recipients or the Message-ID.
RESERVED_HEADERS = frozenset(
    {
        "bcc", "cc", "content-transfer-encoding", "content-type", "date", "from",
        "message-id", "mime-version", "reply-to", "return-path", "sender", "subject", "to",
        "x-accepted-at",  # the API's acceptance time: the sink measures latency from it
    }
)  # fmt: skip


# Every character Python's email package treats as the end of a header line (str.splitlines),
# and NUL: any of them in a header would let a client inject headers of its own.
LINE_BREAKS = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\0")


def _utf8(value: str) -> str:
    """JSON allows lone surrogates (\\ud800), which no email can carry."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return value


def _no_line_breaks(value: str) -> str:
    _utf8(value)
    if not LINE_BREAKS.isdisjoint(value):
        raise ValueError("must not contain CR, LF, NUL or other line-breaking characters")
    return value


@dataclass(frozen=True)
class Mailbox:
    """One address as the schema reads it: `Ana <ana@пример.рф>`, and how the worker sends it."""

    display_name: str  # "" when there is none
    addr_spec: str  # as given: ana@пример.рф
    # The domain as A-labels (IDNA 2008), in the envelope and the headers alike, so that only
    # a non-ASCII local part needs the server's SMTPUTF8: ana@xn--e1afmkfd.xn--p1ai
    outgoing_addr_spec: str

    @property
    def needs_smtputf8(self) -> bool:
        return not self.outgoing_addr_spec.isascii()


@functools.lru_cache(maxsize=4096)
def mailbox(value: str) -> Mailbox:
    """One address, bare (`ana@example.com`) or with a display name (`Ana <ana@example.com>`);
    ValueError when it is not one valid address within the bounds.

    Cached: the same senders and recipients come back all day, and checking one costs more
    than the rest of a record's validation (an invalid one raises, and is not cached)."""
    _no_line_breaks(value)
    parsed = getaddresses([value])
    if len(parsed) != 1 or not parsed[0][1]:
        raise ValueError(f"expected one email address such as ana@example.com, got {value!r}")
    display_name, addr_spec = parsed[0]
    if len(display_name) > MAX_DISPLAY_NAME_LENGTH:
        raise ValueError(
            f"the display name has {len(display_name)} characters, at most "
            f"{MAX_DISPLAY_NAME_LENGTH} fit in one header line: shorten it"
        )
    local_part, _, domain = addr_spec.rpartition("@")
    if len(local_part.encode()) > MAX_LOCAL_PART_OCTETS:
        raise ValueError(
            f"{value!r} is not a valid email address: the part before the @-sign has "
            f"{len(local_part.encode())} octets (UTF-8), at most {MAX_LOCAL_PART_OCTETS} "
            "(RFC 5321, 4.5.3.1.1)"
        )
    try:
        # It checks the length of the whole address (254 octets), and converts the domain.
        validated = validate_email(addr_spec, check_deliverability=False)
    except EmailNotValidError as error:
        raise ValueError(f"{value!r} is not a valid email address: {error}") from None
    outgoing_addr_spec = addr_spec if domain.isascii() else f"{local_part}@{validated.ascii_domain}"
    if len(outgoing_addr_spec.encode()) > MAX_ADDR_SPEC_OCTETS:
        raise ValueError(
            f"{value!r} is not a valid email address: with its domain as A-labels "
            f"({outgoing_addr_spec}) it has more than {MAX_ADDR_SPEC_OCTETS} octets"
        )
    return Mailbox(display_name, addr_spec, outgoing_addr_spec)


def _one_address(value: str) -> str:
    _no_line_breaks(value)  # as given: strip() would hide a trailing CRLF
    address = value.strip()
    mailbox(address)
    return address


# The length first: reading an address costs more the longer it is.
Address = Annotated[str, Field(max_length=MAX_ADDRESS_LENGTH), AfterValidator(_one_address)]
HeaderValue = Annotated[str, Field(max_length=MAX_SUBJECT_LENGTH), AfterValidator(_no_line_breaks)]
Tag = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_no_line_breaks)]
Body = Annotated[str, AfterValidator(_utf8)]
# The key of every record about the email, and the start of its events' ids: no "/" in it.
MessageId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]


class EmailContent(BaseModel):
    """What a client asks to send: the body of `POST /emails`, and the heart of each record."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    sender: Address = Field(alias="from")
    to: Annotated[list[Address], Field(max_length=MAX_RECIPIENTS)] = []
    cc: Annotated[list[Address], Field(max_length=MAX_RECIPIENTS)] = []
    bcc: Annotated[list[Address], Field(max_length=MAX_RECIPIENTS)] = []
    reply_to: Annotated[list[Address], Field(max_length=MAX_REPLY_TO)] = []
    subject: HeaderValue
    text: Body | None = None
    html: Body | None = None
    headers: Annotated[dict[str, HeaderValue], Field(max_length=MAX_HEADER_COUNT)] = {}
    tags: Annotated[list[Tag], Field(max_length=MAX_TAGS)] = []

    @model_validator(mode="before")
    @classmethod
    def _recipients_counted_first(cls, fields: Any) -> Any:
        """Before any address is read: reading 20,000 of them took a second only to refuse them."""
        if isinstance(fields, dict):
            counts = {
                name: len(fields[name])
                for name in ("to", "cc", "bcc")
                if isinstance(fields.get(name), list)
            }
            if sum(counts.values()) > MAX_RECIPIENTS:
                given = ", ".join(f"{count} in {name}" for name, count in counts.items() if count)
                raise ValueError(
                    f"at most {MAX_RECIPIENTS} recipients in to, cc and bcc together, got "
                    f"{sum(counts.values())} ({given}): send the email in batches"
                )
        return fields

    @field_validator("reply_to", "headers", "tags", mode="before")
    @classmethod
    def _counted_first(cls, items: Any, info: ValidationInfo) -> Any:
        limit, what = COUNT_LIMITS[str(info.field_name)]
        if isinstance(items, list | dict) and len(items) > limit:
            raise ValueError(f"at most {limit} {what}, got {len(items)}")
        return items

    @model_validator(mode="after")
    def _deliverable(self) -> EmailContent:
        if not self.recipients:
            raise ValueError("at least one recipient is needed in to, cc or bcc")
        if self.text is None and self.html is None:
            raise ValueError("a body is needed: give text, html or both")
        return self

    @model_validator(mode="after")
    def _header_fields_within_bound(self) -> EmailContent:
        header_octets = sum(
            len(value.encode())
            for value in [
                self.sender, *self.to, *self.cc, *self.reply_to, self.subject, *self.tags,
                *self.headers, *self.headers.values(),
            ]
        )  # fmt: skip
        if header_octets > MAX_HEADER_FIELDS_OCTETS:
            raise ValueError(
                f"from, to, cc, reply_to, subject, headers and tags hold {header_octets} octets "
                f"of UTF-8 together, at most {MAX_HEADER_FIELDS_OCTETS} fit in the header "
                "section every relay takes: shorten display names, the subject or the headers"
            )
        return self

    @field_validator("headers")
    @classmethod
    def _custom_headers_only(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            if not HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name!r} must be printable ASCII without ':'")
            if len(name) > MAX_HEADER_NAME_LENGTH:
                raise ValueError(
                    f"header name {name!r} has {len(name)} characters, at most "
                    f"{MAX_HEADER_NAME_LENGTH}, so that it and its value start on a line of 78 "
                    "(RFC 5322, 2.1.1)"
                )
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(
                    f"header {name!r} cannot be set in headers: it comes from the email's own "
                    "fields (from, to, cc, bcc, reply_to, subject)"
                )
        return headers

    @property
    def recipients(self) -> list[str]:
        return [*self.to, *self.cc, *self.bcc]


class EmailRecord(EmailContent):
    """One record of `email.send`. A new field means a new schema_version."""

    schema_version: Literal[1] = SCHEMA_VERSION
    message_id: MessageId
    created_at: datetime

    def to_kafka(self) -> tuple[bytes, bytes]:
        """(key, value): keyed by message id, so every copy of one email goes to one partition."""
        fields = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        # The envelope first, so a person reading `kafka-console-consumer.sh` output sees it.
        envelope = {
            name: fields.pop(name) for name in ("schema_version", "message_id", "created_at")
        }
        value = json.dumps({**envelope, **fields}, ensure_ascii=False, separators=(",", ":"))
        return self.message_id.encode(), value.encode()


def new_message_id() -> str:
    """A fresh message id: a request without an Idempotency-Key is a new email each time."""
    return str(uuid.uuid4())


def message_id_for(idempotency_key: str, fingerprint: str, index: int | None = None) -> str:
    """The message id of an email sent with an Idempotency-Key: the same key and body (its
    fingerprint, services/api/idempotency.py) always give the same id, so a retry after a 503
    is the same email; a different body a different id, so a key reused once the API has
    forgotten it is a new email, never one skipped as delivered. `index`: its place in a batch.

    A key is printable ASCII and a fingerprint hex: no newline in either, so the name is
    unambiguous."""
    name = f"{idempotency_key}\n{fingerprint}"
    if index is not None:
        name += f"\n{index}"
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, name))


class PoisonRecord(Exception):
    """A record no version of the worker can deliver: it goes to the dead-letter topic."""


def parse_record(value: bytes | None) -> EmailRecord:
    if value is None:
        raise PoisonRecord("the record has no value")
    try:
        record = EmailRecord.model_validate_json(value)
        # A record read from the topic must say its version: only a new one gets it by default.
        if "schema_version" in record.model_fields_set:
            return record
    except ValidationError:
        pass  # the slower steps below say exactly what is wrong, for the dead letter's reason
    try:
        document = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise PoisonRecord(f"the record is not UTF-8: {error}") from None
    except json.JSONDecodeError as error:
        raise PoisonRecord(f"the record is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise PoisonRecord(f"the record is JSON but not an object: {type(document).__name__}")
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise PoisonRecord(
            f"unknown schema_version {version!r}: this worker reads version {SCHEMA_VERSION}"
        )
    try:
        return EmailRecord.model_validate(document)
    except ValidationError as error:
        raise PoisonRecord(
            f"the record does not match schema version 1: {describe(error)}"
        ) from None


def describe(error: ValidationError) -> str:
    """A validation error on one line: `to.0: value is not a valid email address; ...`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'record'}: "
        f"{problem['msg'].removeprefix('Value error, ')}"
        for problem in error.errors()
    )
