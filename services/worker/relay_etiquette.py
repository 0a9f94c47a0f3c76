"""How fast the worker may send to its relay: a sliding-window log that never lets more than N
transactions start in any second, and AIMD, which halves that rate when the relay says "slow
down" and adds it back gradually. Pure: every decision takes the time it is made at (`now`,
seconds on a monotonic clock); the waiting is send_limiter.py's.

The guarantee, and what it assumes. `RateWindow(limit)` grants a start at time t only while
fewer than `limit` starts were granted in (t - window, t], with `window` = 1 s plus a margin.
So any `limit` + 1 consecutive starts span at least `window`, and no interval of 1 s, open or
closed, holds more than `limit` of them. The relay counts arrivals, not starts: each start
reaches it after some network delay. If those delays differ by less than the margin (the
jitter), any `limit` + 1 arrivals still span more than 1 s, so the relay never counts more than
`limit` in any second. With W workers each needs a limit of N / W: each keeps its own window.
A token bucket could not promise this: with capacity B refilled at N/s it lets B + N through
in one second.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

# Network jitter under this keeps the relay's count within the limit (see above).
JITTER_MARGIN_SECONDS = 0.05
WINDOW_SECONDS = 1.0 + JITTER_MARGIN_SECONDS


class RateWindow:
    """The start times of the transactions granted within the last `window` seconds.

    `limit` may change at any time (AIMD does): each start is granted against the limit in
    force when it asks, so the starts in any second never outnumber the limit in force at the
    last of them. `None` is no limit; the starts are still logged, to measure the rate."""

    def __init__(self, limit: int | None, window: float = WINDOW_SECONDS) -> None:
        if window <= 0:
            raise ValueError(f"a rate window lasts more than 0 seconds, not {window}")
        self.window = window
        self.limit = limit
        self._starts: deque[float] = deque()  # oldest first, none older than `window`

    @property
    def limit(self) -> int | None:
        return self._limit

    @limit.setter
    def limit(self, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"a rate limit allows at least 1 start per window, not {limit}")
        self._limit = limit

    def try_start(self, now: float) -> float:
        """0.0 when a transaction may start at `now`, and it is counted; otherwise the seconds
        to wait before asking again, and nothing is counted."""
        self._forget_before(now)
        if self._limit is not None and len(self._starts) >= self._limit:
            # The limit-th most recent start must leave the window first.
            ready_at = self._starts[-self._limit] + self.window
            return ready_at - now
        self._starts.append(now)
        return 0.0

    def started_within(self, now: float, seconds: float = 1.0) -> int:
        """The starts granted in the last `seconds` (at most `window`): the rate measured."""
        self._forget_before(now)
        return sum(1 for started in self._starts if started > now - seconds)

    def _forget_before(self, now: float) -> None:
        # The same comparison as try_start's ready_at: a start is forgotten exactly when it
        # stops counting.
        while self._starts and self._starts[0] + self.window <= now:
            self._starts.popleft()


@dataclass(frozen=True)
class _Cut:
    """The state after the last decrease: the limit it set, and when."""

    at: float
    limit: int
    ceiling: int  # where the additive increase stops: the cap, or twice the rate measured
    step: int  # added every increase_every seconds


class Aimd:
    """Additive increase, multiplicative decrease, of an allowed rate (or any count) capped
    by `cap`: the rule TCP uses to share a link, here to find what the relay accepts.

    `throttled(now, ...)` (the relay said "slow down") halves the allowed value, at most once
    per `cut_every` seconds: the transactions in flight when the relay started refusing return
    their refusals together, and they are one signal, not ten. After the last cut the value
    grows by `step` (default max(1, cap // 20)) every `increase_every` seconds, up to the cap.

    With no cap (None: no limit until the relay complains) the first cut starts from half the
    rate measured when it came, steps by a twentieth of that rate, and climbs to twice it; once
    it has climbed there and `lift_after` seconds have passed since the last cut, the limit is
    lifted again (None), and the next complaint measures afresh.
    """

    def __init__(
        self,
        cap: int | None,
        *,
        step: int | None = None,
        increase_every: float = 1.0,
        cut_every: float = 1.0,
        lift_after: float = 60.0,
    ) -> None:
        if cap is not None and cap < 1:
            raise ValueError(f"an AIMD cap is at least 1, or None for no cap; not {cap}")
        if step is not None and step < 1:
            raise ValueError(f"an AIMD step is at least 1, not {step}")
        if increase_every <= 0 or cut_every < 0 or lift_after < 0:
            raise ValueError(
                "increase_every must be more than 0 s, cut_every and lift_after at least 0 s; "
                f"not {increase_every}, {cut_every}, {lift_after}"
            )
        self.cap = cap
        self._step = step
        self._increase_every = increase_every
        self._cut_every = cut_every
        self._lift_after = lift_after
        self._cut: _Cut | None = None  # None: no complaint since the start, or since lifted

    def allowed(self, now: float) -> int | None:
        """The value allowed at `now`: the cap (None: no limit) unless a cut still holds it."""
        cut = self._cut
        if cut is None:
            return self.cap
        steps = int((now - cut.at) // self._increase_every)
        value = min(cut.ceiling, cut.limit + steps * cut.step)
        if self.cap is None and value >= cut.ceiling and now - cut.at >= self._lift_after:
            self._cut = None
            return None
        return value

    def throttled(self, now: float, measured: int) -> bool:
        """The relay said "slow down" at `now`; `measured` is the rate (or count) in use just
        before, used only when there is no cap and no cut yet. True when this halved the value;
        False when a cut less than `cut_every` seconds ago already stands for it."""
        cut = self._cut
        if cut is not None and now - cut.at < self._cut_every:
            return False
        current = self.allowed(now)
        if current is None:
            # No cap and no cut in force: measure the rate, and climb back to twice it.
            current = max(1, measured)
            ceiling = 2 * current
        elif self.cap is not None:
            ceiling = self.cap
        else:
            ceiling = cut.ceiling if cut is not None else 2 * current
        reference = self.cap if self.cap is not None else ceiling // 2
        step = self._step if self._step is not None else max(1, reference // 20)
        self._cut = _Cut(at=now, limit=max(1, current // 2), ceiling=ceiling, step=step)
        return True
