"""How long the read model keeps an event, and the loop that prunes it: as long as the events
topic keeps it (its retention.ms), plus a day for clocks; an email whose events the topic has
deleted could not be rebuilt either."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from aiokafka.errors import KafkaError

from services.api.status_store import StatusStore, StatusStoreUnavailable

log = logging.getLogger("api.status")

MARGIN_SECONDS = 24 * 3600.0
PRUNE_EVERY_SECONDS = 3600.0
# The first round waits for Kafka, which may start after the API.
FIRST_PRUNE_AFTER_SECONDS = 60.0

# (bootstrap servers, topic) -> the topic's settings as the broker applies them:
# shared.kafka.topic_configs.
TopicConfigsReader = Callable[[str, str], Awaitable[Mapping[str, str]]]


def keep_seconds(topic_retention_ms: str | None) -> float | None:
    """The topic's retention plus a day; None (keep everything) when the topic keeps its
    events for ever (retention.ms -1) or does not say."""
    if topic_retention_ms is None or not topic_retention_ms.lstrip("-").isdigit():
        return None
    retention_ms = int(topic_retention_ms)
    if retention_ms < 0:
        return None
    return retention_ms / 1000 + MARGIN_SECONDS


async def prune_until_stopped(
    store: StatusStore,
    read_topic_configs: TopicConfigsReader,
    bootstrap_servers: str,
    events_topic: str,
    stopping: asyncio.Event,
) -> None:
    """A minute after the start, then every hour: read the topic's retention.ms (it may have
    changed), and delete the events applied longer ago than that and a day. A round that
    cannot read the topic or reach the store is skipped, with a warning."""
    wait = FIRST_PRUNE_AFTER_SECONDS
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=wait)
        if stopping.is_set():
            return
        wait = PRUNE_EVERY_SECONDS
        try:
            configs = await read_topic_configs(bootstrap_servers, events_topic)
            keep = keep_seconds(configs.get("retention.ms"))
            deleted = 0 if keep is None else await store.prune(time.time() - keep)
        except (KafkaError, OSError, TimeoutError, StatusStoreUnavailable) as error:
            log.warning(
                "could not prune the read model (%s: %s); trying again in an hour",
                type(error).__name__, error,
            )  # fmt: skip
        else:
            if deleted:
                log.info(
                    "pruned %d event(s) older than %s's retention from the read model",
                    deleted, events_topic,
                )  # fmt: skip
