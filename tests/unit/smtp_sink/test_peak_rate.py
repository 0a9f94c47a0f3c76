"""The peak rate by a clock the test turns: the most arrivals in any one sliding second."""

from __future__ import annotations

import random

from services.smtp_sink.peak_rate import PeakRate


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def peak_of(moments: list[float]) -> int:
    clock = Clock()
    rate = PeakRate(clock)
    for moment in moments:
        clock.now = moment
        rate.add()
    return rate.peak


def test_nothing_is_a_peak_of_zero() -> None:
    assert peak_of([]) == 0


def test_arrivals_a_second_apart_are_in_different_seconds() -> None:
    assert peak_of([0.0, 1.0, 2.0]) == 1
    assert peak_of([0.0, 0.999, 1.998]) == 2


def test_the_window_slides_rather_than_ticking_by_whole_seconds() -> None:
    # Two per whole second (0-1, 1-2), but four between 0.6 and 1.4.
    assert peak_of([0.1, 0.6, 0.9, 1.1, 1.4, 1.95]) == 4


def test_the_peak_matches_counting_every_window() -> None:
    draws = random.Random(16)
    moments, now = [], 0.0
    for _ in range(500):
        now += draws.expovariate(8)
        moments.append(now)

    most = max(sum(1 for other in moments if moment - 1.0 < other <= moment) for moment in moments)
    assert peak_of(moments) == most


def test_clear_starts_over() -> None:
    clock = Clock()
    rate = PeakRate(clock)
    rate.add()
    rate.add()

    rate.clear()
    clock.now = 0.5
    rate.add()

    assert rate.peak == 1
