"""How long the dedupe store keeps an email's state, and the loop that prunes it: a record can
only be read again while the topic still holds it, so its state outlives it by a margin, no more."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

log = logging.getLogger("worker")

MARGIN_SECONDS = 24 * 3600.0  # clocks, and a record read just before the broker deletes it
PRUNE_EVERY_SECONDS = 3600.0


class PrunableStore(Protocol):
    """SQLite deletes in a thread of its own, PostgreSQL over the network: the loop runs on."""

    async def prune(self, older_than: float) -> int: ...


def retention_seconds(
    configured_hours: float | None, topic_retention_ms: int | None
) -> float | None:
    """DEDUPE_RETENTION_HOURS if set, else the topic's retention.ms plus a day; None (keep
    everything) when the topic keeps its records for ever (retention.ms -1)."""
    if configured_hours is not None:
        return configured_hours * 3600
    if topic_retention_ms is None or topic_retention_ms < 0:
        return None
    return topic_retention_ms / 1000 + MARGIN_SECONDS


async def prune_until_stopped(
    store: PrunableStore, keep_seconds: float, stopping: asyncio.Event
) -> None:
    """Prune now and every hour; deleting a day's states must not stall the loop."""
    while not stopping.is_set():
        try:
            deleted = await store.prune(time.time() - keep_seconds)
        except Exception as error:  # a locked, full or unreachable database: next round
            log.warning("could not prune the dedupe store (%s); trying again in an hour", error)
        else:
            if deleted:
                log.info(
                    "pruned %d email state(s) older than %.0f h from the dedupe store",
                    deleted, keep_seconds / 3600,
                )  # fmt: skip
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=PRUNE_EVERY_SECONDS)
