"""The one snapshot loop: every tick reads Kafka, the API and the sink once, whatever the number
of pages open, and hands the same encoded snapshot to every page.

A tick never waits longer than its interval for Kafka: a slow answer is left running and the
page is redrawn meanwhile with the last offsets and their age, so pages update every tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from services.console.snapshot import (
    KafkaReading,
    Picture,
    RateMeter,
    Reading,
    SinkReading,
    describe_error,
)

log = logging.getLogger("console")

T = TypeVar("T")
HEARTBEAT_SECONDS = 15.0  # an SSE comment now and then keeps idle proxies from closing pages


class KafkaSource(Protocol):
    @property
    def requests_sent(self) -> int: ...

    async def read(self) -> KafkaReading: ...


class SnapshotLoop:
    def __init__(
        self,
        picture: Picture,
        kafka: KafkaSource,
        accepted_total: Callable[[], Awaitable[float]],
        sink: Callable[[], Awaitable[SinkReading]],
        interval_seconds: float,
        kafka_timeout_seconds: float,
        http_timeout_seconds: float,
        inbox_url: str,
    ) -> None:
        self.picture = picture
        self.kafka = kafka
        self.accepted_total = accepted_total
        self.sink = sink
        self.interval_seconds = interval_seconds
        self.kafka_timeout_seconds = kafka_timeout_seconds
        self.http_timeout_seconds = http_timeout_seconds
        self.inbox_url = inbox_url
        self.pages_open = 0
        self.kafka_live_at: float | None = None  # monotonic time of the last good Kafka read
        self.snapshot: dict[str, Any] | None = None
        self.encoded: bytes = b""
        self.stopped = False
        self._version = 0
        self._published = asyncio.Condition()
        self._kafka_read: asyncio.Task[tuple[KafkaReading | None, str | None]] | None = None
        self._kafka_requests = RateMeter()
        self._failing: set[str] = set()

    async def run(self, stopping: asyncio.Event) -> None:
        try:
            while not stopping.is_set():
                started = time.monotonic()
                await self.tick()
                pause = self.interval_seconds - (time.monotonic() - started)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=max(pause, 0.0))
        finally:
            if self._kafka_read is not None:
                self._kafka_read.cancel()
            # Open pages end their streams, so the web server can stop without waiting on them.
            async with self._published:
                self.stopped = True
                self._published.notify_all()

    async def tick(self) -> None:
        errors: dict[str, str] = {}
        kafka, accepted_total, sink = await asyncio.gather(
            self._read_kafka(errors),
            self._read("api", self.accepted_total(), self.http_timeout_seconds, errors),
            self._read("sink", self.sink(), self.http_timeout_seconds, errors),
        )
        now = time.time()
        if kafka is not None:
            self.kafka_live_at = time.monotonic()
        snapshot = self.picture.update(Reading(now, kafka, accepted_total, sink, errors))
        self._kafka_requests.add(now, self.kafka.requests_sent)
        snapshot["console"] = {
            "refresh_seconds": self.interval_seconds,
            "inbox_url": self.inbox_url,
            "pages_open": self.pages_open,
            "kafka_requests_total": self.kafka.requests_sent,
            "kafka_requests_per_second": self._kafka_requests.per_second(),
        }
        self.snapshot = snapshot
        self.encoded = json.dumps(snapshot, separators=(",", ":")).encode()
        async with self._published:
            self._version += 1
            self._published.notify_all()

    async def _read_kafka(self, errors: dict[str, str]) -> KafkaReading | None:
        """This tick's Kafka reading: None while a read is still on its way (the picture then
        shows the last one with its age), or when it failed (the reason in errors)."""
        if self._kafka_read is None:
            self._kafka_read = asyncio.create_task(
                self._outcome("kafka", self.kafka.read(), self.kafka_timeout_seconds)
            )
        await asyncio.wait({self._kafka_read}, timeout=self.interval_seconds)
        if not self._kafka_read.done():
            return None
        reading, error = self._kafka_read.result()
        self._kafka_read = None
        if error is not None:
            errors["kafka"] = error
        return reading

    async def _read(
        self, source: str, reading: Awaitable[T], timeout_seconds: float, errors: dict[str, str]
    ) -> T | None:
        answer, error = await self._outcome(source, reading, timeout_seconds)
        if error is not None:
            errors[source] = error
        return answer

    async def _outcome(
        self, source: str, reading: Awaitable[T], timeout_seconds: float
    ) -> tuple[T | None, str | None]:
        """(the reading, None), or (None, why not): logged once until the source recovers."""
        try:
            async with asyncio.timeout(timeout_seconds):
                answer = await reading
        except TimeoutError:
            error = f"no answer within {timeout_seconds:g} s"
        except Exception as failure:
            error = describe_error(failure)
        else:
            if source in self._failing:
                log.info("%s answers again", source)
                self._failing.discard(source)
            return answer, None
        if source not in self._failing:
            log.warning("cannot read %s: %s", source, error)
            self._failing.add(source)
        return None, error

    async def updates(self) -> AsyncIterator[bytes]:
        """Server-Sent Events for one page: each new snapshot, and a heartbeat when idle; the
        stream ends when the console stops."""
        self.pages_open += 1
        try:
            seen = 0
            while True:
                async with self._published:
                    try:
                        await asyncio.wait_for(
                            self._published.wait_for(functools.partial(self._news_for, seen)),
                            HEARTBEAT_SECONDS,
                        )
                    except TimeoutError:
                        fresh = None
                    else:
                        if self.stopped:
                            return
                        seen, fresh = self._version, self.encoded
                yield b": still here\n\n" if fresh is None else b"data: " + fresh + b"\n\n"
        finally:
            self.pages_open -= 1

    def _news_for(self, version: int) -> bool:
        return self.stopped or self._version != version

    async def first_snapshot(self, timeout_seconds: float) -> dict[str, Any] | None:
        async with self._published:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._published.wait_for(lambda: self.snapshot is not None), timeout_seconds
                )
        return self.snapshot
