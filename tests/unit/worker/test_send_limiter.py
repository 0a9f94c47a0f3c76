"""Every lane of a worker waits its turn at one limiter: together they never start more
transactions a second than SMTP_MAX_RATE allows, and one "slow down" lowers the pace for all."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from services.worker.relay_etiquette import WINDOW_SECONDS
from services.worker.send_limiter import SendLimiter


class FakeTime:
    """A clock that only moves when a lane sleeps: the test runs in no time."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


async def start_times(limiter: SendLimiter, time: FakeTime, lanes: int, each: int) -> list[float]:
    started: list[float] = []

    async def lane() -> None:
        for _ in range(each):
            await limiter.turn()
            started.append(time.now)

    await asyncio.gather(*(lane() for _ in range(lanes)))
    return started


async def test_lanes_together_start_no_more_than_the_rate_in_any_window() -> None:
    time = FakeTime()
    limiter = SendLimiter(5, time.clock, time.sleep)

    started = await start_times(limiter, time, lanes=8, each=3)

    expected = [n // 5 * WINDOW_SECONDS for n in range(24)]
    assert started == pytest.approx(expected)


async def test_without_a_rate_no_lane_ever_waits() -> None:
    time = FakeTime()
    limiter = SendLimiter(None, time.clock, time.sleep)

    started = await start_times(limiter, time, lanes=8, each=50)

    assert started == [0.0] * 400
    assert limiter.rate_limit is None


async def test_a_slow_down_halves_the_pace_of_every_lane_then_it_grows_back() -> None:
    time = FakeTime()
    limiter = SendLimiter(10, time.clock, time.sleep)
    await start_times(limiter, time, lanes=1, each=10)

    assert limiter.throttled()
    assert not limiter.throttled(), "the other replies of the same burst count once"
    assert limiter.rate_limit == 5

    time.now += WINDOW_SECONDS  # the first ten leave the window
    started = await start_times(limiter, time, lanes=4, each=5)

    # Halved to 5 at 0 s, then 1 more each second: 6 at 1.05 s, 7 at 2.10 s, the rest after.
    assert Counter(round(t, 2) for t in started) == {1.05: 6, 2.1: 7, 3.15: 7}


async def test_without_a_rate_a_slow_down_starts_from_half_the_rate_measured() -> None:
    time = FakeTime()
    limiter = SendLimiter(None, time.clock, time.sleep)
    await start_times(limiter, time, lanes=4, each=10)  # 40 at once

    limiter.throttled()

    assert limiter.rate_limit == 20


async def test_a_lane_cancelled_while_it_waits_leaves_the_others_their_turns() -> None:
    time = FakeTime()
    limiter = SendLimiter(1, time.clock, time.sleep)
    await limiter.turn()
    waiting = asyncio.create_task(limiter.turn())
    await asyncio.sleep(0)

    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    await limiter.turn()  # the next lane still gets the slot
    assert time.now == pytest.approx(WINDOW_SECONDS, abs=0.01)
