"""An email's status from its events: a table of histories and what each says, each recipient's
state, the answer's shape, and copies of an event counted once."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from services.api.status import EmailState, EventPosition, KnownEvent, email_status
from shared.events import Event
from tests.unit.api.email_events import (
    GREYLISTED,
    MESSAGE_ID,
    NO_SUCH_MAILBOX,
    OK,
    accepted,
    at,
    bounced,
    dead_lettered,
    deferred,
    known,
    sent,
    suppressed,
)

ANA, BOB = "ana@example.com", "bob@example.com"
NOW = at(10)  # a deferral at 1 s waits until 61 s


@pytest.mark.parametrize(
    ("events", "status"),
    [
        ([accepted(ANA)], "queued"),
        ([accepted(ANA, BOB), sent(ANA)], "sending"),
        ([accepted(ANA, BOB), deferred(BOB)], "deferred"),
        ([accepted(ANA, BOB), sent(ANA), deferred(BOB)], "deferred"),
        ([accepted(ANA), deferred(ANA, seconds=-60)], "sending"),  # its retry is due
        ([accepted(ANA, BOB), sent(ANA), sent(BOB)], "delivered"),
        ([accepted(ANA), deferred(ANA), sent(ANA, attempt=1, seconds=61)], "delivered"),
        ([accepted(ANA, BOB), sent(ANA), bounced(BOB)], "partly_delivered"),
        ([accepted(ANA, BOB), sent(ANA), suppressed(BOB)], "partly_delivered"),
        ([accepted(ANA, BOB), bounced(ANA), bounced(BOB)], "bounced"),
        ([accepted(ANA, BOB), bounced(ANA), suppressed(BOB)], "bounced"),
        ([accepted(ANA), suppressed(ANA)], "suppressed"),
        ([accepted(ANA, BOB), bounced(ANA, "message"), bounced(BOB, "message")], "failed"),
        ([accepted(ANA), bounced(ANA, "local")], "failed"),
        ([accepted(ANA, BOB), bounced(ANA), bounced(BOB, "expired", attempt=5)], "failed"),
        (
            [accepted(ANA), deferred(ANA), bounced(ANA, "expired", 1, 61), dead_lettered(62)],
            "failed",
        ),
        ([accepted(ANA, BOB), sent(ANA), dead_lettered()], "failed"),  # BOB will never be tried
    ],
)
def test_the_status_of_an_email_is_what_its_events_say(
    events: list[Event], status: EmailState
) -> None:
    answer = email_status(known(*events), NOW)

    assert answer is not None
    assert answer.status == status


def test_no_events_is_no_email() -> None:
    assert email_status([], NOW) is None


def test_the_answer_has_each_recipients_state_and_the_history_with_positions() -> None:
    events: list[Event] = [
        accepted(ANA, (BOB, "bcc")),
        deferred(BOB, seconds=1),
        sent(ANA, seconds=1.5),
    ]

    answer = email_status(known(*events), NOW)

    assert answer is not None
    assert json.loads(answer.model_dump_json(by_alias=True)) == {
        "id": MESSAGE_ID,
        "status": "deferred",
        "from": "Shop <shop@example.com>",
        "subject": "Your order",
        "tags": ["order"],
        "created_at": "2026-11-25T09:30:00Z",
        "recipients": [
            {
                "address": ANA,
                "kind": "to",
                "state": "sent",
                "last_reply": OK.model_dump(),
                "attempts": 1,
                "next_try_at": None,
            },
            {
                "address": BOB,
                "kind": "bcc",
                "state": "deferred",
                "last_reply": GREYLISTED.model_dump(),
                "attempts": 1,
                "next_try_at": "2026-11-25T09:31:01Z",
            },
        ],
        "history": [
            {
                "at": "2026-11-25T09:30:00Z",
                "type": "accepted",
                "recipient": None,
                "reply": None,
                "attempt": None,
                "record": {"topic": "email.send", "partition": 1, "offset": 42},
                "event": {"partition": 1, "offset": 100},
            },
            {
                "at": "2026-11-25T09:30:01Z",
                "type": "deferred",
                "recipient": BOB,
                "reply": GREYLISTED.model_dump(),
                "attempt": 0,
                "record": {"topic": "email.send", "partition": 1, "offset": 42},
                "event": {"partition": 1, "offset": 101},
            },
            {
                "at": "2026-11-25T09:30:01.500000Z",
                "type": "sent",
                "recipient": ANA,
                "reply": OK.model_dump(),
                "attempt": 0,
                "record": {"topic": "email.send", "partition": 1, "offset": 42},
                "event": {"partition": 1, "offset": 102},
            },
        ],
    }


def test_a_recipient_counts_every_try_and_keeps_the_last_reply() -> None:
    events: list[Event] = [
        accepted(ANA),
        deferred(ANA, attempt=0, seconds=1),
        deferred(ANA, attempt=1, seconds=61),
        sent(ANA, attempt=2, seconds=361),
    ]

    answer = email_status(known(*events), at(400))

    assert answer is not None
    [ana] = answer.recipients
    assert (ana.state, ana.attempts, ana.last_reply, ana.next_try_at) == ("sent", 3, OK, None)


def test_a_deferred_recipient_says_when_it_is_tried_next() -> None:
    answer = email_status(known(accepted(ANA), deferred(ANA, seconds=1, wait=60)), NOW)

    assert answer is not None
    assert answer.recipients[0].next_try_at == at(61)


def test_a_suppressed_recipient_shows_the_reply_that_suppressed_it_and_no_try() -> None:
    answer = email_status(known(accepted(ANA), suppressed(ANA)), NOW)

    assert answer is not None
    [ana] = answer.recipients
    assert (ana.state, ana.last_reply, ana.attempts) == ("suppressed", NO_SUCH_MAILBOX, 0)
    assert answer.history[1].reply == NO_SUCH_MAILBOX


def test_copies_of_an_event_count_once() -> None:
    events = known(accepted(ANA), deferred(ANA), deferred(ANA), sent(ANA, 1, 61), sent(ANA, 1, 61))

    answer = email_status(events, NOW)

    assert answer is not None
    assert [entry.type for entry in answer.history] == ["accepted", "deferred", "sent"]
    assert answer.recipients[0].attempts == 2


def test_the_first_ending_applied_wins() -> None:
    """Two endings for one recipient share an id and cannot both be kept; if they were, the
    first would stay."""
    answer = email_status(known(accepted(ANA), sent(ANA), bounced(ANA)), NOW)

    assert answer is not None
    assert answer.status == "delivered"
    assert answer.recipients[0].state == "sent"


def test_a_deferral_after_the_ending_changes_nothing() -> None:
    answer = email_status(known(accepted(ANA), sent(ANA, 1, 61), deferred(ANA, 0, 1)), NOW)

    assert answer is not None
    assert (answer.status, answer.recipients[0].state) == ("delivered", "sent")


def test_an_older_deferral_read_after_a_newer_one_keeps_the_newer() -> None:
    events = known(accepted(ANA), deferred(ANA, 1, 61, wait=300), deferred(ANA, 0, 1, wait=60))

    answer = email_status(events, NOW)

    assert answer is not None
    assert answer.recipients[0].next_try_at == at(361)


def test_the_api_s_own_accepted_event_has_no_place_in_the_topic_yet() -> None:
    events = [KnownEvent(accepted(ANA), None)]

    answer = email_status(events, NOW)

    assert answer is not None
    assert answer.history[0].event is None
    assert answer.status == "queued"


def test_without_the_accepted_event_the_recipients_come_from_the_others() -> None:
    """Its copy not read yet on this replica, or pruned before the email's later events."""
    answer = email_status(known(sent(ANA), deferred(BOB)), NOW)

    assert answer is not None
    assert (answer.sender, answer.subject, answer.created_at, answer.tags) == (None, None, None, [])
    assert [(r.address, r.kind, r.state) for r in answer.recipients] == [
        (ANA, None, "sent"),
        (BOB, None, "deferred"),
    ]
    assert answer.status == "deferred"


def test_the_event_positions_are_those_given() -> None:
    events = [KnownEvent(accepted(ANA), EventPosition(partition=2, offset=7))]

    answer = email_status(events, datetime.now().astimezone())

    assert answer is not None
    assert answer.history[0].event == EventPosition(partition=2, offset=7)
