"""Greylisting's decision by a clock the test turns: refused from a pair's first try until the
delay has passed, then accepted at once for good; other domains never; memory bounded."""

from __future__ import annotations

import logging

import pytest

from services.smtp_sink.simulator.faults import FaultPolicy, recipient_refusal
from services.smtp_sink.simulator.greylist import MAX_PAIRS, RETENTION_SECONDS, Greylist

ANN, GREY, OTHER = "ann@example.com", "a@grey.example", "ok@example.com"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def greylist(
    clock: Clock,
    retention_seconds: float = RETENTION_SECONDS,
    max_pairs: int = MAX_PAIRS,
) -> Greylist:
    """grey.example greylisted for 300 s."""
    return Greylist(["grey.example"], 300, clock, retention_seconds, max_pairs)


def test_a_first_try_is_refused_for_the_whole_delay(clock: Clock) -> None:
    assert greylist(clock).refusal(ANN, GREY) == ("451 4.7.1 Greylisted: try again in 300 seconds")


def test_a_retry_within_the_delay_is_told_the_seconds_left_rounded_up(clock: Clock) -> None:
    grey = greylist(clock)
    grey.refusal(ANN, GREY)

    clock.now += 120.2

    assert grey.refusal(ANN, GREY) == "451 4.7.1 Greylisted: try again in 180 seconds"
    clock.now += 179.5
    assert grey.refusal(ANN, GREY) == "451 4.7.1 Greylisted: try again in 1 seconds"


def test_after_the_delay_the_pair_is_accepted_at_once_for_every_later_email(
    clock: Clock,
) -> None:
    grey = greylist(clock)
    grey.refusal(ANN, GREY)

    clock.now += 300
    accepted = [grey.refusal(ANN, GREY)]
    for _ in range(3):
        clock.now += 3600
        accepted.append(grey.refusal(ANN, GREY))

    assert accepted == [None, None, None, None]


def test_each_pair_waits_on_its_own(clock: Clock) -> None:
    grey = greylist(clock)
    grey.refusal(ANN, GREY)
    clock.now += 300

    assert grey.refusal(ANN, GREY) is None
    assert grey.refusal("bob@example.com", GREY) is not None, "another sender"
    assert grey.refusal(ANN, "b@grey.example") is not None, "another recipient"


def test_addresses_and_domains_match_whatever_their_case(clock: Clock) -> None:
    grey = greylist(clock)
    grey.refusal(ANN, GREY)
    clock.now += 300

    assert grey.refusal("Ann@Example.COM", "A@GREY.example") is None


@pytest.mark.parametrize(
    "recipient", [OTHER, "a@sub.grey.example", "grey.example@example.com", "nobody"]
)
def test_a_recipient_at_another_domain_is_never_greylisted(clock: Clock, recipient: str) -> None:
    assert greylist(clock).refusal(ANN, recipient) is None


@pytest.mark.parametrize(
    "grey", [Greylist(["grey.example"], 0), Greylist([], 300), Greylist.off()], ids=str
)
def test_no_domains_or_no_delay_is_off(grey: Greylist) -> None:
    assert not grey.on
    assert grey.refusal(ANN, GREY) is None
    assert grey.remembered_pairs == 0


def test_the_first_try_of_a_pair_is_logged_once(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    grey = greylist(clock)
    caplog.set_level(logging.INFO, logger="services.smtp_sink.greylist")

    for _ in range(3):
        grey.refusal(ANN, GREY)
        clock.now += 10

    assert [record.getMessage() for record in caplog.records] == [
        "greylisted 'ann@example.com' -> 'a@grey.example': its first try; "
        "it is refused with 451 4.7.1 for 300 s"
    ]
    assert caplog.records[0].levelno == logging.INFO


def test_pairs_not_tried_for_a_day_are_forgotten_and_start_again(clock: Clock) -> None:
    grey = greylist(clock, retention_seconds=86_400)
    grey.refusal(ANN, GREY)
    clock.now += 300
    grey.refusal(ANN, GREY)  # accepted, and tried again now

    clock.now += 86_399
    assert grey.refusal(ANN, GREY) is None, "tried within the day: remembered"
    clock.now += 86_401
    assert grey.refusal(ANN, GREY) is not None, "a day without a try: a new pair"


def test_the_pairs_remembered_are_capped_dropping_the_least_recently_tried(
    clock: Clock,
) -> None:
    grey = greylist(clock, max_pairs=3)
    for number in range(5):
        grey.refusal(f"sender{number}@example.com", GREY)
        clock.now += 1

    assert grey.remembered_pairs == 3
    clock.now += 300
    assert grey.refusal("sender4@example.com", GREY) is None, "kept"
    assert grey.refusal("sender0@example.com", GREY) is not None, "dropped: a new pair"


def test_a_greylisted_recipient_is_refused_where_recipient_refusals_are_decided(
    clock: Clock,
) -> None:
    policy = FaultPolicy.of(greylist=greylist(clock))

    assert recipient_refusal(policy, OTHER, sender=ANN) is None
    assert recipient_refusal(policy, GREY, sender=ANN) == (
        "451 4.7.1 Greylisted: try again in 300 seconds"
    )
    clock.now += 300
    assert recipient_refusal(policy, GREY, sender=ANN) is None


def test_a_listed_failure_comes_before_greylisting(clock: Clock) -> None:
    policy = FaultPolicy.of(permanent_recipients=[GREY], greylist=greylist(clock))

    assert recipient_refusal(policy, GREY, sender=ANN) == (
        "550 5.1.1 Injected permanent failure: no such recipient"
    )
    assert policy.greylist.remembered_pairs == 0
