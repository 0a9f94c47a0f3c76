"""The wire format of `email.events`: one versioned JSON event per change of an email's state,
keyed by message id, UTF-8 (docs/events.md).

An event's id is a function of what it says, so an event built again (after a crash, from the
dedupe store's row) has the same id and the same bytes; `parse_event` reads one back and turns
anything it cannot read into an `UnreadableEvent` error.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, NamedTuple, Protocol, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)

from shared.schema import (
    MAX_ADDRESS_LENGTH,
    MAX_RECIPIENTS,
    Address,
    EmailRecord,
    HeaderValue,
    MessageId,
    Tag,
    mailbox,
)

EVENTS_SCHEMA_VERSION: Final = 1
SCHEMA_VERSION_HEADER: Final = str(EVENTS_SCHEMA_VERSION).encode()
# Event ids live in a UUID namespace of their own: no message id can ever equal one.
EVENTS_NAMESPACE: Final = uuid.UUID("3b878cd0-d416-47b6-a040-b77100119a48")
_NAMESPACE_BYTES: Final = EVENTS_NAMESPACE.bytes

EventType = Literal["accepted", "sent", "deferred", "bounced", "suppressed", "dead_lettered"]
EVENT_TYPES: Final[tuple[EventType, ...]] = (
    "accepted", "sent", "deferred", "bounced", "suppressed", "dead_lettered",
)  # fmt: skip
# Each recipient of an accepted email ends with exactly one of these, and all three share
# one id per recipient (`final_event_id`): two different endings can never both count.
FINAL_TYPES: Final[frozenset[EventType]] = frozenset({"sent", "bounced", "suppressed"})
# An event's JSON opens with its envelope: schema_version, event_id, type, message_id, at,
# record. to_kafka writes these two itself, ahead of what pydantic serialises.
WRITTEN_AHEAD: Final = {"schema_version", "event_id"}

# A relay's reply can run to many lines; an event keeps the start, as a dead letter does.
MAX_REPLY_TEXT: Final = 1000
MAX_TOPIC_NAME: Final = 249  # Kafka's own limit
ENHANCED_STATUS = r"[245]\.\d{1,3}\.\d{1,3}"  # RFC 3463: class.subject.detail
LEADING_ENHANCED_STATUS = re.compile(rf"({ENHANCED_STATUS})(?:\s+|$)")


class UnreadableEvent(ValueError):
    """An event this reader cannot read: not JSON, another version, or not what its type says."""


class ProducerRecord(NamedTuple):
    """What to produce: the key (the message id), the value and the headers."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def event_record(message_id: str, event_type: EventType, value: bytes) -> ProducerRecord:
    """An event's record: keyed by message id, so an email's events keep their order in one
    partition, with its schema version and type as headers, readable without parsing it."""
    headers = [("schema_version", SCHEMA_VERSION_HEADER), ("type", event_type.encode())]
    return ProducerRecord(message_id.encode(), value, headers)


def recipient_address(value: str) -> str:
    """How events, the dedupe store and the SMTP envelope name a recipient: the schema's
    address without its display name, the domain as A-labels.

    `Ana <ana@пример.рф>` is `ana@xn--e1afmkfd.xn--p1ai`; a ValueError if it is not an address."""
    return mailbox(value.strip()).outgoing_addr_spec


def as_utc(moment: datetime) -> datetime:
    """Events say when in UTC; a time without a zone is taken as UTC, as the worker reads
    a record's created_at."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


Recipient = Annotated[str, Field(max_length=MAX_ADDRESS_LENGTH), AfterValidator(recipient_address)]
Timestamp = Annotated[datetime, AfterValidator(as_utc)]
TopicName = Annotated[str, Field(min_length=1, max_length=MAX_TOPIC_NAME)]
Attempt = Annotated[int, Field(ge=0)]  # 0: the try from email.send; n: the n-th retry


def _kept_short_and_utf8(text: Any) -> Any:
    """The start of a reply, in UTF-8: aiosmtplib hands over the bytes of a reply that is not
    UTF-8 as lone surrogates (surrogateescape), which no JSON can hold; each becomes U+FFFD."""
    if not isinstance(text, str):
        return text
    text = text[:MAX_REPLY_TEXT]
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        return text.encode("utf-8", "replace").decode("utf-8")


class Reply(BaseModel):
    """A server's reply (`550 5.1.1 no such mailbox`), or one the worker writes in its words
    when there was none, as Postfix does (`5.6.7` for a non-ASCII address a relay without
    SMTPUTF8 cannot take)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: Annotated[int, Field(ge=200, le=599)]
    enhanced: Annotated[str, Field(pattern=f"^{ENHANCED_STATUS}$")] | None
    text: Annotated[str, BeforeValidator(_kept_short_and_utf8)]

    @classmethod
    def of(cls, code: int, message: str) -> Reply:
        """A reply as aiosmtplib hands it over: the enhanced status (RFC 3463) taken off the
        front of each line when its class is the code's, the lines joined by spaces."""
        enhanced = None
        lines = []
        for line in message.splitlines():
            status = LEADING_ENHANCED_STATUS.match(line)
            if status and status[1][0] == str(code)[0] and enhanced in (None, status[1]):
                enhanced = status[1]
                line = line[status.end() :]
            lines.append(line.strip())
        return cls(code=code, enhanced=enhanced, text=" ".join(line for line in lines if line))


class Located(Protocol):
    """A record's place in Kafka: aiokafka's ConsumerRecord and RecordMetadata both have it."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


class Position(BaseModel):
    """A record's place: `email.send-1@42` in the seed's words."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: TopicName
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]

    @classmethod
    def of(cls, record: Located) -> Position:
        return cls(topic=record.topic, partition=record.partition, offset=record.offset)


def _event_id(name: str) -> str:
    """str(uuid.uuid5(EVENTS_NAMESPACE, name)) without the UUID object in between, which costs
    as much as the hash: every email's events need an id each."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    digest[6] = digest[6] & 0x0F | 0x50  # version 5
    digest[8] = digest[8] & 0x3F | 0x80  # the RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


# A message id has no "/", and each kind of name ends in its own way, so a name reads back one
# way only: two different events can never share an id.
def accepted_event_id(message_id: str, partition: int, offset: int) -> str:
    """One per record of email.send: a client's retry that wrote the email twice has two."""
    return _event_id(f"{message_id}/accepted/{partition}/{offset}")


def final_event_id(message_id: str, recipient: str) -> str:
    """The same for sent, bounced and suppressed: a recipient has one ending, whichever."""
    return _event_id(f"{message_id}/{recipient_address(recipient)}/final")


def deferred_event_id(message_id: str, recipient: str, attempt: int) -> str:
    return _event_id(f"{message_id}/{recipient_address(recipient)}/deferred/{attempt}")


def dead_lettered_event_id(message_id: str) -> str:
    return _event_id(f"{message_id}/dead-lettered")


class _Event(BaseModel):
    """What every event says: which email, what happened to it, when, and which record's
    processing made it happen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_version: Literal[1] = EVENTS_SCHEMA_VERSION
    type: EventType
    message_id: MessageId
    at: Timestamp
    record: Position

    @computed_field  # type: ignore[prop-decorator]
    @property
    def event_id(self) -> str:
        raise NotImplementedError

    @model_validator(mode="wrap")
    @classmethod
    def _its_own_id(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        """An event_id given (a dump validated again) must be the one the event has."""
        given = data.get("event_id") if isinstance(data, dict) else None
        if given is not None:
            data = {name: value for name, value in data.items() if name != "event_id"}
        event = handler(data)
        if given is not None and given != event.event_id:
            raise ValueError(f"event_id {given!r} is not this event's, {event.event_id!r}")
        return event

    def to_kafka(self) -> ProducerRecord:
        # The envelope first, so a person reading `kafka-console-consumer.sh` output sees it:
        # the fields are declared in its order but event_id, which pydantic serialises last.
        # Serialised by pydantic, in Rust, at a third of the cost of json.dumps of a dump.
        rest = self.model_dump_json(by_alias=True, exclude=WRITTEN_AHEAD).encode()
        value = b'{"schema_version":%d,"event_id":"%s",%s' % (
            self.schema_version,
            self.event_id.encode(),
            rest[1:],
        )
        return event_record(self.message_id, self.type, value)


RecipientKind = Literal["to", "cc", "bcc"]


class AcceptedRecipient(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    address: Recipient
    kind: RecipientKind


class Accepted(_Event):
    """The API took the email (202), and this is the record of email.send that holds it."""

    type: Literal["accepted"] = "accepted"
    sender: Address = Field(alias="from")
    subject: HeaderValue
    tags: list[Tag]
    recipients: Annotated[list[AcceptedRecipient], Field(min_length=1, max_length=MAX_RECIPIENTS)]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def event_id(self) -> str:
        return accepted_event_id(self.message_id, self.record.partition, self.record.offset)


class _RecipientEvent(_Event):
    recipient: Recipient
    attempt: Attempt


class Sent(_RecipientEvent):
    """The server took the email for this recipient: the reply to the final "."."""

    type: Literal["sent"] = "sent"
    reply: Reply

    @computed_field  # type: ignore[prop-decorator]
    @property
    def event_id(self) -> str:
        return final_event_id(self.message_id, self.recipient)

    @field_validator("reply")
    @classmethod
    def _accepting(cls, reply: Reply) -> Reply:
        if not 200 <= reply.code < 300:
            raise ValueError(f"a sent event carries the server's 2xx reply, got {reply.code}")
        return reply


class Deferred(_RecipientEvent):
    """The server said "not now" for this recipient: another try waits in `retry_topic`."""

    type: Literal["deferred"] = "deferred"
    reply: Reply
    next_try_at: Timestamp
    retry_topic: TopicName

    @computed_field  # type: ignore[prop-decorator]
    @property
    def event_id(self) -> str:
        return deferred_event_id(self.message_id, self.recipient, self.attempt)

    @field_validator("reply")
    @classmethod
    def _transient(cls, reply: Reply) -> Reply:
        if not 400 <= reply.code < 500:
            raise ValueError(f"a deferred event carries a 4xx reply, got {reply.code}")
        return reply


BounceReason = Literal["address", "message", "expired", "local"]


class Bounced(_RecipientEvent):
    """This recipient will never get the email. `address`: the server refused the recipient;
    `message`: it refused the email itself; `expired`: it kept deferring it past
    WORKER_MAX_RETRY_AGE (the reply is its last); `local`: the worker could not send it, with
    a reply in its words. `suppressed`: the address went on the suppression list for it."""

    type: Literal["bounced"] = "bounced"
    reply: Reply
    reason: BounceReason
    suppressed: bool

    @computed_field  # type: ignore[prop-decorator]
    @property
    def event_id(self) -> str:
        return final_event_id(self.message_id, self.recipient)

    @field_validator("reason")
    @classmethod
    def _permanent_unless_expired(cls, reason: BounceReason, info: ValidationInfo) -> BounceReason:
        reply: Reply | None = info.data.get("reply")
        if reply is not None and reason != "expired" and reply.code < 500:
            raise ValueError(
                f"a bounce for reason {reason!r} carries a 5xx reply, got {reply.code} "
                "(only an expired one ends on a 4xx)"
            )
        return reason


class Suppression(BaseModel):
    """Why the address is on the suppression list: the bounce that put it there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    since: Timestamp
    reply: Reply
    message_id: MessageId


class Suppressed(_Event):
    """Not sent to this recipient: the address is on the suppression list."""

    type: Literal["suppressed"] = "suppressed"
    recipient: Recipient
    suppression: Suppression

    @computed_field  # type: ignore[prop-decorator]
    @property
    def event_id(self) -> str:
        return final_event_id(self.message_id, self.recipient)


DeadLetterReason = Literal["refused", "expired", "unsendable"]


class DeadLettered(_Event):
    """A copy of the email's record went to the dead-letter topic, at `dead_letter`. One per
    email, final for no recipient: those it still owed each have their own bounce."""

    type: Literal["dead_lettered"] = "dead_lettered"
    reason: DeadLetterReason
    dead_letter: Position

    @computed_field  # type: ignore[prop-decorator]
    @property
    def event_id(self) -> str:
        return dead_lettered_event_id(self.message_id)


Event = Annotated[
    Accepted | Sent | Deferred | Bounced | Suppressed | DeadLettered, Field(discriminator="type")
]
EVENT: Final = TypeAdapter[Event](Event)


def accepted_event(email: EmailRecord, position: Located) -> Accepted:
    """The `accepted` event of the record at `position` of email.send; the API and the worker
    both make it with this, so both write the same bytes with the same id. Each address is
    listed once, under the first of to, cc and bcc that names it."""
    recipients: dict[str, RecipientKind] = {}
    kinds: list[tuple[RecipientKind, list[str]]] = [
        ("to", email.to), ("cc", email.cc), ("bcc", email.bcc)
    ]  # fmt: skip
    for kind, addresses in kinds:
        for address in addresses:
            recipients.setdefault(recipient_address(address), kind)
    return Accepted(
        message_id=email.message_id,
        at=email.created_at,
        record=Position.of(position),
        sender=email.sender,
        subject=email.subject,
        tags=email.tags,
        recipients=[
            AcceptedRecipient(address=address, kind=kind) for address, kind in recipients.items()
        ],
    )


def is_final(event_type: str) -> bool:
    """Whether an event of this type ends its recipient's story: sent, bounced, suppressed."""
    return event_type in FINAL_TYPES


def json_object(value: bytes | None, what: str, error: type[Exception]) -> dict[str, Any]:
    """A record's value as a JSON object, or `error` saying why it is not one."""
    if value is None:
        raise error(f"the {what} has no value")
    try:
        document = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError as problem:
        raise error(f"the {what} is not UTF-8: {problem}") from None
    except json.JSONDecodeError as problem:
        raise error(f"the {what} is not JSON: {problem}") from None
    if not isinstance(document, dict):
        raise error(f"the {what} is JSON but not an object: {type(document).__name__}")
    return document


def parse_event(value: bytes | None) -> Event:
    """An event of email.events, checked against its schema and its id; UnreadableEvent if
    it is not one this reader knows."""
    document = json_object(value, "event", UnreadableEvent)
    version = document.get("schema_version")
    if version != EVENTS_SCHEMA_VERSION:
        raise UnreadableEvent(
            f"unknown schema_version {version!r}: this reader knows version "
            f"{EVENTS_SCHEMA_VERSION} of email.events"
        )
    event_type = document.get("type")
    if event_type not in EVENT_TYPES:
        raise UnreadableEvent(
            f"unknown event type {event_type!r}: version {EVENTS_SCHEMA_VERSION} has "
            f"{', '.join(EVENT_TYPES)}"
        )
    event_id = document.pop("event_id", None)
    try:
        event = EVENT.validate_python(document)
    except ValidationError as error:
        problems = "; ".join(
            # The first part of each place is the type the event was read as.
            f"{'.'.join(str(part) for part in problem['loc'][1:]) or 'event'}: "
            f"{problem['msg'].removeprefix('Value error, ')}"
            for problem in error.errors()
        )
        raise UnreadableEvent(
            f"the {event_type} event does not match schema version {EVENTS_SCHEMA_VERSION}: "
            f"{problems}"
        ) from None
    if event_id != event.event_id:
        raise UnreadableEvent(
            f"the {event_type} event's event_id is {event_id!r}, but what it says gives "
            f"{event.event_id!r}: it was not written by shared/events.py"
        )
    return event
