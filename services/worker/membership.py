"""This worker as a member of the consumer group, as /readyz and the benchmark read it: whether
it is a member now, and how long its last rebalance held it. The rebalance listener tells it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("worker")


class GroupMembership:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.joined = False
        self.rebalances = 0
        # How long the last rebalance held this member: from giving up its partitions to
        # owning its new ones (the group's join and sync happen in between).
        self.last_rebalance_seconds: float | None = None
        self._clock = clock
        self._revoked_at: float | None = None

    def partitions_revoked(self) -> None:
        self._revoked_at = self._clock()
        self.joined = False

    def partitions_assigned(self) -> None:
        self.joined = True

    def partitions_resumed(self) -> None:
        """The assigned partitions are started and their committed offsets read."""
        if self._revoked_at is None:
            return  # the first join: nothing was revoked
        self.rebalances += 1
        self.last_rebalance_seconds = self._clock() - self._revoked_at
        log.info("rebalance done in %.3f s", self.last_rebalance_seconds)
