"""The wire format of `email.send`: one versioned JSON record per email, UTF-8.

The API writes records with `EmailRecord.to_kafka`; the worker reads them with `parse_record`,
which turns anything it cannot read into a `PoisonRecord` error instead of a crash.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from datetime import datetime
from email.utils import getaddresses
from typing import Annotated, Final, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

SCHEMA_VERSION: Final = 1
MAX_SUBJECT_LENGTH = 998  # RFC 5322's limit on the length of one header line
MAX_HEADER_COUNT = 50
MAX_TAGS = 20

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


@functools.lru_cache(maxsize=4096)
def _one_address(value: str) -> str:
    """One address, bare (`ana@example.com`) or with a display name (`Ana <ana@example.com>`).

    Cached: the same senders and recipients come back all day, and checking one costs more
    than the rest of a record's validation (an invalid one raises, and is not cached)."""
    _no_line_breaks(value)
    parsed = getaddresses([value])
    if len(parsed) != 1 or not parsed[0][1]:
        raise ValueError(f"expected one email address such as ana@example.com, got {value!r}")
    try:
        validate_email(parsed[0][1], check_deliverability=False)
    except EmailNotValidError as error:
        raise ValueError(f"{value!r} is not a valid email address: {error}") from None
    return value.strip()


Address = Annotated[str, AfterValidator(_one_address)]
HeaderValue = Annotated[str, Field(max_length=MAX_SUBJECT_LENGTH), AfterValidator(_no_line_breaks)]
Tag = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_no_line_breaks)]
Body = Annotated[str, AfterValidator(_utf8)]


class EmailContent(BaseModel):
    """What a client asks to send: the body of `POST /emails`, and the heart of each record."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    sender: Address = Field(alias="from")
    to: list[Address] = []
    cc: list[Address] = []
    bcc: list[Address] = []
    reply_to: list[Address] = []
    subject: HeaderValue
    text: Body | None = None
    html: Body | None = None
    headers: Annotated[dict[str, HeaderValue], Field(max_length=MAX_HEADER_COUNT)] = {}
    tags: Annotated[list[Tag], Field(max_length=MAX_TAGS)] = []

    @model_validator(mode="after")
    def _deliverable(self) -> EmailContent:
        if not self.recipients:
            raise ValueError("at least one recipient is needed in to, cc or bcc")
        if self.text is None and self.html is None:
            raise ValueError("a body is needed: give text, html or both")
        return self

    @field_validator("headers")
    @classmethod
    def _custom_headers_only(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            if not HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name!r} must be printable ASCII without ':'")
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
    message_id: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]
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


def message_id_for(idempotency_key: str | None) -> str:
    """The same Idempotency-Key always gives the same message id; no key, a fresh one."""
    if idempotency_key is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, idempotency_key))


class PoisonRecord(Exception):
    """A record no version of the worker can deliver: it goes to the dead-letter topic."""


class _RecordAsRead(EmailRecord):
    """A record read from the topic must say its version; only a new one gets it by default."""

    schema_version: Literal[1]


def parse_record(value: bytes | None) -> EmailRecord:
    if value is None:
        raise PoisonRecord("the record has no value")
    try:
        checked = _RecordAsRead.model_validate_json(value)
        return EmailRecord.model_construct(**dict(checked))
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
