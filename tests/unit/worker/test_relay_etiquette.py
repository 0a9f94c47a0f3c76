"""The worker's pace toward its relay: no second ever holds more transaction starts than the
limit, whatever the arrivals, the limit's changes and the network's jitter under the margin;
AIMD halves the rate once per burst of "slow down" replies and adds it back step by step."""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.worker.relay_etiquette import (
    JITTER_MARGIN_SECONDS,
    WINDOW_SECONDS,
    Aimd,
    RateWindow,
)


def grant_times(
    window: RateWindow, arrivals: list[float], limit_at: dict[float, int] | None = None
) -> tuple[list[float], list[int]]:
    """When each transaction that arrives at `arrivals` starts, asking again after each wait it
    is told, as lanes do; with the limit changed at the times of `limit_at`. Returns the start
    times, sorted, and the limit in force at each."""
    changes = sorted((limit_at or {}).items())
    pending = [(arrival, index) for index, arrival in enumerate(arrivals)]
    heapq.heapify(pending)
    starts: list[float] = []
    limits: list[int] = []
    asks = 0
    while pending:
        now, index = heapq.heappop(pending)
        in_force = [limit for at, limit in changes if at <= now]
        if in_force:
            window.limit = in_force[-1]
        wait = window.try_start(now)
        asks += 1
        assert asks < 100 * (len(arrivals) + 1), "the asks do not converge"
        if wait > 0:
            heapq.heappush(pending, (now + wait, index))
        else:
            starts.append(now)
            limits.append(window.limit or 0)
    return starts, limits


def most_in_one_second(times: list[float]) -> int:
    """The largest count of `times` in any second [t, t + 1), as a relay's sliding window counts:
    two starts exactly a second apart fall in two seconds (floating point puts a jitter just
    under the margin on that boundary)."""
    ordered = sorted(times)
    return max(
        (bisect_left(ordered, start + 1.0) - index for index, start in enumerate(ordered)),
        default=0,
    )


arrival_times = st.lists(
    st.floats(min_value=0.0, max_value=5.0, allow_nan=False).map(lambda t: round(t, 3)),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(min_value=1, max_value=12), arrivals=arrival_times, data=st.data())
def test_no_second_ever_holds_more_starts_than_the_limit_even_with_jitter(
    limit: int, arrivals: list[float], data: st.DataObject
) -> None:
    starts, _ = grant_times(RateWindow(limit), arrivals)

    assert len(starts) == len(arrivals), "every transaction starts in the end"
    assert most_in_one_second(starts) <= limit
    # The relay sees each start after a network delay; delays that differ by less than the
    # margin keep its count within the limit too.
    jitter = data.draw(
        st.lists(
            st.floats(min_value=0.0, max_value=JITTER_MARGIN_SECONDS, exclude_max=True),
            min_size=len(starts),
            max_size=len(starts),
        )
    )
    assert most_in_one_second([s + d for s, d in zip(starts, jitter, strict=True)]) <= limit


@settings(max_examples=300, deadline=None)
@given(
    arrivals=arrival_times,
    limit_at=st.dictionaries(
        st.floats(min_value=0.0, max_value=5.0, allow_nan=False),
        st.integers(min_value=1, max_value=12),
        max_size=6,
    ),
)
def test_a_limit_that_changes_holds_from_the_moment_it_changes(
    arrivals: list[float], limit_at: dict[float, int]
) -> None:
    starts, limits = grant_times(RateWindow(12), arrivals, limit_at)

    assert len(starts) == len(arrivals)
    for index, start in enumerate(starts):
        in_the_second_before = index + 1 - bisect_left(starts, start - 1.0)
        assert in_the_second_before <= limits[index]


def test_a_burst_goes_out_a_window_apart_and_no_later() -> None:
    starts, _ = grant_times(RateWindow(3), [0.0] * 7)

    assert starts == pytest.approx([0.0] * 3 + [WINDOW_SECONDS] * 3 + [2 * WINDOW_SECONDS])


def test_a_steady_rate_under_the_limit_never_waits() -> None:
    window = RateWindow(5)

    waits = [window.try_start(n * 0.25) for n in range(40)]  # 4 a second

    assert waits == [0.0] * 40


def test_a_full_window_says_how_long_to_wait_and_counts_nothing() -> None:
    window = RateWindow(2)
    window.try_start(10.0)
    window.try_start(10.5)

    assert window.try_start(10.6) == pytest.approx(WINDOW_SECONDS - 0.6)
    assert window.started_within(10.6) == 2


def test_no_limit_still_measures_the_rate() -> None:
    window = RateWindow(None)

    assert [window.try_start(n / 100) for n in range(300)] == [0.0] * 300
    assert window.started_within(2.995) == 100


@pytest.mark.parametrize(("limit", "window"), [(0, 1.0), (-3, 1.0), (5, 0.0)])
def test_a_window_that_could_grant_nothing_is_refused_clearly(limit: int, window: float) -> None:
    with pytest.raises(ValueError, match=r"at least 1 start|more than 0 seconds"):
        RateWindow(limit, window)


def test_a_slow_down_halves_the_cap_and_steps_back_a_twentieth_a_second() -> None:
    aimd = Aimd(100)

    assert aimd.throttled(10.0, measured=100)
    assert [aimd.allowed(10.0 + s) for s in (0, 0.9, 1, 2, 5, 10, 20)] == [
        50, 50, 55, 60, 75, 100, 100,
    ]  # fmt: skip


def test_the_refusals_of_one_burst_halve_it_once() -> None:
    aimd = Aimd(100)

    cuts = [aimd.throttled(10.0 + n * 0.1, measured=100) for n in range(10)]

    assert cuts == [True] + [False] * 9
    assert aimd.allowed(10.95) == 50
    assert aimd.throttled(11.0, measured=50), "a second later it is a new signal"
    assert aimd.allowed(11.0) == 27, "half of the 55 allowed by then"


def test_halving_stops_at_one() -> None:
    aimd = Aimd(3)

    for second in range(5):
        aimd.throttled(float(second), measured=3)

    assert aimd.allowed(4.5) == 1
    assert aimd.allowed(5.0) == 2, "steps of at least 1"


def test_without_a_cap_the_first_slow_down_halves_the_rate_measured() -> None:
    aimd = Aimd(None)
    assert aimd.allowed(0.0) is None

    aimd.throttled(100.0, measured=40)

    assert [aimd.allowed(100.0 + s) for s in (0, 1, 10, 59)] == [20, 22, 40, 80]
    assert aimd.allowed(160.0) is None, "lifted once it allows twice the rate, 60 s on"
    aimd.throttled(161.0, measured=200)
    assert aimd.allowed(161.0) == 100, "and the next complaint measures afresh"


def test_without_a_cap_a_second_slow_down_halves_what_the_first_left() -> None:
    aimd = Aimd(None)
    aimd.throttled(0.0, measured=40)

    aimd.throttled(5.0, measured=999)  # 30 allowed by then

    assert aimd.allowed(5.0) == 15
    assert aimd.allowed(65.0) is None


def test_a_connection_cap_can_step_by_one_every_ten_seconds() -> None:
    aimd = Aimd(8, step=1, increase_every=10.0)
    aimd.throttled(0.0, measured=8)

    assert [aimd.allowed(s) for s in (0.0, 9.9, 10.0, 40.0, 100.0)] == [4, 4, 5, 8, 8]


@settings(max_examples=300, deadline=None)
@given(
    cap=st.one_of(st.none(), st.integers(min_value=1, max_value=500)),
    events=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=5.0, allow_nan=False),
            st.booleans(),
            st.integers(min_value=0, max_value=1000),
        ),
        max_size=40,
    ),
)
def test_aimd_stays_between_one_and_the_cap_and_never_cuts_twice_in_a_second(
    cap: int | None, events: list[tuple[float, bool, int]]
) -> None:
    aimd = Aimd(cap)
    now = 0.0
    last_cut = -math.inf
    for gap, slow_down, measured in events:
        now += gap
        before = aimd.allowed(now)
        if slow_down and aimd.throttled(now, measured):
            assert now - last_cut >= 1.0
            last_cut = now
            after = aimd.allowed(now)
            assert after is not None
            assert after == max(1, (before if before is not None else max(1, measured)) // 2)
        allowed = aimd.allowed(now)
        if allowed is not None:
            assert 1 <= allowed <= (cap if cap is not None else 2 * 1000)
        else:
            assert cap is None


@pytest.mark.parametrize(
    "arguments",
    [{"cap": 0}, {"cap": 5, "step": 0}, {"cap": 5, "increase_every": 0.0}],
)
def test_aimd_settings_that_make_no_sense_are_refused_clearly(
    arguments: dict[str, float],
) -> None:
    with pytest.raises(ValueError, match=r"AIMD|increase_every"):
        Aimd(**arguments)  # type: ignore[arg-type]
