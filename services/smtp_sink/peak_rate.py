"""The most messages begun in any one sliding second: how a test checks that a client kept to a
relay's rate limit. Pure but for the clock it is handed; it keeps the last second's times only.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 1.0


class PeakRate:
    """How many fell in the last window, and the most that fell in any one window so far."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, window_seconds: float = WINDOW_SECONDS
    ) -> None:
        self._clock = clock
        self._window_seconds = window_seconds
        self._times: deque[float] = deque()
        self.peak = 0

    def add(self) -> None:
        now = self._clock()
        times = self._times
        times.append(now)
        # The window is (now - 1 s, now]; every window's count is largest at one of its arrivals.
        while times[0] <= now - self._window_seconds:
            times.popleft()
        if len(times) > self.peak:
            self.peak = len(times)

    def clear(self) -> None:
        self._times.clear()
        self.peak = 0
