"""Greylisting, as real mail servers do it: a new (sender, recipient) pair at a greylisted domain
is refused with 451 4.7.1 until a delay after its first try; from then on it is accepted at once.

The decision is pure but for the clock it is handed (and a log line the first time a pair is
greylisted); the tries are remembered for a day after a pair's last one, and for at most
MAX_PAIRS pairs, so they never grow without bound.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# Written out: its log lines keep this name wherever the module is (readers and tests look for it).
log = logging.getLogger("services.smtp_sink.greylist")

RETENTION_SECONDS = 24 * 60 * 60
MAX_PAIRS = 100_000


@dataclass
class _Tries:
    first: float
    last: float


class Greylist:
    """The greylisted domains, the delay, and when each pair was first and last tried."""

    def __init__(
        self,
        domains: Iterable[str],
        delay_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        retention_seconds: float = RETENTION_SECONDS,
        max_pairs: int = MAX_PAIRS,
    ) -> None:
        self.domains = frozenset(domain.lower() for domain in domains)
        self.delay_seconds = delay_seconds
        self._clock = clock
        self._retention_seconds = retention_seconds
        self._max_pairs = max_pairs
        # (sender, recipient), lower-cased -> its tries; the least recently tried first.
        self._tries: OrderedDict[tuple[str, str], _Tries] = OrderedDict()

    @classmethod
    def off(cls) -> Greylist:
        return cls((), 0.0)

    @property
    def on(self) -> bool:
        return bool(self.domains) and self.delay_seconds > 0

    @property
    def remembered_pairs(self) -> int:
        return len(self._tries)

    def describe(self) -> str:
        """One line for the log at start."""
        return (
            f"greylisting recipients at {', '.join(sorted(self.domains))}: a new sender and "
            f"recipient pair is refused with 451 4.7.1 for {self.delay_seconds:g} s"
        )

    def refusal(self, sender: str, recipient: str) -> str | None:
        """The reply refusing RCPT TO:<recipient> from this sender, or None to accept it."""
        if not self.on or recipient.rpartition("@")[2].lower() not in self.domains:
            return None
        now = self._clock()
        self._forget_tried_before(now - self._retention_seconds)
        pair = (sender.lower(), recipient.lower())
        tries = self._tries.pop(pair, None)
        if tries is None:
            tries = _Tries(first=now, last=now)
            log.info(
                "greylisted %r -> %r: its first try; it is refused with 451 4.7.1 for %g s",
                sender or "<>",
                recipient,
                self.delay_seconds,
            )
        tries.last = now
        self._tries[pair] = tries  # the most recently tried, last
        if len(self._tries) > self._max_pairs:
            self._tries.popitem(last=False)
        seconds_left = self.delay_seconds - (now - tries.first)
        if seconds_left <= 0:
            return None
        return f"451 4.7.1 Greylisted: try again in {math.ceil(seconds_left)} seconds"

    def _forget_tried_before(self, moment: float) -> None:
        while self._tries:
            pair, tries = next(iter(self._tries.items()))
            if tries.last >= moment:
                return
            del self._tries[pair]
