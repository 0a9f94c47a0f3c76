"""A relay's rate limit: at most `limit` accepted in any sliding second, the next one refused.

Pure but for the clock it is handed. It keeps the times of the last `limit` it accepted and no
more, so a flood costs it nothing; a refused try is not counted, as a relay counts what it took.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 1.0


class RateLimit:
    """At most `limit` in any window of `window_seconds` (a sliding one, not a bucket: a bucket
    lets its capacity and a second's refill through in one second)."""

    def __init__(
        self,
        limit: int,
        clock: Callable[[], float] = time.monotonic,
        window_seconds: float = WINDOW_SECONDS,
    ) -> None:
        if limit < 1:
            raise ValueError(f"a rate limit must allow at least 1 a second, not {limit}")
        self.limit = limit
        self._clock = clock
        self._window_seconds = window_seconds
        self._accepted: deque[float] = deque(maxlen=limit)

    def take(self) -> bool:
        """Whether one more is within the limit now; if it is, it is counted."""
        now = self._clock()
        accepted = self._accepted
        # The window is (now - 1 s, now]: the oldest of the last `limit` still in it makes one
        # more the limit's + 1st.
        if len(accepted) == self.limit and now - accepted[0] < self._window_seconds:
            return False
        accepted.append(now)
        return True
