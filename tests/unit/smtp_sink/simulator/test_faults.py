"""Fault injection: listed recipients are refused at RCPT, rates refuse whole messages at DATA;
Mailpit's chaos triggers fail SMTP steps as often as they say, and are read as Mailpit does."""

from __future__ import annotations

import random

import pytest

from services.smtp_sink.simulator.faults import (
    PERMANENT_MESSAGE_REPLY,
    PERMANENT_RECIPIENT_REPLY,
    TRANSIENT_MESSAGE_REPLY,
    TRANSIENT_RECIPIENT_REPLY,
    Chaos,
    ChaosError,
    ChaosTrigger,
    ChaosTriggers,
    FaultPolicy,
    Stage,
    authentication_refusal,
    chaos_refusal,
    chaos_triggers,
    message_refusal,
    recipient_refusal,
    sender_refusal,
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


# Mailpit's chaos.


def chaos(triggers: ChaosTriggers, draws: list[float]) -> Chaos:
    drawn = iter(draws)
    live = Chaos(draw=lambda: next(drawn))
    live.triggers = triggers
    return live


@pytest.mark.parametrize(
    ("probability", "draw", "fires"),
    [
        (50, 0.0, True),
        (50, 0.499, True),  # 49 %: below 50
        (50, 0.5, False),
        (1, 0.0099, True),
        (1, 0.01, False),
        (100, 0.9999, True),
        (0, 0.0, False),
    ],
)
def test_a_trigger_fires_when_the_drawn_percent_is_below_its_probability(
    probability: int, draw: float, fires: bool
) -> None:
    reply = chaos_refusal(Stage.RECIPIENT, ChaosTrigger(451, probability), draw)

    assert reply == ("451 Chaos recipient error" if fires else None)


def test_replies_are_mailpits_with_the_triggers_code() -> None:
    assert chaos_refusal(Stage.SENDER, ChaosTrigger(421, 100), 0.5) == "421 Chaos sender error"
    assert (
        chaos_refusal(Stage.AUTHENTICATION, ChaosTrigger(535, 100), 0.5)
        == "535 Chaos authentication error"
    )


def test_a_recipient_trigger_at_50_fails_half_the_recipients() -> None:
    draws = random.Random(11)
    policy = FaultPolicy.of(chaos=Chaos(draw=draws.random))
    policy.chaos.triggers = ChaosTriggers(recipient=ChaosTrigger(451, 50))

    replies = [recipient_refusal(policy, f"r{n}@example.com") for n in range(20_000)]

    assert set(replies) == {"451 Chaos recipient error", None}
    assert replies.count(None) / len(replies) == pytest.approx(0.5, abs=0.01)


def test_listed_recipients_fail_as_listed_beside_the_recipient_trigger() -> None:
    policy = FaultPolicy.of(
        transient_recipients=["later@example.com"],
        permanent_recipients=["nobody@example.com"],
        chaos=chaos(ChaosTriggers(recipient=ChaosTrigger(452, 100)), draws=[0.0]),
    )

    assert recipient_refusal(policy, "later@example.com") == TRANSIENT_RECIPIENT_REPLY
    assert recipient_refusal(policy, "nobody@example.com") == PERMANENT_RECIPIENT_REPLY
    assert recipient_refusal(policy, "bob@example.com") == "452 Chaos recipient error"


def test_each_trigger_fails_its_own_step_only() -> None:
    sender_only = FaultPolicy.of(
        chaos=chaos(ChaosTriggers(sender=ChaosTrigger(451, 100)), draws=[0.0])
    )

    assert recipient_refusal(sender_only, "bob@example.com") is None
    assert authentication_refusal(sender_only) is None
    assert sender_refusal(sender_only) == "451 Chaos sender error"


def test_triggers_at_zero_never_draw() -> None:
    policy = FaultPolicy.of(chaos=chaos(ChaosTriggers(), draws=[]))

    assert recipient_refusal(policy, "bob@example.com") is None
    assert sender_refusal(policy) is None
    assert authentication_refusal(policy) is None


def test_a_full_body_sets_every_trigger() -> None:
    body = {
        "Sender": {"ErrorCode": 421, "Probability": 5},
        "Recipient": {"ErrorCode": 451, "Probability": 50},
        "Authentication": {"ErrorCode": 454, "Probability": 100},
    }

    assert chaos_triggers(body) == ChaosTriggers(
        sender=ChaosTrigger(421, 5),
        recipient=ChaosTrigger(451, 50),
        authentication=ChaosTrigger(454, 100),
    )


def test_left_out_triggers_and_codes_are_mailpits_defaults_switched_off() -> None:
    assert chaos_triggers({}) == ChaosTriggers(
        sender=ChaosTrigger(451, 0),
        recipient=ChaosTrigger(451, 0),
        authentication=ChaosTrigger(535, 0),
    )
    assert chaos_triggers(
        {"Recipient": {"Probability": 5}, "Authentication": {"ErrorCode": 0, "Probability": 1}}
    ) == ChaosTriggers(recipient=ChaosTrigger(451, 5), authentication=ChaosTrigger(535, 1))
    assert chaos_triggers({"Sender": None}) == ChaosTriggers()


def test_names_match_without_regard_to_case_as_in_go() -> None:
    assert chaos_triggers({"recipient": {"errorcode": 450, "PROBABILITY": 7}}) == ChaosTriggers(
        recipient=ChaosTrigger(450, 7)
    )


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"Recipient": {"ErrorCode": 399, "Probability": 5}}, "ErrorCode must be between 400"),
        ({"Recipient": {"ErrorCode": 600, "Probability": 5}}, "ErrorCode must be between 400"),
        ({"Sender": {"ErrorCode": -1, "Probability": 5}}, "ErrorCode must be between 400"),
        ({"Sender": {"ErrorCode": 451, "Probability": 101}}, "Probability must be between 0"),
        ({"Sender": {"ErrorCode": 451, "Probability": -1}}, "Probability must be between 0"),
        ({"Sender": {"ErrorCode": 451, "Probability": 5.5}}, "Probability must be a whole"),
        ({"Sender": {"ErrorCode": "451", "Probability": 5}}, "ErrorCode must be a whole"),
        ({"Sender": {"ErrorCode": True, "Probability": 5}}, "ErrorCode must be a whole"),
        ({"Recipients": {"Probability": 5}}, "unknown chaos trigger 'Recipients'"),
        ({"Sender": {"Probability": 5, "Code": 451}}, "unknown field 'Code'"),
        ({"Sender": [451, 5]}, "Sender must be a JSON object"),
        ([], "the body must be a JSON object"),
        (None, "the body must be a JSON object, not null"),
    ],
)
def test_a_body_it_cannot_take_says_why(body: object, says: str) -> None:
    with pytest.raises(ChaosError, match=says):
        chaos_triggers(body)


def test_the_log_line_names_every_trigger() -> None:
    triggers = ChaosTriggers(recipient=ChaosTrigger(451, 50))

    assert triggers.describe() == (
        "Sender 451 at 0%, Recipient 451 at 50%, Authentication 535 at 0%"
    )
