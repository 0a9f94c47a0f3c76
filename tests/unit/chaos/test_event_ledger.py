"""The chaos harness's reading of email.events: one final event per recipient, of the type the
sink shows, copies counted and allowed, and everything else named as a problem."""

from __future__ import annotations

from tests.chaos.event_ledger import (
    EventLedger,
    event_problems,
    expiry,
    ledger_of,
    never_deferred,
    pair,
    unsettled,
)
from tests.unit.chaos.events import (
    accepted,
    bounced,
    dead_lettered,
    deferred,
    sent,
    suppressed,
)

ONE = "0b5e1c2a-8f0e-5a55-9c4e-3f1d2b7a9e10"
TWO = "6f1c1f3e-2b7d-4c1e-9a57-1f0f7a1d2c3b"
ANA = "ana@example.com"
BOUNCING = "bounced+1@simulator.example.com"


def test_a_copy_of_an_event_is_counted_once_and_as_a_copy() -> None:
    ledger = ledger_of([accepted(ONE, ANA), sent(ONE, ANA), sent(ONE, ANA), sent(ONE, ANA)])

    assert ledger.read == 4
    assert ledger.copies == 2
    assert ledger.final_of(pair(ONE, ANA)) is not None
    assert len(ledger.finals[pair(ONE, ANA)]) == 1


def test_the_accepted_events_second_writer_makes_no_copies() -> None:
    # The API publishes it at the 202, and the worker again when it first reads the record.
    ledger = ledger_of([accepted(ONE, ANA), accepted(ONE, ANA), sent(ONE, ANA)])

    assert (ledger.read, ledger.copies) == (3, 0)
    assert ledger.accepted == {ONE}


def test_every_recipient_with_one_final_event_the_sink_agrees_with_is_no_problem() -> None:
    ledger = ledger_of(
        [
            accepted(ONE, ANA, BOUNCING),
            sent(ONE, ANA),
            bounced(ONE, BOUNCING),
            accepted(TWO, BOUNCING),
            suppressed(TWO, BOUNCING, because_of=ONE),
        ]
    )

    problems = event_problems(
        ledger, {ONE: [ANA, BOUNCING], TWO: [BOUNCING]}, copies={pair(ONE, ANA)}
    )

    assert problems.count == 0
    assert unsettled(ledger, {ONE: [ANA, BOUNCING], TWO: [BOUNCING]}) == 0


def test_a_recipient_without_a_final_event_is_a_problem_and_unsettled() -> None:
    ledger = ledger_of([accepted(ONE, ANA, BOUNCING), sent(ONE, ANA)])

    problems = event_problems(ledger, {ONE: [ANA, BOUNCING]}, copies={pair(ONE, ANA)})

    assert problems.no_final == [pair(ONE, BOUNCING)]
    assert problems.count == 1
    assert unsettled(ledger, {ONE: [ANA, BOUNCING]}) == 1


def test_sent_without_a_copy_in_the_sink_is_not_what_the_sink_shows() -> None:
    ledger = ledger_of([accepted(ONE, ANA), sent(ONE, ANA)])

    problems = event_problems(ledger, {ONE: [ANA]}, copies=set())

    assert problems.not_what_the_sink_shows == [(pair(ONE, ANA), "sent")]


def test_a_bounce_for_a_recipient_the_sink_has_a_copy_for_is_not_what_the_sink_shows() -> None:
    ledger = ledger_of([accepted(ONE, ANA), bounced(ONE, ANA)])

    problems = event_problems(ledger, {ONE: [ANA]}, copies={pair(ONE, ANA)})

    assert problems.not_what_the_sink_shows == [(pair(ONE, ANA), "bounced")]


def test_two_endings_under_one_id_are_a_conflict() -> None:
    # A worker with a store of its own sends again and writes its own sent event: the same id
    # (one final id per recipient), another body.
    ledger = ledger_of([accepted(ONE, ANA), sent(ONE, ANA, seconds=1), sent(ONE, ANA, seconds=9)])

    problems = event_problems(ledger, {ONE: [ANA]}, copies={pair(ONE, ANA)})

    assert len(problems.conflicting_ids) == 1
    assert problems.count == 1
    assert ledger.copies == 1  # two reads of one id, whatever their bodies


def test_a_final_event_for_an_email_the_api_never_accepted_is_a_stranger() -> None:
    ledger = ledger_of([accepted(ONE, ANA), sent(ONE, ANA), sent(TWO, ANA)])

    problems = event_problems(ledger, {ONE: [ANA]}, copies={pair(ONE, ANA), pair(TWO, ANA)})

    assert problems.strangers == [pair(TWO, ANA)]


def test_an_accepted_email_without_its_accepted_event_is_a_problem() -> None:
    ledger = ledger_of([sent(ONE, ANA)])

    problems = event_problems(ledger, {ONE: [ANA]}, copies={pair(ONE, ANA)})

    assert problems.no_accepted_event == [ONE]


def test_an_unreadable_event_is_a_problem_that_says_why() -> None:
    ledger = ledger_of([b"not json", accepted(ONE, ANA), sent(ONE, ANA)])

    problems = event_problems(ledger, {ONE: [ANA]}, copies={pair(ONE, ANA)})

    assert ledger.copies == 0
    assert len(problems.unreadable) == 1
    assert "not JSON" in problems.unreadable[0]


def test_recipients_are_matched_whatever_their_case() -> None:
    ledger = ledger_of([accepted(ONE, "Ana@Example.com"), sent(ONE, "Ana@Example.com")])

    problems = event_problems(ledger, {ONE: ["ana@example.com"]}, copies={pair(ONE, ANA)})

    assert problems.count == 0


def test_the_details_name_how_many_of_each_problem_and_the_first_few() -> None:
    ledger = EventLedger()
    recipients = {f"id-{n}": [ANA] for n in range(30)}

    details = event_problems(ledger, recipients, copies=set()).details()

    assert details["no_final_event"]["count"] == 30
    assert len(details["no_final_event"]["first"]) == 20
    assert details["accepted_without_accepted_event"]["count"] == 30


def test_deferrals_are_counted_once_each_and_recipients_never_deferred_are_named() -> None:
    deferred_one = deferred(ONE, ANA, seconds=1, attempt=0)
    ledger = ledger_of([deferred_one, deferred_one, deferred(ONE, ANA, seconds=3, attempt=1)])

    assert ledger.deferred_count == 2
    assert ledger.copies == 1
    assert never_deferred(ledger, [pair(ONE, ANA), pair(TWO, ANA)]) == [pair(TWO, ANA)]
    assert ledger.deferred_at(pair(ONE, ANA))[0] < ledger.deferred_at(pair(ONE, ANA))[1]


def test_an_expired_recipient_bounced_expired_and_dead_lettered_once_is_no_problem() -> None:
    ledger = ledger_of(
        [
            accepted(ONE, ANA, "expiring1@grey.example.com"),
            sent(ONE, ANA),
            deferred(ONE, "expiring1@grey.example.com"),
            bounced(ONE, "expiring1@grey.example.com", reason="expired", seconds=37, attempt=5),
            dead_lettered(ONE, "expired"),
            dead_lettered(ONE, "expired"),
        ]
    )

    ended = expiry(ledger, [pair(ONE, "expiring1@grey.example.com")], dead_letters={ONE})

    assert ended.count == 0


def test_an_expiring_recipient_that_ended_otherwise_is_named_with_how_it_ended() -> None:
    expiring = "expiring1@grey.example.com"
    ledger = ledger_of([bounced(ONE, expiring, reason="address"), dead_lettered(ONE, "refused")])

    ended = expiry(ledger, [pair(ONE, expiring)], dead_letters={ONE, TWO})

    assert ended.not_expired == [(pair(ONE, expiring), "bounced (address)")]
    assert ended.not_dead_lettered == [ONE]
    assert ended.missing_in_dlq == []
    assert ended.unexpected_in_dlq == [TWO]
    assert ended.count == 3


def test_an_expired_email_missing_in_the_dead_letter_topic_is_named() -> None:
    expiring = "expiring1@grey.example.com"
    ledger = ledger_of([bounced(ONE, expiring, reason="expired"), dead_lettered(ONE)])

    ended = expiry(ledger, [pair(ONE, expiring)], dead_letters=set())

    assert ended.missing_in_dlq == [ONE]
    assert ended.not_expired == []
