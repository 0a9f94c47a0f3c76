"""The simulator addresses at simulator.example.com: recipients whose replies are fixed, whatever
faults, greylisting or chaos the sink is set to, as SES's mailbox simulator has them.

Pure but for the clock it is handed. What it remembers, the deferred addresses already tried and
the times of the latest ratelimited@ recipients, is bounded, as the greylist's pairs are.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from services.smtp_sink.simulator.rate_limit import RateLimit

# example.com, not .test or .local: the API's email_validator refuses those special-use names.
SIMULATOR_DOMAIN = "simulator.example.com"
_SUFFIX = "@" + SIMULATOR_DOMAIN

ACCEPTED_REPLY = "250 2.1.5 OK"
DEFERRED_REPLY = "450 4.2.0 Simulated deferral, try again later"
BOUNCED_REPLY = "550 5.1.1 Simulated bounce: no such mailbox"
RATE_LIMITED_REPLY = "421 4.7.0 Simulated rate limit exceeded, slow down"
UNKNOWN_REPLY = (
    f"550 5.1.1 No such simulator address: use delivered, deferred, bounced, slow or "
    f"ratelimited@{SIMULATOR_DOMAIN}, each with an optional +tag"
)

DEFERRALS = 1  # the tries of each distinct deferred@ address refused, before it is accepted
SLOW_SECONDS = 10.0  # how long slow@'s reply to the final "." waits
RATELIMITED_PER_SECOND = 5  # the ratelimited@ addresses, all tags together
RETENTION_SECONDS = 24 * 60 * 60
MAX_ADDRESSES = 100_000


def is_simulated(address: str) -> bool:
    """Whether RCPT TO:<address> is the simulator's: the one test on every recipient's path."""
    return address[-len(_SUFFIX) :].lower() == _SUFFIX


@dataclass(frozen=True)
class Simulated:
    """What the sink does for one RCPT TO of a simulator address."""

    reply: str
    accepted: bool
    hang_up: bool = False  # close the connection after the reply, as after any 421
    final_reply_delay_seconds: float = 0.0  # wait this long before answering the final "."


ACCEPTED = Simulated(ACCEPTED_REPLY, accepted=True)
BOUNCED = Simulated(BOUNCED_REPLY, accepted=False)
DEFERRED = Simulated(DEFERRED_REPLY, accepted=False)
RATE_LIMITED = Simulated(RATE_LIMITED_REPLY, accepted=False, hang_up=True)
UNKNOWN = Simulated(UNKNOWN_REPLY, accepted=False)


@dataclass
class _Tries:
    count: int
    last: float


class SimulatorAddresses:
    """delivered@, deferred@, bounced@, slow@ and ratelimited@; a +tag makes an address distinct
    (deferred+1@ and deferred+2@ are each deferred once), and case does not."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        slow_seconds: float = SLOW_SECONDS,
        deferrals: int = DEFERRALS,
        ratelimited_per_second: int = RATELIMITED_PER_SECOND,
        retention_seconds: float = RETENTION_SECONDS,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        self._clock = clock
        self._slow = Simulated(
            ACCEPTED_REPLY, accepted=True, final_reply_delay_seconds=slow_seconds
        )
        self._deferrals = deferrals
        self._ratelimited = RateLimit(ratelimited_per_second, clock)
        self._retention_seconds = retention_seconds
        self._max_addresses = max_addresses
        # deferred@ addresses, lower-cased -> their tries; the least recently tried first.
        self._tries: OrderedDict[str, _Tries] = OrderedDict()

    @property
    def slow_seconds(self) -> float:
        return self._slow.final_reply_delay_seconds

    @property
    def remembered_addresses(self) -> int:
        return len(self._tries)

    def describe(self) -> str:
        """One line for the log at start."""
        first = "try" if self._deferrals == 1 else f"{self._deferrals} tries"
        return (
            f"simulator addresses at {SIMULATOR_DOMAIN}: delivered (250), deferred (450 on the "
            f"first {first} of each), bounced (550 5.1.1), slow ({self.slow_seconds:g} s before "
            f"the final reply), ratelimited (421 above {self._ratelimited.limit} a second)"
        )

    def rcpt(self, address: str) -> Simulated:
        """What RCPT TO:<address> gets, for an address is_simulated says is the simulator's."""
        local_part = address[: -len(_SUFFIX)].lower()
        match local_part.partition("+")[0]:
            case "delivered":
                return ACCEPTED
            case "deferred":
                return self._deferred(local_part)
            case "bounced":
                return BOUNCED
            case "slow":
                return self._slow
            case "ratelimited":
                return ACCEPTED if self._ratelimited.take() else RATE_LIMITED
            case _:
                return UNKNOWN

    def _deferred(self, local_part: str) -> Simulated:
        now = self._clock()
        self._forget_tried_before(now - self._retention_seconds)
        tries = self._tries.pop(local_part, None) or _Tries(count=0, last=now)
        tries.count += 1
        tries.last = now
        self._tries[local_part] = tries  # the most recently tried, last
        if len(self._tries) > self._max_addresses:
            self._tries.popitem(last=False)
        return DEFERRED if tries.count <= self._deferrals else ACCEPTED

    def _forget_tried_before(self, moment: float) -> None:
        while self._tries:
            local_part, tries = next(iter(self._tries.items()))
            if tries.last >= moment:
                return
            del self._tries[local_part]
