"""The one sending budget every lane of a worker shares: each transaction waits its turn here
before MAIL FROM, and a "slow down" reply lowers the rate for all of them at once. The
decisions are relay_etiquette.py's; this only waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from services.worker.relay_etiquette import WINDOW_SECONDS, Aimd, RateWindow


class SendLimiter:
    """`await turn()` before each transaction; `throttled()` when the relay says "slow down".

    `max_rate` (SMTP_MAX_RATE, transactions per second; None: no limit until the relay
    complains) caps the rate, and AIMD lowers it below the cap after a complaint. Turns are
    given in the order asked: the lock queues the lanes, and only the first of them sleeps
    until the window has room, so a freed slot never wakes them all.

    Ask with the connection in hand, right before MAIL FROM: any wait between a turn and its
    MAIL FROM (connecting, TLS, AUTH) adds to the jitter that the window's margin covers."""

    def __init__(
        self,
        max_rate: int | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        window: float = WINDOW_SECONDS,
    ) -> None:
        self._window = RateWindow(max_rate, window)
        self._aimd = Aimd(max_rate)
        self._clock = clock
        self._sleep = sleep
        self._queue = asyncio.Lock()

    @property
    def rate_limit(self) -> int | None:
        """The starts allowed per window now (None: no limit), for a metric and the log."""
        return self._aimd.allowed(self._clock())

    async def turn(self) -> None:
        """Return once a transaction may start; it is counted as started."""
        async with self._queue:
            while True:
                now = self._clock()
                # The limit of this instant: AIMD may have cut it, or added back, meanwhile.
                self._window.limit = self._aimd.allowed(now)
                wait = self._window.try_start(now)
                if wait <= 0:
                    return
                await self._sleep(wait)

    def throttled(self) -> bool:
        """The relay said "slow down" (smtp_failures.is_throttling): True when this halved
        the rate; False when a cut less than a second ago already stands for it."""
        now = self._clock()
        return self._aimd.throttled(now, measured=self._window.started_within(now))
