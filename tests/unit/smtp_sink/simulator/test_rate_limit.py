"""The rate limit by a clock the test turns: never more than the limit in any sliding second."""

from __future__ import annotations

import random

import pytest

from services.smtp_sink.simulator.rate_limit import RateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_is_taken_then_the_next_is_refused_until_the_oldest_is_a_second_old() -> None:
    clock = Clock()
    limit = RateLimit(3, clock)

    taken = [limit.take() for _ in range(3)]
    clock.now += 0.999
    refused = limit.take()
    clock.now += 0.001
    after_a_second = limit.take()

    assert taken == [True, True, True]
    assert (refused, after_a_second) == (False, True)


def test_a_refused_try_is_not_counted() -> None:
    clock = Clock()
    limit = RateLimit(1, clock)
    limit.take()

    clock.now += 0.9
    assert not limit.take()
    clock.now += 0.1

    assert limit.take()  # a second after the one taken, whatever was refused meanwhile


def test_no_sliding_second_ever_holds_more_than_the_limit() -> None:
    clock = Clock()
    limit = RateLimit(7, clock)
    draws = random.Random(16)
    taken_at = []
    for _ in range(2000):
        clock.now += draws.expovariate(20)  # about 20 tries a second against a limit of 7
        if limit.take():
            taken_at.append(clock.now)

    most = max(
        sum(1 for other in taken_at if moment - 1.0 < other <= moment) for moment in taken_at
    )
    assert most == 7


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 a second, not 0"):
        RateLimit(0)
