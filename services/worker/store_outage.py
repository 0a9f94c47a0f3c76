"""Whether the dedupe store answers, as the lanes last found it: while it does not, the lanes
hold their emails (retrying with back-off) and /readyz says why, so an orchestrator sees it."""

from __future__ import annotations

import time
from collections.abc import Callable


class StoreOutage:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.reason: str | None = None  # None while the store answers
        self._since: float | None = None
        self._clock = clock

    @property
    def seconds(self) -> float:
        return 0.0 if self._since is None else self._clock() - self._since

    def failed(self, reason: str) -> None:
        if self._since is None:
            self._since = self._clock()
        self.reason = reason

    def answered(self) -> None:
        if self.reason is not None:
            self.reason, self._since = None, None
