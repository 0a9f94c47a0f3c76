"""The event loop's lag, as a service's Prometheus metrics: how late a timer fires after it was
due, sampled every 0.1 s. Every request and every Kafka callback of the service waits as long."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Final

from prometheus_client import CollectorRegistry, Gauge, Histogram

SAMPLE_INTERVAL_SECONDS: Final = 0.1
# From a loop that keeps up (well under a millisecond) to one held for seconds by blocking code.
LAG_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class LoopLag:
    """Samples the lag of the loop that enters `sampling()`, while it is entered.

    Exports `<prefix>_event_loop_lag_seconds`, a histogram of every sample, and
    `<prefix>_event_loop_lag_max_seconds`, the largest sample since this object was made, in
    `registry`: `email_api_...` for the API, `email_worker_...` for the worker.
    """

    def __init__(
        self,
        prefix: str,
        registry: CollectorRegistry,
        interval_seconds: float = SAMPLE_INTERVAL_SECONDS,
    ) -> None:
        self.interval_seconds = interval_seconds
        self.max_lag_seconds = 0.0
        self._lag_seconds = Histogram(
            f"{prefix}_event_loop_lag_seconds",
            f"How late the event loop ran a timer set every {interval_seconds:g} s: time every "
            "request and callback waited, because the loop was busy with something else.",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self._max_lag_seconds = Gauge(
            f"{prefix}_event_loop_lag_max_seconds",
            f"The largest {prefix}_event_loop_lag_seconds sample since the process started.",
            registry=registry,
        )

    def record(self, lag_seconds: float) -> None:
        self._lag_seconds.observe(lag_seconds)
        if lag_seconds > self.max_lag_seconds:
            self.max_lag_seconds = lag_seconds
            self._max_lag_seconds.set(lag_seconds)

    @contextlib.asynccontextmanager
    async def sampling(self) -> AsyncIterator[None]:
        sampler = asyncio.create_task(self._sample_until_cancelled(), name="event loop lag")
        try:
            yield
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler

    async def _sample_until_cancelled(self) -> None:
        while True:
            due = time.monotonic() + self.interval_seconds
            await asyncio.sleep(self.interval_seconds)
            # A timer may fire a hair early (the loop rounds to its clock's resolution): no lag.
            self.record(max(0.0, time.monotonic() - due))
