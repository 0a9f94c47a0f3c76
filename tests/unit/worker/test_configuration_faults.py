"""The worker's configuration fault state: loud once a minute, one lane's try per retry delay
(doubling up to the longest), and every waiting lane released once the server accepts."""

from __future__ import annotations

import logging

import pytest

from services.worker.configuration_faults import ConfigurationFaults

REFUSED = "SMTP authentication refused by smtp.example.com:587 (535 5.7.8 ...)"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_fault_of_every_lane_is_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    faults = ConfigurationFaults(0.5, 30, clock=clock)

    with caplog.at_level(logging.INFO, logger="worker"):
        for _ in range(24):  # 8 lanes x 3 partitions fail at once
            faults.refused("authentication", REFUSED)
        clock.now += 59
        faults.refused("authentication", REFUSED)
        clock.now += 1
        faults.refused("authentication", REFUSED)

    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"SMTP configuration fault: {REFUSED}. Holding every email (nothing dead-lettered, "
        "nothing committed past it) and trying again until the server accepts",
        f"SMTP configuration fault for 60 s: {REFUSED}. Holding every email (nothing "
        "dead-lettered, nothing committed past it) and trying again until the server accepts",
    ]
    assert faults.refusals["authentication"] == 26, "each refusal counts (/metrics shows them)"
    assert sum(faults.refusals.values()) == 26


def test_another_kind_of_fault_is_logged_at_once(caplog: pytest.LogCaptureFixture) -> None:
    faults = ConfigurationFaults(0.5, 30, clock=Clock())

    with caplog.at_level(logging.ERROR, logger="worker"):
        faults.refused("authentication", REFUSED)
        faults.refused("tls", "the TLS certificate of smtp.example.com:587 is not trusted")

    assert len(caplog.records) == 2
    assert faults.current is not None
    assert faults.current.kind == "tls"


def test_while_refused_one_lane_tries_per_delay_and_the_delays_double() -> None:
    clock = Clock()
    faults = ConfigurationFaults(0.5, 4, clock=clock)
    assert faults.claim_turn() == 0, "no fault: every lane goes at once"
    for _ in range(24):
        faults.refused("authentication", REFUSED)

    turns = []
    for _ in range(7):
        wait = faults.claim_turn()
        assert wait > 0, "nobody's turn before the delay"
        clock.now += wait
        assert faults.claim_turn() == 0
        turns.append(clock.now - 1000.0)
        assert faults.claim_turn() > 0, "one lane per turn"
        faults.refused("authentication", REFUSED)

    assert turns == [0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0]


async def test_accepting_again_releases_every_lane_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    faults = ConfigurationFaults(0.5, 30, clock=clock)
    faults.refused("authentication", REFUSED)
    assert not faults.accepting.is_set()
    assert faults.claim_turn() > 0
    clock.now += 42

    with caplog.at_level(logging.INFO, logger="worker"):
        faults.accepted()
        faults.accepted()

    assert faults.current is None
    assert faults.accepting.is_set()
    assert faults.claim_turn() == 0
    assert faults.seconds == 0
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "the SMTP server accepts the worker's settings again after 42 s: delivering"
    ]
