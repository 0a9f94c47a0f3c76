"""The simulator addresses by a clock the test turns: each fixed reply, a +tag making an address
distinct, deferred@ refused on its first try only, ratelimited@ above 5 a second, memory bounded."""

from __future__ import annotations

import pytest

from services.smtp_sink.simulator.addresses import (
    ACCEPTED_REPLY,
    BOUNCED_REPLY,
    DEFERRED_REPLY,
    MAX_ADDRESSES,
    RATE_LIMITED_REPLY,
    RETENTION_SECONDS,
    UNKNOWN_REPLY,
    Simulated,
    SimulatorAddresses,
    is_simulated,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def simulator(
    clock: Clock, retention_seconds: float = RETENTION_SECONDS, max_addresses: int = MAX_ADDRESSES
) -> SimulatorAddresses:
    return SimulatorAddresses(
        clock, slow_seconds=10, retention_seconds=retention_seconds, max_addresses=max_addresses
    )


@pytest.mark.parametrize(
    ("address", "simulated"),
    [
        ("delivered@simulator.example.com", True),
        ("Bounced+X@Simulator.Example.COM", True),
        ("anyone@simulator.example.com", True),
        ("delivered@example.com", False),
        ("delivered@other-simulator.example.com", False),
        ("delivered@simulator.example.com.evil", False),
        ("bob@example.com", False),
        ("", False),
    ],
)
def test_only_addresses_at_the_simulator_domain_are_simulated(
    address: str, simulated: bool
) -> None:
    assert is_simulated(address) is simulated


@pytest.mark.parametrize(
    ("address", "reply", "accepted"),
    [
        ("delivered@simulator.example.com", ACCEPTED_REPLY, True),
        ("delivered+run-7@simulator.example.com", ACCEPTED_REPLY, True),
        ("bounced@simulator.example.com", BOUNCED_REPLY, False),
        ("bounced+42@simulator.example.com", BOUNCED_REPLY, False),
        ("BOUNCED@SIMULATOR.EXAMPLE.COM", BOUNCED_REPLY, False),
        ("slow@simulator.example.com", ACCEPTED_REPLY, True),
        ("ratelimited@simulator.example.com", ACCEPTED_REPLY, True),
        ("deferred@simulator.example.com", DEFERRED_REPLY, False),
        ("nobody@simulator.example.com", UNKNOWN_REPLY, False),
        ("deliveredx@simulator.example.com", UNKNOWN_REPLY, False),
    ],
)
def test_each_address_has_its_reply(clock: Clock, address: str, reply: str, accepted: bool) -> None:
    simulated = simulator(clock).rcpt(address)

    assert (simulated.reply, simulated.accepted) == (reply, accepted)


def test_the_replies_are_what_the_docs_promise() -> None:
    assert BOUNCED_REPLY.startswith("550 5.1.1 ")
    assert DEFERRED_REPLY.startswith("450 4.2.0 ")
    assert RATE_LIMITED_REPLY.startswith("421 4.7.0 ")
    assert UNKNOWN_REPLY.startswith("550 5.1.1 No such simulator address: use delivered, ")


def test_only_slow_delays_the_final_reply(clock: Clock) -> None:
    addresses = simulator(clock)

    assert addresses.rcpt("slow@simulator.example.com").final_reply_delay_seconds == 10
    assert addresses.rcpt("slow+a@simulator.example.com").final_reply_delay_seconds == 10
    assert addresses.rcpt("delivered@simulator.example.com").final_reply_delay_seconds == 0


def test_deferred_is_refused_on_its_first_try_then_accepted_for_good(clock: Clock) -> None:
    addresses = simulator(clock)

    tries = []
    for _ in range(4):
        tries.append(addresses.rcpt("deferred@simulator.example.com").reply)
        clock.now += 60

    assert tries == [DEFERRED_REPLY, ACCEPTED_REPLY, ACCEPTED_REPLY, ACCEPTED_REPLY]


def test_each_tag_of_deferred_is_deferred_once_and_case_does_not_make_another(
    clock: Clock,
) -> None:
    addresses = simulator(clock)

    replies = [
        addresses.rcpt(address).reply
        for address in (
            "deferred+1@simulator.example.com",
            "deferred+2@simulator.example.com",
            "Deferred+1@Simulator.Example.com",
            "deferred+2@simulator.example.com",
            "deferred@simulator.example.com",
        )
    ]

    assert replies == [
        DEFERRED_REPLY,
        DEFERRED_REPLY,
        ACCEPTED_REPLY,
        ACCEPTED_REPLY,
        DEFERRED_REPLY,
    ]


def test_more_deferrals_can_be_asked_for(clock: Clock) -> None:
    addresses = SimulatorAddresses(clock, deferrals=2)

    replies = [addresses.rcpt("deferred@simulator.example.com").reply for _ in range(3)]

    assert replies == [DEFERRED_REPLY, DEFERRED_REPLY, ACCEPTED_REPLY]


def test_a_deferred_address_untried_for_the_retention_is_deferred_again(clock: Clock) -> None:
    addresses = simulator(clock, retention_seconds=3600)
    addresses.rcpt("deferred@simulator.example.com")
    clock.now += 1800
    addresses.rcpt("deferred@simulator.example.com")  # the retention counts from the last try

    clock.now += 3599
    kept = addresses.rcpt("deferred@simulator.example.com")
    clock.now += 3601
    forgotten = addresses.rcpt("deferred@simulator.example.com")

    assert (kept.reply, forgotten.reply) == (ACCEPTED_REPLY, DEFERRED_REPLY)


def test_deferred_addresses_are_remembered_up_to_the_bound(clock: Clock) -> None:
    addresses = simulator(clock, max_addresses=3)

    for n in range(5):
        addresses.rcpt(f"deferred+{n}@simulator.example.com")

    assert addresses.remembered_addresses == 3
    # The least recently tried went first: +0 is new again, +4 is remembered.
    assert addresses.rcpt("deferred+4@simulator.example.com").reply == ACCEPTED_REPLY
    assert addresses.rcpt("deferred+0@simulator.example.com").reply == DEFERRED_REPLY


def test_other_addresses_are_not_remembered(clock: Clock) -> None:
    addresses = simulator(clock)

    for local_part in ("delivered", "bounced", "slow", "nobody"):
        addresses.rcpt(f"{local_part}+1@simulator.example.com")

    assert addresses.remembered_addresses == 0


def test_ratelimited_refuses_with_421_and_a_hang_up_above_five_a_second(clock: Clock) -> None:
    addresses = simulator(clock)

    within = [addresses.rcpt(f"ratelimited+{n}@simulator.example.com") for n in range(5)]
    clock.now += 0.5
    over = addresses.rcpt("ratelimited@simulator.example.com")
    clock.now += 0.5  # the first five are a second old now
    again = addresses.rcpt("ratelimited@simulator.example.com")

    assert all(simulated.accepted and not simulated.hang_up for simulated in within)
    assert over == Simulated(RATE_LIMITED_REPLY, accepted=False, hang_up=True)
    assert again.accepted


def test_the_rate_limit_of_ratelimited_is_its_own(clock: Clock) -> None:
    addresses = simulator(clock)

    for _ in range(5):
        addresses.rcpt("ratelimited@simulator.example.com")

    assert addresses.rcpt("delivered@simulator.example.com").accepted
    assert not addresses.rcpt("ratelimited@simulator.example.com").accepted


def test_the_start_line_names_every_address(clock: Clock) -> None:
    described = simulator(clock).describe()

    for local_part in ("delivered", "deferred", "bounced", "slow", "ratelimited"):
        assert local_part in described
    assert "simulator.example.com" in described


def test_the_start_line_counts_the_deferrals(clock: Clock) -> None:
    assert "450 on the first try of each" in simulator(clock).describe()
    assert "450 on the first 3 tries of each" in SimulatorAddresses(clock, deferrals=3).describe()
