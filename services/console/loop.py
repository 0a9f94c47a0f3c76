"""The one snapshot loop: every tick reads Kafka, the API and the sink once, whatever the number
of pages open, and hands the same encoded snapshot to every page."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from services.console.kafka_reader import KafkaReader
from services.console.snapshot import Picture, RateMeter, Reading
from services.console.sources import ApiSource, SinkSource

log = logging.getLogger("console")

T = TypeVar("T")
HEARTBEAT_SECONDS = 15.0  # an SSE comment now and then keeps idle proxies from closing pages


class SnapshotLoop:
    def __init__(
        self,
        picture: Picture,
        kafka: KafkaReader,
        api: ApiSource,
        sink: SinkSource,
        interval_seconds: float,
        read_timeout_seconds: float,
    ) -> None:
        self.picture = picture
        self.kafka = kafka
        self.api = api
        self.sink = sink
        self.interval_seconds = interval_seconds
        self.read_timeout_seconds = read_timeout_seconds
        self.pages_open = 0
        self.kafka_live_at: float | None = None  # monotonic time of the last good Kafka read
        self.snapshot: dict[str, Any] | None = None
        self.encoded: bytes = b""
        self._version = 0
        self._published = asyncio.Condition()
        self._kafka_requests = RateMeter()
        self._failing: set[str] = set()

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            started = time.monotonic()
            await self.tick()
            pause = self.interval_seconds - (time.monotonic() - started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=max(pause, 0.0))

    async def tick(self) -> None:
        errors: dict[str, str] = {}
        kafka, accepted_total, sink = await asyncio.gather(
            self._read("kafka", self.kafka.read(), errors),
            self._read("api", self.api.accepted_total(), errors),
            self._read("sink", self.sink.read(), errors),
        )
        now = time.time()
        if kafka is not None:
            self.kafka_live_at = time.monotonic()
        snapshot = self.picture.update(Reading(now, kafka, accepted_total, sink, errors))
        self._kafka_requests.add(now, self.kafka.requests_sent)
        snapshot["console"] = {
            "refresh_seconds": self.interval_seconds,
            "pages_open": self.pages_open,
            "kafka_requests_total": self.kafka.requests_sent,
            "kafka_requests_per_second": self._kafka_requests.per_second(),
        }
        self.snapshot = snapshot
        self.encoded = json.dumps(snapshot, separators=(",", ":")).encode()
        async with self._published:
            self._version += 1
            self._published.notify_all()

    async def _read(self, source: str, reading: Awaitable[T], errors: dict[str, str]) -> T | None:
        """The reading, or None with the reason in errors (logged once until it recovers)."""
        try:
            async with asyncio.timeout(self.read_timeout_seconds):
                answer = await reading
        except TimeoutError:
            errors[source] = f"no answer within {self.read_timeout_seconds:g} s"
        except Exception as error:
            errors[source] = describe_error(error)
        else:
            if source in self._failing:
                log.info("%s answers again", source)
                self._failing.discard(source)
            return answer
        if source not in self._failing:
            log.warning("cannot read %s: %s", source, errors[source])
            self._failing.add(source)
        return None

    async def updates(self) -> AsyncIterator[bytes]:
        """Server-Sent Events for one page: each new snapshot, and a heartbeat when idle."""
        self.pages_open += 1
        try:
            seen = 0
            while True:
                async with self._published:
                    try:
                        await asyncio.wait_for(
                            self._published.wait_for(functools.partial(self._newer_than, seen)),
                            HEARTBEAT_SECONDS,
                        )
                    except TimeoutError:
                        fresh = None
                    else:
                        seen, fresh = self._version, self.encoded
                yield b": still here\n\n" if fresh is None else b"data: " + fresh + b"\n\n"
        finally:
            self.pages_open -= 1

    def _newer_than(self, version: int) -> bool:
        return self._version != version

    async def first_snapshot(self, timeout_seconds: float) -> dict[str, Any] | None:
        async with self._published:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._published.wait_for(lambda: self.snapshot is not None), timeout_seconds
                )
        return self.snapshot


def describe_error(error: Exception) -> str:
    """One line: the error's text, with its type unless the text already names it."""
    text, kind = str(error), type(error).__name__
    return text if text.startswith(kind) else f"{kind}: {text}" if text else kind
