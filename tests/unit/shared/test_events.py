"""The events' wire format is a contract: an example of each type pinned byte for byte, ids that
depend only on what an event says (one final id per recipient, whatever the outcome), addresses
named as the SMTP envelope names them, and a clear error for anything else."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiokafka.structs import RecordMetadata, TopicPartition
from hypothesis import HealthCheck, given, settings
from pydantic import ValidationError

from shared.events import (
    EVENT_TYPES,
    EVENTS_NAMESPACE,
    FINAL_TYPES,
    Accepted,
    AcceptedRecipient,
    Bounced,
    DeadLettered,
    Deferred,
    Event,
    Position,
    Reply,
    Sent,
    Suppressed,
    Suppression,
    UnreadableEvent,
    accepted_event,
    accepted_event_id,
    dead_lettered_event_id,
    deferred_event_id,
    final_event_id,
    is_final,
    parse_event,
    recipient_address,
)
from shared.schema import EmailRecord
from tests.unit.email_inputs import email_records
from tests.unit.shared.test_schema import EXAMPLE_RECORD

MESSAGE_ID = EXAMPLE_RECORD.message_id
MAIN = Position(topic="email.send", partition=1, offset=42)
RETRY = Position(topic="email.send.retry-1m", partition=1, offset=7)
SENT_AT = datetime(2026, 11, 25, 9, 30, 1, 250000, tzinfo=UTC)
BOUNCED_AT = datetime(2026, 11, 25, 9, 31, 2, tzinfo=UTC)
NO_SUCH_MAILBOX = Reply(code=550, enhanced="5.1.1", text="No such mailbox")

ACCEPTED = accepted_event(EXAMPLE_RECORD, MAIN)
SENT = Sent(
    message_id=MESSAGE_ID,
    at=SENT_AT,
    record=MAIN,
    recipient="ana@example.com",
    attempt=0,
    reply=Reply(code=250, enhanced="2.0.0", text="Ok: queued as 4bXy1"),
)
DEFERRED = Deferred(
    message_id=MESSAGE_ID,
    at=SENT_AT,
    record=MAIN,
    recipient="ops@example.com",
    attempt=0,
    reply=Reply(code=451, enhanced="4.7.1", text="Greylisted, try again in 60 seconds"),
    next_try_at=SENT_AT + timedelta(minutes=1),
    retry_topic="email.send.retry-1m",
)
BOUNCED = Bounced(
    message_id=MESSAGE_ID,
    at=BOUNCED_AT,
    record=RETRY,
    recipient="ops@example.com",
    attempt=1,
    reply=NO_SUCH_MAILBOX,
    reason="address",
    suppressed=True,
)
SUPPRESSED = Suppressed(
    message_id="7d2c5b1e-0f3a-5c4d-8e9f-1a2b3c4d5e6f",
    at=datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
    record=Position(topic="email.send", partition=0, offset=50),
    recipient="ops@example.com",
    suppression=Suppression(since=BOUNCED_AT, reply=NO_SUCH_MAILBOX, message_id=MESSAGE_ID),
)
DEAD_LETTERED = DeadLettered(
    message_id=MESSAGE_ID,
    at=datetime(2026, 11, 26, 9, 30, tzinfo=UTC),
    record=Position(topic="email.send.retry-60m", partition=1, offset=90),
    reason="expired",
    dead_letter=Position(topic="email.send.dlq", partition=1, offset=3),
)

EXAMPLES: list[tuple[Event, bytes]] = [
    (
        ACCEPTED,
        b'{"schema_version":1,"event_id":"4d3b485c-0da6-5b69-858c-ff3ace7048db",'
        b'"type":"accepted","message_id":"0b5e1c2a-8f0e-5a55-9c4e-3f1d2b7a9e10",'
        b'"at":"2026-11-25T09:30:00Z","record":{"topic":"email.send","partition":1,"offset":42},'
        b'"from":"Kafka Demo <demo@example.com>","subject":"Hello, Kafka \xe2\x9c\x89",'
        b'"tags":["demo"],"recipients":[{"address":"ana@example.com","kind":"to"},'
        b'{"address":"ops@example.com","kind":"cc"}]}',
    ),
    (
        SENT,
        b'{"schema_version":1,"event_id":"90f7ce66-9f6d-5727-89f7-c1617276f04a","type":"sent",'
        b'"message_id":"0b5e1c2a-8f0e-5a55-9c4e-3f1d2b7a9e10","at":"2026-11-25T09:30:01.250000Z",'
        b'"record":{"topic":"email.send","partition":1,"offset":42},'
        b'"recipient":"ana@example.com","attempt":0,'
        b'"reply":{"code":250,"enhanced":"2.0.0","text":"Ok: queued as 4bXy1"}}',
    ),
    (
        DEFERRED,
        b'{"schema_version":1,"event_id":"a51acebf-5e30-5c1c-ba09-00a1b271db88",'
        b'"type":"deferred","message_id":"0b5e1c2a-8f0e-5a55-9c4e-3f1d2b7a9e10",'
        b'"at":"2026-11-25T09:30:01.250000Z",'
        b'"record":{"topic":"email.send","partition":1,"offset":42},'
        b'"recipient":"ops@example.com","attempt":0,'
        b'"reply":{"code":451,"enhanced":"4.7.1","text":"Greylisted, try again in 60 seconds"},'
        b'"next_try_at":"2026-11-25T09:31:01.250000Z","retry_topic":"email.send.retry-1m"}',
    ),
    (
        BOUNCED,
        b'{"schema_version":1,"event_id":"8a97639a-6e23-58f2-872b-a5e2ca650f1f","type":"bounced",'
        b'"message_id":"0b5e1c2a-8f0e-5a55-9c4e-3f1d2b7a9e10","at":"2026-11-25T09:31:02Z",'
        b'"record":{"topic":"email.send.retry-1m","partition":1,"offset":7},'
        b'"recipient":"ops@example.com","attempt":1,'
        b'"reply":{"code":550,"enhanced":"5.1.1","text":"No such mailbox"},'
        b'"reason":"address","suppressed":true}',
    ),
    (
        SUPPRESSED,
        b'{"schema_version":1,"event_id":"500e1549-5cfa-5652-b1ef-1cffc9bd1210",'
        b'"type":"suppressed","message_id":"7d2c5b1e-0f3a-5c4d-8e9f-1a2b3c4d5e6f",'
        b'"at":"2026-11-25T10:00:00Z","record":{"topic":"email.send","partition":0,"offset":50},'
        b'"recipient":"ops@example.com","suppression":{"since":"2026-11-25T09:31:02Z",'
        b'"reply":{"code":550,"enhanced":"5.1.1","text":"No such mailbox"},'
        b'"message_id":"0b5e1c2a-8f0e-5a55-9c4e-3f1d2b7a9e10"}}',
    ),
    (
        DEAD_LETTERED,
        b'{"schema_version":1,"event_id":"d4a0f3bb-cae9-5db3-b047-e1ea68b6977b",'
        b'"type":"dead_lettered","message_id":"0b5e1c2a-8f0e-5a55-9c4e-3f1d2b7a9e10",'
        b'"at":"2026-11-26T09:30:00Z",'
        b'"record":{"topic":"email.send.retry-60m","partition":1,"offset":90},'
        b'"reason":"expired","dead_letter":{"topic":"email.send.dlq","partition":1,"offset":3}}',
    ),
]
IDS = [event.type for event, _ in EXAMPLES]
ENVELOPE = ("schema_version", "event_id", "type", "message_id", "at", "record")


@pytest.mark.parametrize(("event", "value"), EXAMPLES, ids=IDS)
def test_each_type_of_event_is_pinned_byte_for_byte(event: Event, value: bytes) -> None:
    key, written, headers = event.to_kafka()

    assert key == event.message_id.encode()
    assert written == value
    assert headers == [("schema_version", b"1"), ("type", event.type.encode())]


@pytest.mark.parametrize(("event", "value"), EXAMPLES, ids=IDS)
def test_each_type_of_event_round_trips(event: Event, value: bytes) -> None:
    assert parse_event(value) == event


def test_the_examples_cover_every_type() -> None:
    assert sorted(IDS) == sorted(EVENT_TYPES)


def test_text_that_json_must_escape_is_written_as_json_dumps_writes_it() -> None:
    reply = Reply(code=550, enhanced=None, text='a "quoted" \\ path\tand\x01 ✉ \u2028 \x7f')
    bounced = BOUNCED.model_copy(update={"reply": reply})
    fields = bounced.model_dump(mode="json", by_alias=True)
    envelope = {name: fields.pop(name) for name in ENVELOPE}
    written_by_json = json.dumps({**envelope, **fields}, ensure_ascii=False, separators=(",", ":"))

    assert bounced.to_kafka().value == written_by_json.encode()


def test_a_reply_that_is_not_utf8_keeps_each_bad_byte_as_a_replacement_character() -> None:
    # aiosmtplib decodes a reply with surrogateescape: the byte 0xff becomes U+DCFF
    reply = Reply.of(250, "2.0.0 Ok: queued \udcff as 4F2A")
    sent = SENT.model_copy(update={"reply": reply})

    assert reply.text == "Ok: queued \ufffd as 4F2A"
    assert parse_event(sent.to_kafka().value) == sent


def test_an_event_id_is_a_uuid5_of_what_the_event_says() -> None:
    name = f"{MESSAGE_ID}/ana@example.com/final"

    assert SENT.event_id == str(uuid.uuid5(EVENTS_NAMESPACE, name))


@pytest.mark.parametrize(
    ("message_id", "recipient"),
    [
        (MESSAGE_ID, "ana@example.com"),
        (str(uuid.uuid4()), "josé@xn--e1afmkfd.xn--p1ai"),
        ("a" * 200, "b" * 64 + "@example.com"),
    ],
)
def test_every_id_kind_is_the_uuid5_the_standard_library_makes(
    message_id: str, recipient: str
) -> None:
    """The ids are made without uuid.UUID, for speed: the same ids it would make."""
    assert final_event_id(message_id, recipient) == str(
        uuid.uuid5(EVENTS_NAMESPACE, f"{message_id}/{recipient}/final")
    )
    assert accepted_event_id(message_id, 2, 99) == str(
        uuid.uuid5(EVENTS_NAMESPACE, f"{message_id}/accepted/2/99")
    )
    assert deferred_event_id(message_id, recipient, 3) == str(
        uuid.uuid5(EVENTS_NAMESPACE, f"{message_id}/{recipient}/deferred/3")
    )
    assert dead_lettered_event_id(message_id) == str(
        uuid.uuid5(EVENTS_NAMESPACE, f"{message_id}/dead-lettered")
    )


def test_a_recipients_final_event_has_one_id_whatever_the_outcome() -> None:
    """So two different endings for one recipient can never both be applied."""
    bounced = BOUNCED.model_copy(update={"recipient": "ana@example.com"})
    suppressed = SUPPRESSED.model_copy(
        update={"message_id": MESSAGE_ID, "recipient": "ana@example.com"}
    )

    assert SENT.event_id == bounced.event_id == suppressed.event_id
    assert SENT.event_id == final_event_id(MESSAGE_ID, "ana@example.com")


def test_ids_differ_by_recipient_attempt_and_kind_of_event() -> None:
    ids = [
        final_event_id(MESSAGE_ID, "ana@example.com"),
        final_event_id(MESSAGE_ID, "ops@example.com"),
        final_event_id("another-email", "ana@example.com"),
        deferred_event_id(MESSAGE_ID, "ana@example.com", 0),
        deferred_event_id(MESSAGE_ID, "ana@example.com", 1),
        deferred_event_id(MESSAGE_ID, "ops@example.com", 0),
        ACCEPTED.event_id,
        accepted_event(EXAMPLE_RECORD, MAIN.model_copy(update={"offset": 43})).event_id,
        DEAD_LETTERED.event_id,
    ]

    assert len(set(ids)) == len(ids)


def test_an_event_built_again_has_the_same_bytes() -> None:
    """What the worker builds again from the store after a crash is the same event."""
    again = accepted_event(EmailRecord.model_validate(EXAMPLE_RECORD.model_dump()), MAIN)

    assert again.to_kafka() == ACCEPTED.to_kafka()


def test_the_api_and_the_worker_name_the_record_as_aiokafka_hands_it_to_them() -> None:
    metadata = RecordMetadata("email.send", 1, TopicPartition("email.send", 1), 42, -1, 0, 0)

    assert accepted_event(EXAMPLE_RECORD, metadata) == ACCEPTED


@pytest.mark.parametrize(
    ("written", "named"),
    [
        ("ana@example.com", "ana@example.com"),
        ("  Ana <ana@example.com> ", "ana@example.com"),
        ('"Ops, EU" <ops@example.com>', "ops@example.com"),
        ("Ana <ana@пример.рф>", "ana@xn--e1afmkfd.xn--p1ai"),
        ("josé@пример.рф", "josé@xn--e1afmkfd.xn--p1ai"),
        ("ana@Example.COM", "ana@Example.COM"),  # as the schema keeps it, and sends it
    ],
)
def test_a_recipient_is_named_as_the_smtp_envelope_names_it(written: str, named: str) -> None:
    sent = Sent.model_validate({**SENT.model_dump(exclude={"event_id"}), "recipient": written})

    assert recipient_address(written) == named
    assert sent.recipient == named
    assert sent.event_id == final_event_id(MESSAGE_ID, written) == final_event_id(MESSAGE_ID, named)


def test_an_accepted_event_lists_each_address_once_under_its_first_kind() -> None:
    email = EXAMPLE_RECORD.model_copy(
        update={
            "to": ["Ana <ana@example.com>"],
            "cc": ["ops@example.com", "ANA <ana@example.com>"],
            "bcc": ["audit@пример.рф", "ops@example.com"],
        }
    )

    assert accepted_event(email, MAIN).recipients == [
        AcceptedRecipient(address="ana@example.com", kind="to"),
        AcceptedRecipient(address="ops@example.com", kind="cc"),
        AcceptedRecipient(address="audit@xn--e1afmkfd.xn--p1ai", kind="bcc"),
    ]


@pytest.mark.parametrize(
    ("created_at", "at"),
    [
        (datetime(2026, 11, 25, 9, 30), "2026-11-25T09:30:00Z"),
        (datetime(2026, 11, 25, 15, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
         "2026-11-25T09:30:00Z"),
    ],
)  # fmt: skip
def test_events_say_when_in_utc(created_at: datetime, at: str) -> None:
    email = EXAMPLE_RECORD.model_copy(update={"created_at": created_at})

    assert accepted_event(email, MAIN).model_dump(mode="json")["at"] == at


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_sent_bounced_and_suppressed_are_final_for_their_recipient(event_type: str) -> None:
    assert is_final(event_type) is (event_type in {"sent", "bounced", "suppressed"})
    assert set(EVENT_TYPES) >= FINAL_TYPES


@pytest.mark.parametrize(
    ("code", "message", "reply"),
    [
        (250, "2.0.0 Ok: queued as 4bXy1", (250, "2.0.0", "Ok: queued as 4bXy1")),
        (250, "OK", (250, None, "OK")),
        (451, "4.7.1 Greylisted\n4.7.1 try later", (451, "4.7.1", "Greylisted try later")),
        (550, "5.1.1 <x@example.com>: unknown", (550, "5.1.1", "<x@example.com>: unknown")),
        (550, "4.1.1 class unlike the code's", (550, None, "4.1.1 class unlike the code's")),
        (421, "4.7.0", (421, "4.7.0", "")),
        (554, "", (554, None, "")),
        (550, "5.7.1 a\n5.7.2 b", (550, "5.7.1", "a 5.7.2 b")),
    ],
)  # fmt: skip
def test_a_reply_is_read_as_aiosmtplib_hands_it_over(
    code: int, message: str, reply: tuple[int, str | None, str]
) -> None:
    read = Reply.of(code, message)

    assert (read.code, read.enhanced, read.text) == reply


def test_a_long_reply_keeps_its_start() -> None:
    assert Reply.of(550, "5.1.1 " + "x" * 5000).text == "x" * 1000


def reply(code: int) -> dict[str, Any]:
    return {"code": code, "enhanced": None, "text": ""}


def document(event: Event, **changes: Any) -> bytes:
    """The event as JSON with some fields changed; `...` leaves a field out."""
    fields = json.loads(event.to_kafka().value)
    fields.update(changes)
    return json.dumps({name: value for name, value in fields.items() if value is not ...}).encode()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "the event has no value"),
        (b"hello1", "the event is not JSON"),
        (b"\xff\xfe", "the event is not UTF-8"),
        (b"[1, 2]", "the event is JSON but not an object: list"),
        (document(SENT, schema_version=2), "unknown schema_version 2: this reader knows version 1"),
        (document(SENT, schema_version=...), "unknown schema_version None"),
        (document(SENT, type="opened"), "unknown event type 'opened': version 1 has accepted, "),
        (document(SENT, recipient=...), r"sent event does not match .*: recipient: Field required"),
        (document(SENT, recipient="not-an-address"), "recipient: .* is not a valid email address"),
        (document(SENT, attempt=-1), "attempt: Input should be greater than or equal to 0"),
        (document(SENT, priority="high"), "priority: Extra inputs are not permitted"),
        (document(SENT, reply=reply(550)), "2xx reply, got 550"),
        (document(DEFERRED, reply=reply(250)), "4xx reply, got 250"),
        (document(BOUNCED, reply=reply(451)), "5xx reply, got 451"),
        (document(SENT, reply={**reply(250), "enhanced": "2.0"}), "reply.enhanced"),
        (document(SENT, event_id=str(uuid.uuid4())), "event_id is .* but what it says gives"),
        (document(SENT, event_id=...), "event_id is None"),
        (document(SENT, message_id="a/b"), "message_id: String should match pattern"),
        (document(DEAD_LETTERED, reason="lost"), "reason: Input should be 'refused', 'expired'"),
    ],
)  # fmt: skip
def test_unreadable_events_are_refused_with_the_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(UnreadableEvent, match=reason):
        parse_event(value)


def test_an_expired_bounce_ends_on_the_last_deferral() -> None:
    expired = BOUNCED.model_copy(update={"reason": "expired"})
    value = document(expired, reply=reply(451))

    assert parse_event(value).reply.code == 451  # type: ignore[union-attr]


def test_an_event_validated_again_from_its_dump_keeps_its_id() -> None:
    assert Sent.model_validate(SENT.model_dump()) == SENT
    with pytest.raises(ValidationError, match=r"event_id .* is not this event's"):
        Sent.model_validate({**SENT.model_dump(), "recipient": "ops@example.com"})


def test_an_event_cannot_be_built_from_what_it_cannot_say() -> None:
    with pytest.raises(ValidationError, match="a sent event carries the server's 2xx reply"):
        Sent(
            message_id=MESSAGE_ID, at=SENT_AT, record=MAIN, recipient="ana@example.com",
            attempt=0, reply=NO_SUCH_MAILBOX,
        )  # fmt: skip


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(email_records())
def test_every_accepted_email_has_an_accepted_event_that_round_trips(
    fields: dict[str, Any],
) -> None:
    email = EmailRecord.model_validate(fields)

    event = accepted_event(email, MAIN)

    assert parse_event(event.to_kafka().value) == event
    assert isinstance(event, Accepted)
    assert [recipient.address for recipient in event.recipients] == list(
        dict.fromkeys(recipient_address(address) for address in email.recipients)
    )
