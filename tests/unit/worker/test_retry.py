"""Retrying with back-off while a server is away: the delays double up to the longest, half of
each random; the one retry loop waits them between attempts, and a stop interrupts the wait at
once. There is no limit on attempts: an email the relay defers waits in a retry topic instead."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.worker.retry import RetryPolicy, Stopped, backoff_seconds, retry_until_done


def test_backoff_doubles_up_to_the_maximum_with_jitter() -> None:
    without_jitter = [backoff_seconds(n, 0.5, 4.0, lambda: 1.0) for n in range(1, 7)]
    least = [backoff_seconds(n, 0.5, 4.0, lambda: 0.0) for n in range(1, 7)]

    assert without_jitter == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert least == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


def test_the_policy_waits_between_half_and_all_of_each_doubled_delay() -> None:
    policy = RetryPolicy(initial_seconds=0.5, max_seconds=30.0)

    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (50, 30.0)]:
        for _ in range(20):
            assert ceiling / 2 <= policy.delay(attempt) <= ceiling


class Flaky:
    """Fails its first `failures` attempts with ConnectionError, then answers `done`."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: list[int] = []

    async def __call__(self, attempt: int) -> str:
        self.attempts.append(attempt)
        if len(self.attempts) <= self.failures:
            raise ConnectionError(f"down ({attempt})")
        return "done"


async def test_failed_attempts_are_made_again_after_their_backoff_until_one_succeeds() -> None:
    action, heard = Flaky(failures=2), []

    result = await retry_until_done(
        action,
        retry_on=ConnectionError,
        backoff=lambda attempt: 0.001 * attempt,
        stopping=asyncio.Event(),
        failed=lambda error, attempt, seconds: heard.append((str(error), attempt, seconds)),
    )

    assert result == "done"
    assert action.attempts == [1, 2, 3]
    assert heard == [("down (1)", 1, 0.001), ("down (2)", 2, 0.002)]


async def test_a_stop_interrupts_the_backoff_at_once() -> None:
    action, stopping = Flaky(failures=1_000), asyncio.Event()
    retrying = asyncio.create_task(
        retry_until_done(
            action,
            retry_on=ConnectionError,
            backoff=lambda attempt: 60.0,
            stopping=stopping,
            failed=lambda error, attempt, seconds: None,
        )
    )
    await asyncio.sleep(0.05)

    stopping.set()
    started = time.monotonic()
    with pytest.raises(Stopped):
        await asyncio.wait_for(retrying, timeout=1)

    assert time.monotonic() - started < 0.5
    assert action.attempts == [1], "no attempt after the stop"


async def test_a_failure_not_worth_another_attempt_ends_the_loop() -> None:
    attempts = []

    async def refused(attempt: int) -> str:
        attempts.append(attempt)
        raise ValueError("malformed")

    with pytest.raises(ValueError, match="malformed"):
        await retry_until_done(
            refused,
            retry_on=ConnectionError,
            backoff=lambda attempt: 0.001,
            stopping=asyncio.Event(),
            failed=lambda error, attempt, seconds: None,
        )

    assert attempts == [1]


async def test_an_attempt_that_stops_is_not_made_again() -> None:
    attempts = []

    async def stopped(attempt: int) -> str:
        attempts.append(attempt)
        raise Stopped

    with pytest.raises(Stopped):
        await retry_until_done(
            stopped,
            retry_on=Exception,
            backoff=lambda attempt: 0.001,
            stopping=asyncio.Event(),
            failed=lambda error, attempt, seconds: None,
        )

    assert attempts == [1]
