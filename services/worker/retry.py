"""Retrying with back-off while a server is away: how long to wait before the next try
(exponential, with jitter), and `retry_until_done`, the one loop that makes them; a stop
interrupts any wait at once.

The hold while the SMTP server refuses the worker's own settings is no such retry: it is a turn
shared by every lane (ConfigurationFaults.claim_turn), not one email's attempts and back-off, so
it is a wait for that turn, in processor.py's `_try` and `_wait_for_turn`."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
E = TypeVar("E", bound=Exception)


class Stopped(Exception):
    """The partition was asked to stop while this record was waiting to be retried."""


@dataclass(frozen=True)
class RetryPolicy:
    """The back-off while a server is away: the relay, the dedupe store, Kafka. An email the
    relay deferred waits in a retry topic instead (shared/retry_topics.py)."""

    initial_seconds: float
    max_seconds: float

    def delay(self, attempt: int) -> float:
        return backoff_seconds(attempt, self.initial_seconds, self.max_seconds, random.random)


def backoff_seconds(
    attempt: int, initial: float, maximum: float, random: Callable[[], float]
) -> float:
    """Exponential back-off with jitter: about initial * 2**(attempt - 1), capped at maximum.

    Half of the delay is random, so that workers retrying the same server spread out.
    """
    delay = min(maximum, initial * 2.0 ** (attempt - 1))
    return delay / 2 + random() * delay / 2


async def wait_unless_stopping(
    stopping: asyncio.Event, seconds: float, or_until: asyncio.Event | None = None
) -> None:
    """Wait `seconds`, or less if `or_until` is set meanwhile; raise Stopped if asked to stop."""
    events = [stopping] if or_until is None else [stopping, or_until]
    waits = {asyncio.ensure_future(event.wait()) for event in events}
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    if stopping.is_set():
        raise Stopped


async def retry_until_done(
    attempt: Callable[[int], Awaitable[T]],
    *,
    retry_on: type[E],
    backoff: Callable[[int], float],
    stopping: asyncio.Event,
    failed: Callable[[E, int, float], None],
) -> T:
    """Make attempt 1, 2, ... until one returns, and return what it returns.

    An attempt that raises `retry_on` is worth another: `failed(error, attempt, seconds)` hears
    of it (to log it), and the next attempt waits `backoff(attempt)` seconds, unless a stop
    interrupts the wait (Stopped). An attempt that should not be made again returns (a
    permanent failure is a result too); anything else it raises, Stopped included, ends the
    loop."""
    number = 0
    while True:
        number += 1
        try:
            return await attempt(number)
        except Stopped:
            raise
        except retry_on as error:
            seconds = backoff(number)
            failed(error, number, seconds)
            await wait_unless_stopping(stopping, seconds)
