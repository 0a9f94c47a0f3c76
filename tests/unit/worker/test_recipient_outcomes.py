"""What one try makes of each recipient, with no I/O: whom it owes the email, the rows it
writes (sent, bounced, suppressed, deferred or expired) with the events they keep, the retry
record of the deferred, and why an email ends in the dead-letter topic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiosmtplib import (
    SMTPNotSupported,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponse,
    SMTPResponseException,
)

from services.worker.dedupe.contract import DeliveryState, RecipientRow, RecipientState
from services.worker.recipient_outcomes import (
    RetryPlan,
    Stage,
    bounce_of,
    bounced,
    dead_letter_reason,
    deferred,
    every_recipient,
    finished_as,
    handed_off,
    retry_record,
    rows_after_failure,
    rows_of_transaction,
    sent,
    stored_event_record,
    suppressed,
    synthetic_reply,
    what_is_owed,
)
from services.worker.smtp import Transaction
from services.worker.smtp_failures import OutcomeUnknown, classify
from shared.events import (
    Bounced,
    Deferred,
    Position,
    Reply,
    Sent,
    Suppressed,
    Suppression,
    parse_event,
)
from shared.retry_topics import RetryRecord, parse_retry_record, parse_schedule
from tests.unit.worker.fakes import email_record

ANA, BOB, CY = "ana@example.com", "bob@example.com", "cy@example.com"
ACCEPTED_AT = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
NOW = ACCEPTED_AT + timedelta(seconds=5)
PLAN = RetryPlan(parse_schedule("1m,5m"), timedelta(hours=24), "email.send")
EMAIL = email_record("m-1", to=[ANA, BOB, CY])
MAIN = Position(topic="email.send", partition=2, offset=40)
RETRY_1 = Position(topic="email.send.retry-1m", partition=2, offset=7)
QUEUED = Reply.of(250, "2.0.0 Ok: queued as 4F2A")
GREYLISTED = Reply.of(451, "4.7.1 greylisted")
NO_SUCH_USER = Reply.of(550, "5.1.1 no such user")


def stage(attempt: int = 0, recipients: tuple[str, ...] = (ANA, BOB, CY)) -> Stage:
    return Stage(EMAIL, attempt, MAIN if attempt == 0 else RETRY_1, MAIN, recipients)


def row(recipient: str, state: RecipientState, attempt: int) -> RecipientRow:
    return RecipientRow(recipient, state, attempt, None)


def test_every_recipient_is_named_once_bare_in_to_cc_bcc_order_domains_as_a_labels() -> None:
    email = email_record(
        "m-1",
        to=["Bob <bob@example.com>", "ana@example.com"],
        cc=["ANA <ana@example.com>", "Иван <info@пример.рф>"],
        bcc=["bob@example.com", "cy@example.com"],
    )

    assert every_recipient(email) == (BOB, ANA, "info@xn--e1afmkfd.xn--p1ai", CY)


@pytest.mark.parametrize(
    ("attempt", "rows", "owed", "settled"),
    [
        pytest.param(0, None, [ANA, BOB, CY], [], id="never_seen"),
        pytest.param(
            0,
            [row(ANA, "sent", 0), row(BOB, "deferred", 1)],
            [CY],
            [row(ANA, "sent", 0), row(BOB, "deferred", 1)],
            id="main_read_again_after_handing_bob_to_retry_1",
        ),
        pytest.param(
            0, [row(BOB, "deferred", 2)], [ANA, CY], [], id="main_read_again_after_retry_1_moved_on"
        ),
        pytest.param(
            1,
            [row(ANA, "deferred", 1), row(BOB, "bounced", 0), row(CY, "suppressed", 1)],
            [ANA],
            [row(BOB, "bounced", 0), row(CY, "suppressed", 1)],
            id="retry_1_owns_what_is_deferred_at_1",
        ),
        pytest.param(
            1,
            [row(ANA, "deferred", 2), row(BOB, "deferred", 3)],
            [CY],
            [row(ANA, "deferred", 2)],
            id="retry_1_read_again_settles_only_its_own_hand_offs",
        ),
    ],
)
def test_a_try_owes_the_recipients_without_a_row_or_deferred_to_it(
    attempt: int,
    rows: list[RecipientRow] | None,
    owed: list[str],
    settled: list[RecipientRow],
) -> None:
    state = None if rows is None else DeliveryState(recipients={r.recipient: r for r in rows})

    assert what_is_owed(stage(attempt), state) == (owed, settled)


def test_only_the_stages_recipients_are_looked_at() -> None:
    state = DeliveryState(recipients={ANA: row(ANA, "sent", 0), BOB: row(BOB, "deferred", 1)})

    assert what_is_owed(stage(1, recipients=(BOB,)), state) == ([BOB], [])


def test_a_sent_row_keeps_the_sent_event_of_its_try() -> None:
    made = sent(stage(1), BOB, QUEUED, NOW)

    assert (made.recipient, made.state, made.attempt, made.final) == (BOB, "sent", 1, True)
    assert made.event is not None
    event = parse_event(made.event)
    assert isinstance(event, Sent)
    assert (event.message_id, event.recipient, event.attempt, event.reply, event.at) == (
        "m-1", BOB, 1, QUEUED, NOW,
    )  # fmt: skip
    assert event.record == RETRY_1, "the record this try read"


@pytest.mark.parametrize("suppresses", [True, False])
def test_a_bounced_row_says_why_and_whether_the_address_was_suppressed(suppresses: bool) -> None:
    made = bounced(stage(), ANA, NO_SUCH_USER, "address", NOW, suppressed=suppresses)

    assert (made.state, made.attempt) == ("bounced", 0)
    event = bounce_of(made)
    assert event is not None
    assert (event.recipient, event.reason, event.reply, event.suppressed) == (
        ANA, "address", NO_SUCH_USER, suppresses,
    )  # fmt: skip


def test_a_suppressed_row_keeps_why_the_address_is_suppressed() -> None:
    why = Suppression(since=ACCEPTED_AT - timedelta(days=1), reply=NO_SUCH_USER, message_id="m-0")

    made = suppressed(stage(1), CY, why, NOW)

    assert (made.state, made.attempt, made.final) == ("suppressed", 1, True)
    assert made.event is not None
    event = parse_event(made.event)
    assert isinstance(event, Suppressed)
    assert (event.recipient, event.suppression, event.record) == (CY, why, RETRY_1)


@pytest.mark.parametrize(
    ("attempt", "topic", "delay"),
    [
        (0, "email.send.retry-1m", timedelta(minutes=1)),
        (1, "email.send.retry-5m", timedelta(minutes=5)),
        (4, "email.send.retry-5m", timedelta(minutes=5)),  # the last delay, reused
    ],
)
def test_a_deferred_row_is_owned_by_the_next_retry_and_names_its_topic_and_due_time(
    attempt: int, topic: str, delay: timedelta
) -> None:
    made = deferred(stage(attempt), BOB, GREYLISTED, NOW, PLAN)

    assert (made.state, made.attempt, made.final) == ("deferred", attempt + 1, False)
    assert made.event is not None
    event = parse_event(made.event)
    assert isinstance(event, Deferred)
    assert (event.attempt, event.reply, event.retry_topic, event.next_try_at) == (
        attempt, GREYLISTED, topic, NOW + delay,
    )  # fmt: skip


def test_a_deferral_whose_next_try_would_pass_the_age_limit_bounces_as_expired() -> None:
    late = ACCEPTED_AT + timedelta(hours=24) - timedelta(seconds=59)

    made = deferred(stage(3), BOB, GREYLISTED, late, PLAN)

    assert (made.state, made.attempt, made.final) == ("bounced", 3, True)
    event = bounce_of(made)
    assert event is not None
    assert (event.reason, event.reply, event.suppressed) == ("expired", GREYLISTED, False)


def test_a_deferral_whose_next_try_ends_at_the_age_limit_is_still_tried() -> None:
    just_in_time = ACCEPTED_AT + timedelta(hours=24) - timedelta(minutes=1)

    assert deferred(stage(0), BOB, GREYLISTED, just_in_time, PLAN).state == "deferred"


def test_handed_off_are_the_rows_this_try_deferred() -> None:
    rows = [
        row(ANA, "deferred", 1),
        row(BOB, "deferred", 2),  # retry 1's hand-off, not main's
        row(CY, "sent", 1),
    ]

    assert handed_off(stage(0), rows) == [rows[0]]
    assert handed_off(stage(1), rows) == [rows[1]]


def test_the_retry_record_is_made_of_the_deferred_rows_and_again_the_same() -> None:
    rows = [deferred(stage(0), r, GREYLISTED, NOW, PLAN) for r in (BOB, CY)]

    topic, record = retry_record(stage(0), rows)
    _, again = retry_record(stage(0), list(rows))

    assert topic == "email.send.retry-1m"
    assert record == again
    assert (
        record
        == RetryRecord(
            message_id="m-1",
            attempt=1,
            due_at=NOW + timedelta(minutes=1),
            deferred_at=NOW,
            owed=[BOB, CY],
            last_reply=GREYLISTED,
            origin=MAIN,
            email=EMAIL,
        ).to_kafka()
    )
    assert parse_retry_record(record.value).email.to_kafka() == EMAIL.to_kafka()


def test_a_retry_stages_record_keeps_the_origin_on_email_send() -> None:
    rows = [deferred(stage(1), BOB, GREYLISTED, NOW, PLAN)]

    topic, record = retry_record(stage(1), rows)

    retry = parse_retry_record(record.value)
    assert (topic, retry.attempt, retry.origin) == ("email.send.retry-5m", 2, MAIN)


@pytest.mark.parametrize(
    ("made", "state"),
    [
        pytest.param(sent(stage(), ANA, QUEUED, NOW), "sent", id="sent"),
        pytest.param(bounced(stage(), ANA, NO_SUCH_USER, "address", NOW), "bounced", id="bounced"),
        pytest.param(deferred(stage(), ANA, GREYLISTED, NOW, PLAN), "deferred", id="deferred"),
        pytest.param(
            deferred(stage(), ANA, GREYLISTED, NOW + timedelta(days=2), PLAN),
            "bounced",
            id="deferred_past_the_age_limit",
        ),
        pytest.param(
            suppressed(
                stage(), ANA, Suppression(since=NOW, reply=NO_SUCH_USER, message_id="m-0"), NOW
            ),
            "suppressed",
            id="suppressed",
        ),
    ],
)
def test_a_rows_event_is_ready_to_produce_with_its_key_and_headers(
    made: RecipientRow, state: str
) -> None:
    produced = stored_event_record(EMAIL.message_id, made)

    assert made.event is not None
    event = parse_event(made.event)
    assert event.type == made.state == state
    assert produced == event.to_kafka()


def test_an_earlier_versions_row_has_no_event_to_produce_nor_bounce() -> None:
    old = RecipientRow(ANA, "sent", 0, None)

    assert stored_event_record(EMAIL.message_id, old) is None
    assert bounce_of(old) is None
    assert bounce_of(sent(stage(), ANA, QUEUED, NOW)) is None, "a sent row is no bounce"


def rows_of(**states: tuple[RecipientState, str]) -> DeliveryState:
    """`bob=("bounced", "local")`: each row by name, a bounced one with its reason."""
    made = {}
    for name, (state, reason) in states.items():
        recipient = f"{name}@example.com"
        if state == "bounced":
            reply = GREYLISTED if reason == "expired" else NO_SUCH_USER
            made[recipient] = bounced(stage(), recipient, reply, reason, NOW)  # type: ignore[arg-type]
        elif state == "deferred":
            made[recipient] = deferred(stage(), recipient, GREYLISTED, NOW, PLAN)
        else:
            made[recipient] = RecipientRow(recipient, state, 0, None)
    return DeliveryState(recipients=made)


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        pytest.param(rows_of(ana=("sent", ""), bob=("sent", ""), cy=("sent", "")), None, id="sent"),
        pytest.param(
            rows_of(ana=("sent", ""), bob=("bounced", "address")), None, id="cy_still_owed"
        ),
        pytest.param(
            rows_of(ana=("sent", ""), bob=("bounced", "address"), cy=("deferred", "")),
            None,
            id="cy_deferred",
        ),
        pytest.param(
            rows_of(ana=("suppressed", ""), bob=("suppressed", ""), cy=("sent", "")),
            None,
            id="suppressed_is_no_fault",
        ),
        pytest.param(
            rows_of(ana=("sent", ""), bob=("bounced", "address"), cy=("bounced", "message")),
            "refused",
            id="refused",
        ),
        pytest.param(
            rows_of(ana=("bounced", "local"), bob=("bounced", "address"), cy=("sent", "")),
            "unsendable",
            id="unsendable",
        ),
        pytest.param(
            rows_of(ana=("bounced", "local"), bob=("bounced", "expired"), cy=("sent", "")),
            "expired",
            id="expired_first",
        ),
    ],
)
def test_an_email_is_dead_lettered_once_no_one_is_owed_it_and_some_bounced(
    state: DeliveryState, reason: str | None
) -> None:
    assert dead_letter_reason(EMAIL, state) == reason


def test_a_reply_in_the_workers_words_has_its_enhanced_status() -> None:
    reply = synthetic_reply(451, "4.4.2", "the connection was lost after MAIL FROM")

    assert reply == Reply(
        code=451, enhanced="4.4.2", text="the connection was lost after MAIL FROM"
    )


def test_a_bounced_event_read_back_is_the_one_written() -> None:
    made = bounced(stage(), ANA, NO_SUCH_USER, "message", NOW)

    event = bounce_of(made)

    assert isinstance(event, Bounced)
    assert made.event == event.to_kafka().value


def test_a_transaction_makes_each_recipient_sent_bounced_or_deferred_by_its_reply() -> None:
    transaction = Transaction(
        SMTPResponse(250, "2.0.0 Ok: queued as 4F2A"),
        {
            BOB: SMTPResponse(550, "5.1.1 <bob@example.com>: Recipient address rejected"),
            CY: SMTPResponse(252, "2.1.5 Cannot VRFY user"),
        },
    )

    rows = rows_of_transaction(stage(), [ANA, BOB, CY], transaction, NOW, PLAN)

    assert [(row.recipient, row.state, row.attempt) for row in rows] == [
        (ANA, "sent", 0),
        (BOB, "bounced", 0),
        (CY, "deferred", 1),
    ]
    bounce, odd = bounce_of(rows[1]), parse_event(rows[2].event or b"")
    assert bounce is not None
    assert (bounce.reason, bounce.suppressed) == ("address", True)
    assert isinstance(odd, Deferred)
    assert (odd.reply.code, odd.reply.enhanced) == (451, "4.4.0"), "neither taken nor refused"


@pytest.mark.parametrize(
    ("error", "state", "reply", "reason"),
    [
        pytest.param(
            SMTPResponseException(554, "5.6.0 message refused"), "bounced", "554 5.6.0",
            "message", id="refused_after_data",
        ),
        pytest.param(
            SMTPResponseException(451, "4.3.0 try later"), "deferred", "451 4.3.0", None,
            id="deferred_after_data",
        ),
        pytest.param(
            OutcomeUnknown("the connection was lost after the end of DATA"), "deferred",
            "451 4.4.2", None, id="outcome_unknown",
        ),
        pytest.param(
            SMTPNotSupported("the server does not support SMTPUTF8"), "bounced", "550 5.6.7",
            "local", id="unsendable",
        ),
        pytest.param(
            ValueError("the message cannot be encoded"), "bounced", "550 5.6.0", "local",
            id="cannot_be_sent",
        ),
        pytest.param(
            SMTPRecipientsRefused([
                SMTPRecipientRefused(550, "5.1.1 no such user", ANA),
                SMTPRecipientRefused(451, "4.7.1 greylisted", BOB),
            ]),
            "per recipient", "550 5.1.1", "address", id="every_recipient_refused",
        ),
    ],
)  # fmt: skip
def test_a_failed_transaction_makes_every_owed_recipient_one_row(
    error: Exception, state: str, reply: str, reason: str | None
) -> None:
    rows = rows_after_failure(stage(), [ANA, BOB], error, classify(error), NOW, PLAN)

    states = ["bounced", "deferred"] if state == "per recipient" else [state, state]
    assert [row.state for row in rows] == states
    event = parse_event(rows[0].event or b"")
    assert isinstance(event, Bounced | Deferred)
    assert f"{event.reply.code} {event.reply.enhanced}" == reply
    assert getattr(event, "reason", None) == reason


@pytest.mark.parametrize(
    ("written", "sent_now", "dead_lettered", "finished"),
    [
        pytest.param([row(ANA, "sent", 0)], 1, False, "delivered", id="delivered"),
        pytest.param([row(ANA, "sent", 0)], 1, True, "delivered", id="delivered_to_some"),
        pytest.param([row(ANA, "bounced", 0)], 0, True, "dead-lettered", id="dead_lettered"),
        pytest.param([row(ANA, "deferred", 1)], 0, False, "deferred", id="deferred"),
        pytest.param([row(ANA, "suppressed", 0)], 0, False, "suppressed", id="suppressed"),
        pytest.param([], 0, False, "duplicate", id="nothing_owed"),
    ],
)
def test_a_try_finishes_as_what_it_wrote_says(
    written: list[RecipientRow], sent_now: int, dead_lettered: bool, finished: str
) -> None:
    assert finished_as(written, sent_now, dead_lettered) == finished
