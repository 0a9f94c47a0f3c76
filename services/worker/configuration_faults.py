"""Whether the SMTP server refuses the worker's own settings (credentials, TLS) right now, shared
by every lane of every partition: /readyz reads it, /metrics its refusals, the log says it once a
minute, and while it lasts one lane at a time tries the server, not each of the 24 with a wrong
password."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.worker.smtp_failures import CONFIGURATION_FAULT_KINDS, ConfigurationFaultKind

log = logging.getLogger("worker")

LOG_INTERVAL_SECONDS = 60.0


@dataclass(frozen=True)
class CurrentFault:
    kind: ConfigurationFaultKind
    reason: str  # names the server and the settings to check; never a secret


class ConfigurationFaults:
    def __init__(
        self,
        initial_seconds: float,
        max_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        log_interval_seconds: float = LOG_INTERVAL_SECONDS,
    ) -> None:
        self.current: CurrentFault | None = None  # None while the server accepts the settings
        self.accepting = asyncio.Event()  # set while current is None
        self.accepting.set()
        # Every refusal since the start, by kind: email_worker_configuration_faults_total.
        self.refusals: dict[ConfigurationFaultKind, int] = dict.fromkeys(
            CONFIGURATION_FAULT_KINDS, 0
        )
        self._initial_seconds = initial_seconds
        self._max_seconds = max_seconds
        self._clock = clock
        self._log_interval_seconds = log_interval_seconds
        self._since = 0.0
        self._next_try_at = 0.0
        self._next_log_at = 0.0

    @property
    def seconds(self) -> float:
        """How long the current fault has lasted; 0 while there is none."""
        return 0.0 if self.current is None else self._clock() - self._since

    def claim_turn(self) -> float:
        """0 if the caller may try the server now: always while it accepts; while it refuses,
        one caller per retry delay, and this call takes that turn. Otherwise the seconds until
        the next turn."""
        if self.current is None:
            return 0.0
        now = self._clock()
        if now < self._next_try_at:
            return self._next_try_at - now
        self._next_try_at = now + self._retry_delay(now)
        return 0.0

    def refused(self, kind: ConfigurationFaultKind, reason: str) -> None:
        now = self._clock()
        first = self.current is None
        changed = self.current is None or self.current.kind != kind
        if first:
            self._since = now
            self.accepting.clear()
        self.current = CurrentFault(kind, reason)
        self._next_try_at = max(self._next_try_at, now + self._retry_delay(now))
        self.refusals[kind] += 1
        if changed or now >= self._next_log_at:
            self._next_log_at = now + self._log_interval_seconds
            log.error(
                "SMTP configuration fault%s: %s. Holding every email (nothing dead-lettered, "
                "nothing committed past it) and trying again until the server accepts",
                "" if first else f" for {now - self._since:.0f} s", reason,
            )  # fmt: skip

    def accepted(self) -> None:
        if self.current is None:
            return
        log.info(
            "the SMTP server accepts the worker's settings again after %.0f s: delivering",
            self.seconds,
        )
        self.current = None
        self._next_try_at = 0.0
        self.accepting.set()

    def _retry_delay(self, now: float) -> float:
        # As long again as the fault has lasted so far: the tries spread out, doubling from
        # WORKER_RETRY_INITIAL_SECONDS to WORKER_RETRY_MAX_SECONDS, however many lanes fail.
        return min(self._max_seconds, max(self._initial_seconds, now - self._since))
