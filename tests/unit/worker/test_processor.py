"""What happens to one record of email.send or of a retry topic, with fake edges: each
recipient's outcome and the row the dedupe store keeps of it, what the try publishes (events,
the retry record, the dead letter), what a record read again publishes, and where an email
waits instead (the relay away, the worker's settings refused, the store or Kafka away)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from aiokafka.structs import ConsumerRecord
from aiosmtplib import (
    SMTPDataError,
    SMTPNotSupported,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)

from services.worker import processor as processor_module
from services.worker.configuration_faults import ConfigurationFaults
from services.worker.dedupe.contract import DeliveryState, RecipientRow
from services.worker.mime import OutgoingEmail, render_email
from services.worker.processor import (
    LARGE_RECORD_BYTES,
    MANY_ADDRESSES,
    MAX_THROTTLED_TRIES,
    AttemptCounts,
    EmailProcessor,
)
from services.worker.recipient_outcomes import Stage, bounced, sent
from services.worker.retry import RetryPolicy, Stopped
from services.worker.smtp import Transaction
from services.worker.smtp_failures import ConfigurationFault, OutcomeUnknown, RelayUnavailable
from services.worker.store_outage import StoreOutage
from shared.events import (
    Accepted,
    Bounced,
    DeadLettered,
    Deferred,
    Event,
    Position,
    Reply,
    Sent,
    Suppressed,
    accepted_event,
    parse_event,
)
from shared.retry_topics import RetryRecord, parse_retry_record
from shared.schema import EmailRecord, parse_record
from shared.settings import PROJECT_ROOT
from shared.suppressions import Suppression
from tests.unit.worker.fakes import (
    NOW,
    FakeDeadLetters,
    FakeMailer,
    FakeProducer,
    InMemoryDedupeStore,
    InMemorySuppressions,
    PublishingProcessor,
    consumer_record,
    email_processor,
    email_record,
    kafka_record,
    retry_topic_record,
)

ANA, BOB, CY = "ana@example.com", "bob@example.com", "cy@example.com"


def publishing_processor(*args: Any, **kwargs: Any) -> EmailProcessor:
    """A processor whose `process` returns once what the record published is acknowledged."""
    return email_processor(*args, kind=kwargs.pop("kind", PublishingProcessor), **kwargs)


ACCEPTED_AT = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)  # email_record's created_at
GREYLISTED = SMTPResponse(451, "4.7.1 greylisted")
NO_SUCH_USER = SMTPResponse(550, "5.1.1 no such user")
DLQ_FIRST = Position(topic="email.send.dlq", partition=0, offset=0)  # FakeDeadLetters' first


class Clock:
    """The processor's clock, set by the test."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def record_of(email: EmailRecord, offset: int = 0) -> ConsumerRecord[bytes, bytes]:
    """The email's record of email.send, keyed by its message id, as the API writes it."""
    key, value = email.to_kafka()
    return consumer_record(offset, value, 0, key)


def as_read(sent: tuple[str, bytes, bytes | None, list[tuple[str, bytes]]], offset: int) -> (
    ConsumerRecord[bytes, bytes]
):  # fmt: skip
    """What the producer sent, as its topic's consumer reads it back."""
    topic, value, key, headers = sent
    return consumer_record(offset, value, 0, key, topic, headers)


def refused(code: int, message: str, *addresses: str) -> SMTPRecipientsRefused:
    """Every recipient of the transaction refused at RCPT with the same reply."""
    return SMTPRecipientsRefused(
        [SMTPRecipientRefused(code, message, address) for address in addresses or (ANA,)]
    )


def events_of(producer: FakeProducer) -> list[Event]:
    return [parse_event(value) for topic, value, _, _ in producer.sent if topic == "email.events"]


def retry_records_of(producer: FakeProducer) -> list[tuple[str, RetryRecord]]:
    return [
        (topic, parse_retry_record(value))
        for topic, value, _, _ in producer.sent
        if topic != "email.events"
    ]


def states(store: InMemoryDedupeStore, message_id: str = "m-1") -> dict[str, tuple[str, int]]:
    """Each recipient's row: its state and the attempt that ended it, or may try it next."""
    return {r: (row.state, row.attempt) for r, row in store.rows.get(message_id, {}).items()}


async def test_a_delivered_email_is_written_per_recipient_and_published_as_accepted_and_sent() -> (
    None
):
    store, producer, mailer = InMemoryDedupeStore(), FakeProducer(), FakeMailer()
    email = email_record("m-1", to=[ANA, BOB])

    outcome = await publishing_processor(store, producer=producer, clock=Clock()).process(
        record_of(email, offset=7), mailer, asyncio.Event()
    )

    assert outcome.finished == "delivered"
    assert outcome.accepted_at == ACCEPTED_AT
    [(message, sender, recipients)] = mailer.sent
    assert message["Message-ID"] == "<m-1@pipeline.test>"
    assert (sender, recipients) == ("demo@example.com", [ANA, BOB])
    assert states(store) == {ANA: ("sent", 0), BOB: ("sent", 0)}
    accepted, *rest = events_of(producer)
    assert isinstance(accepted, Accepted)
    here = Position(topic="email.send", partition=0, offset=7)
    assert producer.sent[0][1] == accepted_event(email, here).to_kafka().value, "as the API's"
    sent = [event for event in rest if isinstance(event, Sent)]
    assert [(e.recipient, e.attempt, e.record, e.at) for e in sent] == [
        (ANA, 0, here, NOW),
        (BOB, 0, here, NOW),
    ]
    assert len(sent) == len(rest)
    assert sent[0].reply == Reply(code=250, enhanced="2.0.0", text="Ok: queued as 4F2A")
    kept = [row.event for row in store.rows["m-1"].values()]
    assert kept == [value for _, value, _, _ in producer.sent[1:]], "what the store keeps"
    assert retry_records_of(producer) == []
    assert {key for _, _, key, _ in producer.sent} == {b"m-1"}, "keyed by message id"


async def test_an_address_named_twice_is_sent_to_once_and_has_one_row() -> None:
    store, mailer = InMemoryDedupeStore(), FakeMailer()
    email = email_record("m-1", to=[ANA, f"Ana <{ANA}>"], cc=[ANA], bcc=[BOB])

    await publishing_processor(store).process(record_of(email), mailer, asyncio.Event())

    assert mailer.tried == [[ANA, BOB]]
    assert states(store) == {ANA: ("sent", 0), BOB: ("sent", 0)}


async def test_a_recipient_deferred_at_rcpt_goes_alone_to_the_first_retry_topic(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, producer = InMemoryDedupeStore(), FakeProducer()
    email = email_record("m-1", to=[ANA, BOB])
    mailer = FakeMailer([{BOB: GREYLISTED}])

    with caplog.at_level(logging.INFO, logger="worker"):
        outcome = await publishing_processor(store, producer=producer, clock=Clock()).process(
            record_of(email), mailer, asyncio.Event()
        )

    assert outcome.finished == "delivered", "ana has it"
    assert outcome.dead_letter_reason is None
    assert states(store) == {ANA: ("sent", 0), BOB: ("deferred", 1)}, "retry 1 owns bob now"
    [(topic, value, key, headers)] = [sent for sent in producer.sent if sent[0] != "email.events"]
    expected = RetryRecord(
        message_id="m-1",
        attempt=1,
        due_at=NOW + timedelta(minutes=1),
        deferred_at=NOW,
        owed=[BOB],
        last_reply=Reply.of(451, "4.7.1 greylisted"),
        origin=Position(topic="email.send", partition=0, offset=0),
        email=email,
    ).to_kafka()
    assert topic == "email.send.retry-1m"
    assert (key, value, headers) == (expected.key, expected.value, expected.headers)
    _, sent, deferred = events_of(producer)
    assert isinstance(sent, Sent)
    assert sent.recipient == ANA
    assert isinstance(deferred, Deferred)
    assert (deferred.recipient, deferred.attempt, deferred.next_try_at, deferred.retry_topic) == (
        BOB, 0, NOW + timedelta(minutes=1), "email.send.retry-1m",
    )  # fmt: skip
    assert deferred.reply == Reply(code=451, enhanced="4.7.1", text="greylisted")
    events = [value for topic, value, _, _ in producer.sent if topic == "email.events"]
    assert store.rows["m-1"][BOB].event == events[-1]
    assert producer.sent[-1][0] == "email.send.retry-1m", "the retry record once the events are in"
    # The log counts recipients, and names none of them.
    assert "email.send-0 offset 0: m-1, try 0: sent 1, deferred 1" in caplog.messages


async def test_an_email_deferred_for_every_recipient_is_deferred_not_delivered() -> None:
    store, producer = InMemoryDedupeStore(), FakeProducer()
    email = email_record("m-1", to=[ANA, BOB])

    outcome = await publishing_processor(store, producer=producer).process(
        record_of(email),
        FakeMailer([refused(450, "4.2.0 mailbox busy", ANA, BOB)]),
        asyncio.Event(),
    )

    assert outcome.finished == "deferred"
    assert outcome.accepted_at is None
    assert states(store) == {ANA: ("deferred", 1), BOB: ("deferred", 1)}
    [(topic, retry)] = retry_records_of(producer)
    assert (topic, retry.attempt, retry.owed) == ("email.send.retry-1m", 1, [ANA, BOB])
    assert retry.last_reply == Reply(code=450, enhanced="4.2.0", text="mailbox busy")
    assert [type(event) for event in events_of(producer)] == [Accepted, Deferred, Deferred]


async def test_a_retry_record_sends_only_to_whom_it_owes_and_a_deferral_moves_on_a_topic() -> None:
    store, producer, clock = InMemoryDedupeStore(), FakeProducer(), Clock()
    email = email_record("m-1", to=[ANA, BOB, CY])
    processor = publishing_processor(store, producer=producer, clock=clock)
    await processor.process(
        record_of(email), FakeMailer([{BOB: GREYLISTED, CY: GREYLISTED}]), asyncio.Event()
    )
    clock.now = NOW + timedelta(minutes=1)
    producer.sent.clear()
    mailer = FakeMailer([{CY: SMTPResponse(450, "4.2.0 mailbox busy")}])

    outcome = await processor.process(
        retry_topic_record(3, email, [BOB, CY], due_at=clock.now), mailer, asyncio.Event()
    )

    assert mailer.tried == [[BOB, CY]]
    assert outcome.finished == "delivered"
    assert states(store) == {ANA: ("sent", 0), BOB: ("sent", 1), CY: ("deferred", 2)}
    [(topic, retry)] = retry_records_of(producer)
    assert topic == "email.send.retry-5m", "the schedule's second delay"
    assert (retry.attempt, retry.owed, retry.due_at) == (2, [CY], clock.now + timedelta(minutes=5))
    assert retry.origin == Position(topic="email.send", partition=0, offset=0)
    here = Position(topic="email.send.retry-1m", partition=0, offset=3)
    sent, deferred = events_of(producer)  # no accepted event: that is email.send's
    assert isinstance(sent, Sent)
    assert (sent.recipient, sent.attempt, sent.record) == (BOB, 1, here)
    assert isinstance(deferred, Deferred)
    assert (deferred.recipient, deferred.attempt, deferred.retry_topic) == (
        CY, 1, "email.send.retry-5m",
    )  # fmt: skip
    assert deferred.next_try_at == clock.now + timedelta(minutes=5)


async def test_the_retry_record_a_deferral_produced_is_read_back_and_delivers() -> None:
    store, producer, clock = InMemoryDedupeStore(), FakeProducer(), Clock()
    email = email_record("m-1", to=[ANA, BOB])
    processor = publishing_processor(store, producer=producer, clock=clock)
    await processor.process(record_of(email), FakeMailer([{BOB: GREYLISTED}]), asyncio.Event())
    [retry] = [sent for sent in producer.sent if sent[0] == "email.send.retry-1m"]
    clock.now += timedelta(minutes=1)
    mailer = FakeMailer()

    outcome = await processor.process(as_read(retry, offset=0), mailer, asyncio.Event())

    assert outcome.finished == "delivered"
    assert outcome.accepted_at == ACCEPTED_AT, "latency is counted from acceptance"
    [(message, _, recipients)] = mailer.sent
    assert recipients == [BOB]
    assert message["Message-ID"] == "<m-1@pipeline.test>", "the same Message-ID as the first try"
    assert states(store) == {ANA: ("sent", 0), BOB: ("sent", 1)}


async def test_a_recipient_still_deferred_at_the_age_limit_bounces_and_the_email_is_dead_lettered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, producer, dead_letters, clock = (
        InMemoryDedupeStore(), FakeProducer(), FakeDeadLetters(), Clock()
    )  # fmt: skip
    email = email_record("m-1", to=[ANA, BOB])
    processor = publishing_processor(
        store, producer=producer, dead_letters=dead_letters, clock=clock
    )
    await processor.process(record_of(email), FakeMailer([{BOB: GREYLISTED}]), asyncio.Event())
    # The next delay (5 min) would end past WORKER_MAX_RETRY_AGE (24 h from acceptance).
    clock.now = ACCEPTED_AT + timedelta(hours=24) - timedelta(minutes=2)
    producer.sent.clear()
    retry = retry_topic_record(9, email, [BOB], due_at=clock.now)

    with caplog.at_level(logging.INFO, logger="worker"):
        outcome = await processor.process(
            retry, FakeMailer([refused(451, "4.7.1 greylisted", BOB)]), asyncio.Event()
        )

    assert (outcome.finished, outcome.dead_letter_reason) == ("dead-lettered", "expired")
    assert states(store) == {ANA: ("sent", 0), BOB: ("bounced", 1)}
    [(published, error, _)] = dead_letters.published
    assert published is retry
    assert dead_letters.values == [email.to_kafka()[1]], "email.send's record, as it was"
    assert error == "expired: bob@example.com (451 4.7.1 greylisted)"
    assert retry_records_of(producer) == []
    bounced, dead_lettered = events_of(producer)
    assert isinstance(bounced, Bounced)
    assert (bounced.recipient, bounced.reason, bounced.attempt, bounced.suppressed) == (
        BOB, "expired", 1, False,
    )  # fmt: skip
    assert bounced.reply == Reply(code=451, enhanced="4.7.1", text="greylisted"), "the last reply"
    assert isinstance(dead_lettered, DeadLettered)
    assert (dead_lettered.reason, dead_lettered.dead_letter) == ("expired", DLQ_FIRST)
    assert store.dead_lettered["m-1"] == producer.sent[-1][1]
    assert "email.send.retry-1m-0 offset 9: dead-lettered m-1 (expired)" in caplog.messages


async def test_an_email_ended_before_a_crash_is_dead_lettered_when_read_again() -> None:
    """The store took bob's expiry, then the worker stopped before the dead letter went out:
    the retry record, read again, sends nothing and dead-letters the email."""
    store, producer, dead_letters = InMemoryDedupeStore(), FakeProducer(), FakeDeadLetters()
    email = email_record("m-1", to=[ANA, BOB])
    retry = retry_topic_record(2, email, [BOB])
    stage = Stage(email, 1, Position.of(retry), Position.of(record_of(email)), (BOB,))
    store.rows["m-1"] = {
        ANA: sent(stage, ANA, Reply.of(250, "2.0.0 Ok"), NOW),
        BOB: bounced(stage, BOB, Reply.of(451, "4.7.1 greylisted"), "expired", NOW),
    }
    mailer = FakeMailer()

    outcome = await publishing_processor(
        store, producer=producer, dead_letters=dead_letters
    ).process(retry, mailer, asyncio.Event())

    assert mailer.attempts == 0
    assert (outcome.finished, outcome.dead_letter_reason) == ("dead-lettered", "expired")
    assert dead_letters.values == [email.to_kafka()[1]]
    assert [type(event) for event in events_of(producer)] == [Bounced, DeadLettered]


async def test_an_address_refused_for_good_at_rcpt_bounces_and_is_suppressed() -> None:
    store, producer = InMemoryDedupeStore(), FakeProducer()
    suppressions, dead_letters = InMemorySuppressions(), FakeDeadLetters()
    email = email_record("m-1", to=[ANA, BOB])

    outcome = await publishing_processor(
        store, producer=producer, suppressions=suppressions, dead_letters=dead_letters
    ).process(record_of(email), FakeMailer([{BOB: NO_SUCH_USER}]), asyncio.Event())

    assert (outcome.finished, outcome.dead_letter_reason) == ("delivered", "refused")
    assert states(store) == {ANA: ("sent", 0), BOB: ("bounced", 0)}
    _, _, bounced, dead_lettered = events_of(producer)
    assert isinstance(bounced, Bounced)
    assert (bounced.recipient, bounced.reason, bounced.suppressed) == (BOB, "address", True)
    assert bounced.reply == Reply(code=550, enhanced="5.1.1", text="no such user")
    assert isinstance(dead_lettered, DeadLettered)
    assert dead_lettered.reason == "refused"
    [(_, error, _)] = dead_letters.published
    assert error == "refused: bob@example.com (550 5.1.1 no such user)", "ana has it: not named"
    listed = suppressions.kept[BOB]
    assert (listed.reply, listed.message_id) == ("550 5.1.1 no such user", "m-1")
    assert ANA not in suppressions.kept


async def test_a_refusal_about_policy_bounces_without_suppressing_the_address() -> None:
    suppressions, producer = InMemorySuppressions(), FakeProducer()
    policy = SMTPResponse(550, "5.7.1 message refused by policy")

    await publishing_processor(producer=producer, suppressions=suppressions).process(
        kafka_record(0, "m-1"), FakeMailer([refused(550, policy.message)]), asyncio.Event()
    )

    _, bounced, _ = events_of(producer)
    assert isinstance(bounced, Bounced)
    assert (bounced.reason, bounced.suppressed) == ("address", False)
    assert suppressions.kept == {}


async def test_a_later_email_to_a_suppressed_address_is_not_sent_to_it_and_says_why() -> None:
    store, producer, dead_letters = InMemoryDedupeStore(), FakeProducer(), FakeDeadLetters()
    suppressions = InMemorySuppressions()
    processor = publishing_processor(
        store, producer=producer, suppressions=suppressions, dead_letters=dead_letters,
        clock=Clock(),
    )  # fmt: skip
    await processor.process(
        record_of(email_record("m-1", to=[BOB])),
        FakeMailer([refused(550, NO_SUCH_USER.message, BOB)]),
        asyncio.Event(),
    )
    dead_letters.published.clear()
    producer.sent.clear()
    mailer = FakeMailer()

    outcome = await processor.process(
        record_of(email_record("m-2", to=[BOB]), offset=1), mailer, asyncio.Event()
    )

    assert mailer.attempts == 0
    assert outcome.finished == "suppressed", "nothing was left to send"
    assert outcome.dead_letter_reason is None
    assert dead_letters.published == [], "a suppressed address is nothing an operator can mend"
    assert states(store, "m-2") == {BOB: ("suppressed", 0)}
    accepted, suppressed = events_of(producer)
    assert isinstance(accepted, Accepted)
    assert isinstance(suppressed, Suppressed)
    assert suppressed.recipient == BOB
    assert suppressed.suppression.message_id == "m-1", "the bounce that put it on the list"
    assert suppressed.suppression.reply == Reply(code=550, enhanced="5.1.1", text="no such user")
    assert suppressed.suppression.since == suppressions.kept[BOB].created_at


async def test_only_the_suppressed_recipients_of_an_email_are_skipped() -> None:
    store, producer = InMemoryDedupeStore(), FakeProducer()
    suppressions = InMemorySuppressions({BOB: "550 5.1.1 no such user"})
    mailer = FakeMailer()

    outcome = await publishing_processor(
        store, producer=producer, suppressions=suppressions
    ).process(record_of(email_record("m-1", to=[ANA, BOB])), mailer, asyncio.Event())

    assert outcome.finished == "delivered"
    assert mailer.tried == [[ANA]]
    assert states(store) == {BOB: ("suppressed", 0), ANA: ("sent", 0)}
    assert [type(event) for event in events_of(producer)] == [Accepted, Sent, Suppressed]


async def test_a_recipient_suppressed_while_it_waited_for_its_retry_ends_suppressed() -> None:
    store, producer = InMemoryDedupeStore(), FakeProducer()
    suppressions = InMemorySuppressions()
    email = email_record("m-1", to=[ANA, BOB])
    processor = publishing_processor(store, producer=producer, suppressions=suppressions)
    await processor.process(record_of(email), FakeMailer([{BOB: GREYLISTED}]), asyncio.Event())
    await suppressions.suppress(BOB, "550 5.1.1 no such user", "m-0")
    producer.sent.clear()
    mailer = FakeMailer()

    outcome = await processor.process(retry_topic_record(0, email, [BOB]), mailer, asyncio.Event())

    assert mailer.attempts == 0
    assert outcome.finished == "suppressed"
    assert states(store) == {ANA: ("sent", 0), BOB: ("suppressed", 1)}
    [suppressed] = events_of(producer)
    assert isinstance(suppressed, Suppressed)
    assert suppressed.suppression.message_id == "m-0"


async def test_a_record_read_again_sends_nothing_and_publishes_the_same_bytes() -> None:
    store, clock = InMemoryDedupeStore(), Clock()
    email = email_record("m-1", to=[ANA, BOB, CY])
    first, again = FakeProducer(), FakeProducer()
    await publishing_processor(store, producer=first, clock=clock).process(
        record_of(email), FakeMailer([{BOB: NO_SUCH_USER, CY: GREYLISTED}]), asyncio.Event()
    )
    clock.now += timedelta(seconds=30)  # read again later: the events still say when it was
    mailer = FakeMailer()

    outcome = await publishing_processor(store, producer=again, clock=clock).process(
        record_of(email), mailer, asyncio.Event()
    )

    assert mailer.attempts == 0
    assert store.writes == 1, "nothing written again"
    assert again.sent == first.sent, "the retry record and every event, byte for byte"
    assert [type(event) for event in events_of(again)] == [Accepted, Sent, Bounced, Deferred]
    assert outcome.finished == "duplicate"


async def test_a_dead_lettered_email_read_again_publishes_the_same_bytes_and_no_second_copy() -> (
    None
):
    store, dead_letters, clock = InMemoryDedupeStore(), FakeDeadLetters(), Clock()
    first, again = FakeProducer(), FakeProducer()
    record = kafka_record(0, "m-1")
    await publishing_processor(
        store, producer=first, dead_letters=dead_letters, clock=clock
    ).process(record, FakeMailer([refused(550, NO_SUCH_USER.message)]), asyncio.Event())
    clock.now += timedelta(seconds=30)
    mailer = FakeMailer()

    outcome = await publishing_processor(
        store, producer=again, dead_letters=dead_letters, clock=clock
    ).process(record, mailer, asyncio.Event())

    assert mailer.attempts == 0
    assert len(dead_letters.published) == 1
    assert again.sent == first.sent
    assert [type(event) for event in events_of(again)] == [Accepted, Bounced, DeadLettered]
    assert (outcome.finished, outcome.dead_letter_reason) == ("duplicate", None)


class MarkingStore(InMemoryDedupeStore):
    """Marks a dead-lettered email finished, as DeliveryState.finished's comment in the store's
    contract says a version with events does ("marks only a dead-lettered email here")."""

    async def record_dead_lettered(
        self, message_id: str, event: bytes | None, source: str
    ) -> DeliveryState:
        self.finished.setdefault(message_id, "dead-lettered")
        return await super().record_dead_lettered(message_id, event, source)


async def test_a_dead_lettered_email_read_again_publishes_its_events_whatever_the_store_marks() -> (
    None
):
    store, clock = MarkingStore(), Clock()
    first, again = FakeProducer(), FakeProducer()
    record = kafka_record(0, "m-1")
    await publishing_processor(store, producer=first, clock=clock).process(
        record, FakeMailer([refused(550, NO_SUCH_USER.message)]), asyncio.Event()
    )

    await publishing_processor(store, producer=again, clock=clock).process(
        record, FakeMailer(), asyncio.Event()
    )

    assert again.sent == first.sent


async def test_a_main_record_read_again_leaves_its_deferred_recipients_to_their_retry() -> None:
    store, clock = InMemoryDedupeStore(), Clock()
    email = email_record("m-1", to=[ANA, BOB])
    first, again = FakeProducer(), FakeProducer()
    await publishing_processor(store, producer=first, clock=clock).process(
        record_of(email), FakeMailer([{BOB: GREYLISTED}]), asyncio.Event()
    )
    clock.now += timedelta(seconds=20)
    mailer = FakeMailer()

    outcome = await publishing_processor(store, producer=again, clock=clock).process(
        record_of(email), mailer, asyncio.Event()
    )

    assert mailer.attempts == 0, "bob is retry 1's to send to"
    assert states(store) == {ANA: ("sent", 0), BOB: ("deferred", 1)}
    retry_first = [sent for sent in first.sent if sent[0] == "email.send.retry-1m"]
    retry_again = [sent for sent in again.sent if sent[0] == "email.send.retry-1m"]
    assert retry_again == retry_first, "the same retry record again: same key, value, due_at"
    assert again.sent == first.sent
    assert outcome.finished == "duplicate", "it owed nobody: a record read again"


async def test_a_main_record_read_again_after_its_retry_moved_on_publishes_no_retry_record() -> (
    None
):
    store, producer, clock = InMemoryDedupeStore(), FakeProducer(), Clock()
    email = email_record("m-1", to=[ANA, BOB])
    processor = publishing_processor(store, producer=producer, clock=clock)
    await processor.process(record_of(email), FakeMailer([{BOB: GREYLISTED}]), asyncio.Event())
    await processor.process(
        retry_topic_record(0, email, [BOB]),
        FakeMailer([refused(451, GREYLISTED.message, BOB)]),
        asyncio.Event(),
    )
    producer.sent.clear()
    mailer = FakeMailer()

    await processor.process(record_of(email), mailer, asyncio.Event())

    assert mailer.attempts == 0
    assert states(store) == {ANA: ("sent", 0), BOB: ("deferred", 2)}
    assert retry_records_of(producer) == [], "retry 2's record is retry 1's to produce"
    assert [type(event) for event in events_of(producer)] == [Accepted, Sent]


async def test_a_copy_of_a_retry_record_read_after_it_was_done_sends_nothing() -> None:
    store, producer = InMemoryDedupeStore(), FakeProducer()
    email = email_record("m-1", to=[ANA, BOB])
    processor = publishing_processor(store, producer=producer)
    await processor.process(record_of(email), FakeMailer([{BOB: GREYLISTED}]), asyncio.Event())
    retry = retry_topic_record(0, email, [BOB])
    await processor.process(retry, FakeMailer(), asyncio.Event())
    done = list(producer.sent)
    producer.sent.clear()
    mailer = FakeMailer()

    outcome = await processor.process(retry_topic_record(1, email, [BOB]), mailer, asyncio.Event())

    assert mailer.attempts == 0
    assert outcome.finished == "duplicate"
    assert [value for _, value, _, _ in producer.sent] == [done[-1][1]], "bob's sent event again"


async def test_an_earlier_versions_finished_email_is_skipped() -> None:
    store, producer, mailer = InMemoryDedupeStore(), FakeProducer(), FakeMailer()
    store.finished["m-1"] = "delivered"

    outcome = await publishing_processor(store, producer=producer).process(
        kafka_record(7, "m-1"), mailer, asyncio.Event()
    )

    assert outcome.finished == "duplicate"
    assert mailer.attempts == 0


async def test_recipients_an_earlier_version_sent_to_are_not_sent_to_again() -> None:
    store, dead_letters, producer = InMemoryDedupeStore(), FakeDeadLetters(), FakeProducer()
    store.rows["m-1"] = {ANA: RecipientRow(ANA, "sent", 0, None)}  # kept no event
    mailer = FakeMailer([refused(550, "5.1.1 no such user", BOB)])

    outcome = await publishing_processor(
        store, producer=producer, dead_letters=dead_letters
    ).process(record_of(email_record("m-1", to=[ANA, BOB])), mailer, asyncio.Event())

    assert mailer.tried == [[BOB]]
    assert (outcome.finished, outcome.dead_letter_reason) == ("dead-lettered", "refused")
    [(_, error, _)] = dead_letters.published
    assert error == "refused: bob@example.com (550 5.1.1 no such user)"
    assert [type(event) for event in events_of(producer)] == [Accepted, Bounced, DeadLettered]


async def test_while_the_relay_is_unavailable_the_email_waits_and_is_never_deferred(
    caplog: pytest.LogCaptureFixture,
) -> None:
    away = RelayUnavailable("relay.test:25: ConnectionRefusedError: [Errno 111] Connect refused")
    store, producer, counts = InMemoryDedupeStore(), FakeProducer(), AttemptCounts()
    mailer = FakeMailer([away, away, {}])

    with caplog.at_level(logging.WARNING, logger="worker"):
        outcome = await publishing_processor(store, producer=producer, counts=counts).process(
            kafka_record(0, "m-1"), mailer, asyncio.Event()
        )

    assert outcome.finished == "delivered"
    assert mailer.attempts == 3
    assert counts == AttemptCounts(retries=2, outcome_unknown=0)
    assert states(store) == {ANA: ("sent", 0)}
    assert retry_records_of(producer) == []
    assert [type(event) for event in events_of(producer)] == [Accepted, Sent]
    assert "email.send-0 offset 0: m-1 waits for the relay" in caplog.text


class CountingPace:
    def __init__(self) -> None:
        self.throttles = 0

    def throttled(self) -> bool:
        self.throttles += 1
        return True


def slow_down(code: int = 421) -> SMTPSenderRefused:
    return SMTPSenderRefused(code, "4.7.0 Rate limit exceeded, slow down", "demo@example.com")


async def test_a_slow_down_reply_slows_every_lane_and_the_email_waits_in_place() -> None:
    store, producer, counts, pace = (
        InMemoryDedupeStore(),
        FakeProducer(),
        AttemptCounts(),
        CountingPace(),
    )
    mailer = FakeMailer([slow_down(), slow_down(454), {}])

    outcome = await publishing_processor(
        store, producer=producer, counts=counts, pace=pace
    ).process(kafka_record(0, "m-1"), mailer, asyncio.Event())

    assert outcome.finished == "delivered"
    assert (pace.throttles, counts.throttled, counts.retries) == (2, 2, 2)
    assert states(store) == {ANA: ("sent", 0)}
    assert retry_records_of(producer) == [], "no retry topic's minute for the relay's pace"


async def test_a_421_greeting_slows_every_lane_too() -> None:
    greeting = RelayUnavailable("relay.test:25: SMTPConnectResponseError: 421 4.3.2 too busy")
    greeting.__cause__ = SMTPResponseException(421, "4.3.2 too busy, try later")
    counts, pace = AttemptCounts(), CountingPace()

    outcome = await publishing_processor(counts=counts, pace=pace).process(
        kafka_record(0, "m-1"), FakeMailer([greeting, {}]), asyncio.Event()
    )

    assert outcome.finished == "delivered"
    assert (pace.throttles, counts.retries) == (1, 1)


async def test_an_email_the_relay_keeps_throttling_goes_to_the_retry_topic_after_ten_tries() -> (
    None
):
    store, producer, pace = InMemoryDedupeStore(), FakeProducer(), CountingPace()
    per_recipient = SMTPSenderRefused(
        450, "4.7.1 rate limit exceeded for this recipient", "demo@example.com"
    )
    mailer = FakeMailer([per_recipient] * MAX_THROTTLED_TRIES)

    outcome = await publishing_processor(store, producer=producer, pace=pace).process(
        kafka_record(0, "m-1"), mailer, asyncio.Event()
    )

    assert mailer.attempts == MAX_THROTTLED_TRIES
    assert outcome.finished == "deferred"
    assert states(store) == {ANA: ("deferred", 1)}
    [(topic, _)] = retry_records_of(producer)
    assert topic == "email.send.retry-1m"


@pytest.mark.parametrize("code", [252, 354])
async def test_a_reply_to_rcpt_that_is_neither_taken_nor_refused_is_tried_again_later(
    code: int,
) -> None:
    """Not a crash after the 250 the others got: the worker's own 451 for it, a retry."""
    store = InMemoryDedupeStore()
    email = email_record("m-1", to=[ANA, BOB])
    mailer = FakeMailer([{BOB: SMTPResponse(code, "odd")}])

    await publishing_processor(store).process(record_of(email), mailer, asyncio.Event())

    assert states(store) == {ANA: ("sent", 0), BOB: ("deferred", 1)}
    [event] = [
        e
        for e in (parse_event(r.event) for r in store.rows["m-1"].values())
        if isinstance(e, Deferred)
    ]
    assert (event.reply.code, event.reply.enhanced) == (451, "4.4.0")
    assert event.reply.text == f"unexpected reply {code} odd"


REFUSED_LOGIN = ConfigurationFault(
    "authentication",
    "SMTP authentication refused by relay.example.com:587 (535 5.7.8 Authentication credentials "
    "invalid); check SMTP_USERNAME/SMTP_PASSWORD",
)


@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(REFUSED_LOGIN, id="login_refused"),
        pytest.param(
            SMTPSenderRefused(530, "5.7.0 Authentication required", ANA), id="530_at_mail"
        ),
        pytest.param(refused(530, "5.7.0 Authentication required"), id="530_at_every_rcpt"),
    ],
)
async def test_a_configuration_fault_holds_the_email_neither_deferred_nor_dead_lettered(
    refusal: Exception,
) -> None:
    store, producer, dead_letters = InMemoryDedupeStore(), FakeProducer(), FakeDeadLetters()
    faults = ConfigurationFaults(0.001, 0.001)
    mailer = FakeMailer([refusal] * 5 + [{}])

    outcome = await publishing_processor(
        store, producer=producer, dead_letters=dead_letters, faults=faults
    ).process(kafka_record(0, "m-1"), mailer, asyncio.Event())

    assert outcome.finished == "delivered"
    assert mailer.attempts == 6
    assert dead_letters.published == []
    assert retry_records_of(producer) == []
    assert states(store) == {ANA: ("sent", 0)}
    assert faults.current is None, "a delivery shows the server accepts again"


async def test_a_held_email_is_neither_written_nor_published_when_stopped() -> None:
    store, producer, dead_letters = InMemoryDedupeStore(), FakeProducer(), FakeDeadLetters()
    faults = ConfigurationFaults(60, 60)
    stopping = asyncio.Event()
    task = asyncio.create_task(
        publishing_processor(
            store, producer=producer, dead_letters=dead_letters, faults=faults
        ).process(kafka_record(0, "m-1"), FakeMailer([REFUSED_LOGIN]), stopping)
    )
    await asyncio.sleep(0.05)
    assert faults.current is not None

    stopping.set()

    with pytest.raises(Stopped):
        await asyncio.wait_for(task, timeout=1)
    assert (store.rows, store.writes) == ({}, 0)
    assert (producer.sent, dead_letters.published) == ([], [])


class RefusingRelay(FakeMailer):
    """Refuses the worker's credentials until `accepting`: every lane shares it, as a relay."""

    def __init__(self) -> None:
        super().__init__()
        self.accepting = False
        self.refused = 0

    async def send(self, email: OutgoingEmail, recipients: list[str]) -> Transaction:
        if not self.accepting:
            self.refused += 1
            raise REFUSED_LOGIN
        return await super().send(email, recipients)


async def test_while_refused_one_lane_tries_and_every_lane_resumes_once_accepted() -> None:
    relay, faults = RefusingRelay(), ConfigurationFaults(0.02, 0.02)
    processor = publishing_processor(faults=faults)
    lanes = [
        asyncio.create_task(processor.process(kafka_record(n, f"m-{n}"), relay, asyncio.Event()))
        for n in range(8)
    ]
    await asyncio.sleep(0.2)
    refused_while_held = relay.refused

    relay.accepting = True
    outcomes = await asyncio.wait_for(asyncio.gather(*lanes), timeout=1)

    # Each of the 8 lanes on its own would have tried about 80 times in 0.2 s.
    assert 1 <= refused_while_held <= 8 + 12, f"{refused_while_held} tries"
    assert [outcome.finished for outcome in outcomes] == ["delivered"] * 8
    assert len(relay.sent) == 8


async def test_an_unknown_outcome_is_counted_and_deferred_with_a_reply_in_the_workers_words(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lost_reply = OutcomeUnknown("the connection was lost after the end of DATA")
    store, producer, counts = InMemoryDedupeStore(), FakeProducer(), AttemptCounts()

    with caplog.at_level(logging.WARNING, logger="worker"):
        outcome = await publishing_processor(store, producer=producer, counts=counts).process(
            kafka_record(0, "m-1"), FakeMailer([lost_reply]), asyncio.Event()
        )

    assert outcome.finished == "deferred"
    assert counts == AttemptCounts(retries=0, outcome_unknown=1)
    assert states(store) == {ANA: ("deferred", 1)}
    _, deferred = events_of(producer)
    assert isinstance(deferred, Deferred)
    assert (deferred.reply.code, deferred.reply.enhanced) == (451, "4.4.2")
    assert "outcome unknown" in deferred.reply.text
    assert "the connection was lost after the end of DATA" in deferred.reply.text
    [(_, retry)] = retry_records_of(producer)
    assert retry.last_reply == deferred.reply
    assert "may get it twice" in caplog.text


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(SMTPServerDisconnected("Connection lost"), id="lost_after_mail_from"),
        pytest.param(TimeoutError("Timed out waiting for server response"), id="rcpt_timed_out"),
    ],
)
async def test_a_connection_lost_once_mail_from_was_answered_defers_the_email(
    failure: Exception,
) -> None:
    store, producer, counts = InMemoryDedupeStore(), FakeProducer(), AttemptCounts()

    outcome = await publishing_processor(store, producer=producer, counts=counts).process(
        kafka_record(0, "m-1"), FakeMailer([failure]), asyncio.Event()
    )

    assert outcome.finished == "deferred"
    assert counts == AttemptCounts(), "neither a wait for the relay nor an unknown outcome"
    _, deferred = events_of(producer)
    assert isinstance(deferred, Deferred)
    assert (deferred.reply.code, deferred.reply.enhanced) == (451, "4.4.2")


@pytest.mark.parametrize(
    ("failure", "enhanced"),
    [
        pytest.param(
            SMTPNotSupported(
                "relay.test:25 does not offer SMTPUTF8, which a mailbox of this email needs"
            ),
            "5.6.7",
            id="no_smtputf8",
        ),
        pytest.param(ValueError("the address cannot be encoded"), "5.6.0", id="unencodable"),
    ],
)
async def test_an_email_the_worker_cannot_send_bounces_locally_and_is_dead_lettered_unsendable(
    failure: Exception, enhanced: str
) -> None:
    producer, dead_letters = FakeProducer(), FakeDeadLetters()
    email = email_record("m-1", to=[ANA, BOB])

    outcome = await publishing_processor(producer=producer, dead_letters=dead_letters).process(
        record_of(email), FakeMailer([failure]), asyncio.Event()
    )

    assert (outcome.finished, outcome.dead_letter_reason) == ("dead-lettered", "unsendable")
    _, *rest, dead_lettered = events_of(producer)
    bounces = [event for event in rest if isinstance(event, Bounced)]
    assert [(b.recipient, b.reason, b.reply.code, b.reply.enhanced) for b in bounces] == [
        (ANA, "local", 550, enhanced),
        (BOB, "local", 550, enhanced),
    ]
    assert isinstance(dead_lettered, DeadLettered)
    assert dead_lettered.reason == "unsendable"
    assert len(dead_letters.published) == 1


@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(SMTPDataError(554, "5.6.0 message content rejected"), id="data"),
        pytest.param(SMTPSenderRefused(553, "5.1.8 sender address rejected", ANA), id="mail"),
    ],
)
async def test_a_5xx_to_the_message_bounces_every_recipient_and_suppresses_none(
    refusal: Exception,
) -> None:
    producer, suppressions = FakeProducer(), InMemorySuppressions()
    email = email_record("m-1", to=[ANA, BOB])

    outcome = await publishing_processor(producer=producer, suppressions=suppressions).process(
        record_of(email), FakeMailer([refusal]), asyncio.Event()
    )

    assert (outcome.finished, outcome.dead_letter_reason) == ("dead-lettered", "refused")
    bounces = [event for event in events_of(producer) if isinstance(event, Bounced)]
    assert [(b.recipient, b.reason, b.suppressed) for b in bounces] == [
        (ANA, "message", False),
        (BOB, "message", False),
    ]
    assert suppressions.kept == {}, "a refusal of the message says nothing of the addresses"


@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(SMTPDataError(451, "4.3.0 try again later"), id="data"),
        pytest.param(SMTPSenderRefused(452, "4.3.1 insufficient storage", ANA), id="mail"),
    ],
)
async def test_a_4xx_to_the_message_defers_every_recipient(refusal: Exception) -> None:
    store, producer = InMemoryDedupeStore(), FakeProducer()

    outcome = await publishing_processor(store, producer=producer).process(
        record_of(email_record("m-1", to=[ANA, BOB])), FakeMailer([refusal]), asyncio.Event()
    )

    assert outcome.finished == "deferred"
    assert states(store) == {ANA: ("deferred", 1), BOB: ("deferred", 1)}
    [(_, retry)] = retry_records_of(producer)
    assert retry.owed == [ANA, BOB]


@pytest.mark.parametrize(
    "value",
    [b"hello1", b'{"schema_version": 9}', None, b"{" + b" " * LARGE_RECORD_BYTES],
    ids=["not_json", "unknown_version", "no_value", "large_and_read_in_a_thread"],
)
async def test_a_poison_record_is_dead_lettered_without_sending(value: bytes | None) -> None:
    dead_letters, mailer, producer = FakeDeadLetters(), FakeMailer(), FakeProducer()

    outcome = await publishing_processor(producer=producer, dead_letters=dead_letters).process(
        consumer_record(0, value), mailer, asyncio.Event()
    )

    assert (outcome.finished, outcome.dead_letter_reason) == ("dead-lettered", "poison_record")
    assert outcome.published is None, "nothing to wait for"
    assert mailer.attempts == 0
    assert dead_letters.published[0][1].startswith("poison record")
    assert dead_letters.values == [value]
    assert producer.sent == []


MANY_RECIPIENTS = [f"r{n:02}@example.com" for n in range(MANY_ADDRESSES + 1)]


@pytest.mark.parametrize(
    ("fields", "in_a_thread"),
    [
        ({}, False),
        ({"text": "x" * LARGE_RECORD_BYTES}, True),
        ({"to": MANY_RECIPIENTS}, True),
    ],
    ids=["typical_on_the_loop", "large_in_a_thread", "many_addresses_in_a_thread"],
)
async def test_a_record_costly_to_read_is_parsed_and_rendered_off_the_event_loops_thread(
    monkeypatch: pytest.MonkeyPatch, fields: dict[str, object], in_a_thread: bool
) -> None:
    threads: dict[str, int] = {}

    def parse(value: bytes | None) -> EmailRecord:
        threads["parse"] = threading.get_ident()
        return parse_record(value)

    def render(record: EmailRecord, domain: str) -> OutgoingEmail:
        threads["render"] = threading.get_ident()
        return render_email(record, domain)

    monkeypatch.setattr(processor_module, "parse_record", parse)
    monkeypatch.setattr(processor_module, "render_email", render)
    email = email_record("m-1", **fields)
    mailer = FakeMailer()

    outcome = await publishing_processor().process(record_of(email), mailer, asyncio.Event())

    assert outcome.finished == "delivered"
    assert mailer.tried == [email.recipients]
    loop_thread = threading.get_ident()
    assert threads["parse"] == threads["render"], "both in one place"
    assert (threads["parse"] != loop_thread) is in_a_thread


def retry_value(**changes: object) -> bytes:
    """A retry record's value, changed."""
    record = parse_retry_record(retry_topic_record(0, email_record("m-1"), [ANA]).value)
    return record.model_copy(update=changes).to_kafka().value


@pytest.mark.parametrize(
    ("value", "why"),
    [
        pytest.param(b"junk", "not JSON", id="not_json"),
        pytest.param(kafka_record(0, "m-1").value, "has no email", id="an_email_send_record"),
        pytest.param(
            retry_value(owed=["mallory@example.com"]), "not for: mallory", id="owes_a_stranger"
        ),
    ],
)
async def test_a_poison_record_of_a_retry_topic_is_dead_lettered_as_it_is(
    value: bytes, why: str
) -> None:
    dead_letters, mailer = FakeDeadLetters(), FakeMailer()
    record = consumer_record(4, value, topic="email.send.retry-1m")

    outcome = await publishing_processor(dead_letters=dead_letters).process(
        record, mailer, asyncio.Event()
    )

    assert (outcome.finished, outcome.dead_letter_reason) == ("dead-lettered", "poison_record")
    assert mailer.attempts == 0
    [(published, error, _)] = dead_letters.published
    assert published is record
    assert why in error
    assert dead_letters.values == [value]


async def test_a_record_that_breaks_the_schema_rules_is_poison() -> None:
    dead_letters, mailer = FakeDeadLetters(), FakeMailer()
    forged = email_record("m-1").to_kafka()[1].replace(b'"subject":"m-1"', b'"subject":"a\\u2028b"')

    outcome = await publishing_processor(dead_letters=dead_letters).process(
        consumer_record(0, forged), mailer, asyncio.Event()
    )

    assert outcome.finished == "dead-lettered"
    assert mailer.attempts == 0
    assert "line-breaking" in dead_letters.published[0][1]


async def test_dead_letters_are_retried_while_kafka_refuses() -> None:
    dead_letters = FakeDeadLetters([KafkaConnectionError("broker down")] * 2)

    await publishing_processor(dead_letters=dead_letters).process(
        consumer_record(0, b"junk"), FakeMailer(), asyncio.Event()
    )

    assert len(dead_letters.published) == 1


async def test_a_dead_letter_refused_a_while_is_marked_once_with_where_it_went() -> None:
    store, producer = InMemoryDedupeStore(), FakeProducer()
    dead_letters = FakeDeadLetters([KafkaTimeoutError()] * 2)

    await publishing_processor(store, producer=producer, dead_letters=dead_letters).process(
        kafka_record(0, "m-1"), FakeMailer([refused(550, "5.1.1 no such user")]), asyncio.Event()
    )

    *_, dead_lettered = events_of(producer)
    assert isinstance(dead_lettered, DeadLettered)
    assert dead_lettered.dead_letter == DLQ_FIRST
    assert store.dead_lettered["m-1"] == producer.sent[-1][1]


class FlakyStore(InMemoryDedupeStore):
    """Fails its first `failures` writes, as a locked SQLite file does."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def record(
        self, message_id: str, rows: Iterable[RecipientRow], stage: int, source: str
    ) -> DeliveryState:
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        return await super().record(message_id, list(rows), stage, source)


async def test_a_failing_store_write_is_retried_and_the_email_sent_once() -> None:
    store, mailer = FlakyStore(failures=2), FakeMailer()

    outcome = await publishing_processor(store).process(
        kafka_record(0, "m-1"), mailer, asyncio.Event()
    )

    assert outcome.finished == "delivered"
    assert states(store) == {ANA: ("sent", 0)}
    assert mailer.attempts == 1


async def test_stopping_while_the_store_refuses_the_outcomes_says_they_may_be_sent_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, producer, stopping = FlakyStore(failures=1_000_000), FakeProducer(), asyncio.Event()
    task = asyncio.create_task(
        publishing_processor(store, producer=producer).process(
            kafka_record(0, "m-1"), FakeMailer(), stopping
        )
    )
    await asyncio.sleep(0.05)

    with caplog.at_level(logging.ERROR, logger="worker"):
        stopping.set()
        with pytest.raises(Stopped):
            await asyncio.wait_for(task, timeout=1)

    assert producer.sent == []
    assert "a redelivery would send it to them again" in caplog.text


class UnreachableStore(InMemoryDedupeStore):
    """A shared store (PostgreSQL) that is away for the first reads."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def state_of(self, message_id: str) -> DeliveryState | None:
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("the dedupe store is restarting")
        return await super().state_of(message_id)


async def test_a_failing_store_read_is_retried_not_a_crash() -> None:
    store, mailer = UnreachableStore(failures=2), FakeMailer()

    outcome = await publishing_processor(store).process(
        kafka_record(0, "m-1"), mailer, asyncio.Event()
    )

    assert outcome.finished == "delivered"
    assert mailer.attempts == 1


async def test_the_store_outage_is_known_while_it_lasts_and_cleared_after() -> None:
    store, outage = UnreachableStore(failures=1_000_000), StoreOutage()
    task = asyncio.create_task(
        publishing_processor(store, store_outage=outage).process(
            kafka_record(0, "m-1"), FakeMailer(), asyncio.Event()
        )
    )
    await asyncio.sleep(0.05)
    reason_while_away = outage.reason
    store.failures = 0

    assert (await asyncio.wait_for(task, timeout=1)).finished == "delivered"
    assert reason_while_away is not None
    assert "restarting" in reason_while_away
    assert outage.reason is None


class FlakySuppressions(InMemorySuppressions):
    """The list's store is away for the first `failures` calls of each kind."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.read_failures = self.write_failures = failures

    async def suppressed(self, addresses: Iterable[str]) -> dict[str, Suppression]:
        if self.read_failures:
            self.read_failures -= 1
            raise sqlite3.OperationalError("database is locked")
        return await super().suppressed(addresses)

    async def suppress(self, address: str, reply: str, message_id: str) -> None:
        if self.write_failures:
            self.write_failures -= 1
            raise sqlite3.OperationalError("database is locked")
        await super().suppress(address, reply, message_id)


async def test_a_failing_suppression_list_is_retried_for_reads_and_writes() -> None:
    suppressions, outage = FlakySuppressions(failures=2), StoreOutage()

    await publishing_processor(suppressions=suppressions, store_outage=outage).process(
        kafka_record(0, "m-1"), FakeMailer([refused(550, "5.1.1 no such user")]), asyncio.Event()
    )

    assert (suppressions.read_failures, suppressions.write_failures) == (0, 0)
    assert list(suppressions.kept) == [ANA]
    assert outage.reason is None


async def test_events_the_producer_refuses_are_handed_to_it_again() -> None:
    producer = FakeProducer(refusals=[KafkaTimeoutError()] * 2)

    outcome = await publishing_processor(producer=producer).process(
        kafka_record(0, "m-1"), FakeMailer(), asyncio.Event()
    )

    assert [type(event) for event in events_of(producer)] == [Accepted, Sent]
    assert outcome.published is not None
    assert [message.topic for message in outcome.published.events] == ["email.events"] * 2


async def test_no_log_line_names_a_bcc_recipient(caplog: pytest.LogCaptureFixture) -> None:
    secret, hidden, gone = "secret@example.com", "hidden@example.com", "gone@example.com"
    email = email_record("m-1", to=[ANA], bcc=[secret, hidden, gone])
    suppressions = InMemorySuppressions({gone: "550 5.1.1 no such user"})
    processor = publishing_processor(suppressions=suppressions, clock=Clock())

    with caplog.at_level(logging.DEBUG):
        await processor.process(
            record_of(email),
            FakeMailer([{hidden: GREYLISTED, secret: SMTPResponse(550, "5.1.1 no")}]),
            asyncio.Event(),
        )
        await processor.process(
            retry_topic_record(0, email, [hidden]),
            FakeMailer([OutcomeUnknown("lost")]),
            asyncio.Event(),
        )
        outcome = await processor.process(
            retry_topic_record(0, email, [hidden], attempt=2, topic="email.send.retry-5m"),
            FakeMailer([refused(550, "5.1.1 no", hidden)]),
            asyncio.Event(),
        )

    assert (outcome.finished, outcome.dead_letter_reason) == ("dead-lettered", "refused")
    assert len(caplog.records) >= 5, "it logs each try"
    for address in (secret, hidden, gone):
        assert address not in caplog.text


@pytest.mark.parametrize(
    "waits",
    [
        pytest.param("relay", id="for_the_relay"),
        pytest.param("store", id="for_the_store"),
        pytest.param("dead_letters", id="for_the_dead_letter_topic"),
    ],
)
async def test_a_stop_interrupts_any_wait_at_once(waits: str) -> None:
    slow = RetryPolicy(initial_seconds=60, max_seconds=60)
    away = RelayUnavailable("relay.test:25: ConnectionRefusedError")
    store = UnreachableStore(failures=1 if waits == "store" else 0)
    dead_letters = FakeDeadLetters([KafkaConnectionError()] if waits == "dead_letters" else [])
    mailer = FakeMailer([away] if waits == "relay" else [refused(550, "5.1.1 no such user")])
    stopping = asyncio.Event()
    task = asyncio.create_task(
        publishing_processor(store, dead_letters=dead_letters, retry=slow).process(
            kafka_record(0, "m-1"), mailer, stopping
        )
    )
    await asyncio.sleep(0.05)
    assert not task.done()

    stopping.set()

    with pytest.raises(Stopped):
        await asyncio.wait_for(task, timeout=1)


@pytest.mark.parametrize("module", ["services.worker.processor", "services.worker.smtp"])
def test_the_module_imports_on_its_own(module: str) -> None:
    imported = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert imported.returncode == 0, imported.stderr
