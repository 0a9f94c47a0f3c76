"""Fault injection: listed recipients are refused at RCPT, rates refuse whole messages at DATA."""

from __future__ import annotations

import random

import pytest

from services.smtp_sink.faults import (
    PERMANENT_MESSAGE_REPLY,
    PERMANENT_RECIPIENT_REPLY,
    TRANSIENT_MESSAGE_REPLY,
    TRANSIENT_RECIPIENT_REPLY,
    FaultPolicy,
    message_refusal,
    recipient_refusal,
)

POLICY = FaultPolicy.of(
    transient_recipients=["later@example.com"], permanent_recipients=["nobody@example.com"]
)


def test_recipient_listed_as_4xx_gets_451() -> None:
    reply = recipient_refusal(POLICY, "later@example.com")

    assert reply == TRANSIENT_RECIPIENT_REPLY
    assert reply.startswith("451 4.3.0 ")


def test_recipient_listed_as_5xx_gets_550() -> None:
    reply = recipient_refusal(POLICY, "nobody@example.com")

    assert reply == PERMANENT_RECIPIENT_REPLY
    assert reply.startswith("550 5.1.1 ")


def test_recipient_match_ignores_case() -> None:
    assert recipient_refusal(POLICY, "Later@Example.COM") == TRANSIENT_RECIPIENT_REPLY


def test_unlisted_recipient_is_accepted() -> None:
    assert recipient_refusal(POLICY, "bob@example.com") is None


def test_a_recipient_on_both_lists_fails_permanently() -> None:
    both = FaultPolicy.of(["x@example.com"], ["x@example.com"])

    assert recipient_refusal(both, "x@example.com") == PERMANENT_RECIPIENT_REPLY


def test_no_rates_accept_every_message() -> None:
    assert message_refusal(POLICY, 0.0) is None


@pytest.mark.parametrize(
    ("draw", "expected"),
    [
        (0.0, PERMANENT_MESSAGE_REPLY),
        (0.099, PERMANENT_MESSAGE_REPLY),
        (0.1, TRANSIENT_MESSAGE_REPLY),
        (0.299, TRANSIENT_MESSAGE_REPLY),
        (0.31, None),
        (0.999, None),
    ],
)
def test_one_draw_splits_into_permanent_then_transient_then_accepted(
    draw: float, expected: str | None
) -> None:
    policy = FaultPolicy.of(transient_rate=0.2, permanent_rate=0.1)

    assert message_refusal(policy, draw) == expected


def test_rates_are_the_fractions_of_messages_refused() -> None:
    policy = FaultPolicy.of(transient_rate=0.25, permanent_rate=0.05)
    draws = random.Random(7)

    replies = [message_refusal(policy, draws.random()) for _ in range(20_000)]

    assert replies.count(TRANSIENT_MESSAGE_REPLY) / len(replies) == pytest.approx(0.25, abs=0.01)
    assert replies.count(PERMANENT_MESSAGE_REPLY) / len(replies) == pytest.approx(0.05, abs=0.01)


def test_message_replies_are_4xx_and_5xx() -> None:
    assert TRANSIENT_MESSAGE_REPLY.startswith("451 4.")
    assert PERMANENT_MESSAGE_REPLY.startswith("550 5.")
