"""The snapshot loop with fake sources: one read of each source a tick, whatever the number of
pages; every page gets every snapshot; a slow Kafka does not hold the pages up; a stop ends
the pages' streams."""

from __future__ import annotations

import asyncio
import json

from aiokafka.errors import NodeNotReadyError

from services.console.loop import SnapshotLoop
from services.console.snapshot import (
    GroupReading,
    KafkaReading,
    PartitionOffsets,
    Picture,
    SinkReading,
    Watch,
    describe_error,
)

PAGES = 50
WATCH = Watch(
    "email.send", "email.send.dlq", "email-send-group", "email.events", "email-status-group",
    ("email.send.retry-1m",), "email-retry-group",
)  # fmt: skip


class FakeKafka:
    def __init__(self, delay_seconds: float = 0.0) -> None:
        self.requests_sent = 0
        self.reads = 0
        self.delay_seconds = delay_seconds

    async def read(self) -> KafkaReading:
        self.reads += 1
        self.requests_sent += 4
        await asyncio.sleep(self.delay_seconds)
        group = GroupReading("Stable", (), {("email.send", 0): self.reads})
        return KafkaReading(
            {"email.send": (PartitionOffsets(0, 0, self.reads),)}, {"email-send-group": group}
        )


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    async def accepted_total(self) -> float:
        self.calls += 1
        return 10.0 * self.calls

    async def sink(self) -> SinkReading:
        self.calls += 1
        return SinkReading(self.calls, 0, None, None, 0, ())


def snapshot_loop(kafka: FakeKafka, api: Counting, sink: Counting) -> SnapshotLoop:
    return SnapshotLoop(
        Picture(WATCH),
        kafka,
        api.accepted_total,
        sink.sink,
        interval_seconds=0.01,
        kafka_timeout_seconds=5,
        http_timeout_seconds=1,
        inbox_url="http://127.0.0.1:8025",
    )


async def read_page(loop: SnapshotLoop, into: list[dict[str, object]]) -> None:
    async for event in loop.updates():
        if event.startswith(b"data: "):
            into.append(json.loads(event.removeprefix(b"data: ")))


async def test_fifty_pages_cost_kafka_what_one_does_and_each_gets_every_snapshot() -> None:
    kafka, api, sink = FakeKafka(), Counting(), Counting()
    loop = snapshot_loop(kafka, api, sink)
    pages: list[list[dict[str, object]]] = [[] for _ in range(PAGES)]
    readers = [asyncio.create_task(read_page(loop, page)) for page in pages]
    await asyncio.sleep(0)  # every page is listening before the first tick

    for tick in range(1, 11):
        await loop.tick()
        for _ in range(1000):  # each page takes the snapshot before the next is made
            if all(len(page) == tick for page in pages):
                break
            await asyncio.sleep(0.001)

    assert kafka.reads == 10
    assert (api.calls, sink.calls) == (10, 10)
    assert loop.pages_open == PAGES
    for page in pages:
        assert [snapshot["partitions"][0]["current_offset"] for snapshot in page] == list(  # type: ignore[index]
            range(1, 11)
        )
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    assert loop.pages_open == 0


async def test_a_slow_kafka_read_does_not_hold_the_pages_up() -> None:
    kafka, api, sink = FakeKafka(delay_seconds=0.2), Counting(), Counting()
    loop = snapshot_loop(kafka, api, sink)

    for _ in range(5):
        await loop.tick()  # each waits at most its interval (0.01 s) for Kafka

    assert kafka.reads == 1  # the one read still on its way is not started again
    assert api.calls == 5
    assert loop.snapshot is not None
    assert loop.snapshot["kafka"]["as_of"] is None  # nothing shown as if it were read


async def test_stopping_ends_every_page_stream() -> None:
    loop = snapshot_loop(FakeKafka(), Counting(), Counting())
    page: list[dict[str, object]] = []
    reader = asyncio.create_task(read_page(loop, page))
    stopping = asyncio.Event()
    running = asyncio.create_task(loop.run(stopping))
    await asyncio.sleep(0.05)

    stopping.set()
    await running

    await asyncio.wait_for(reader, timeout=1)  # the stream ended by itself
    assert page
    assert loop.pages_open == 0


def test_an_error_is_one_line_naming_its_kind_once() -> None:
    assert describe_error(NodeNotReadyError("node 1 is not ready")).count("NodeNotReadyError") == 1
    assert describe_error(ConnectionRefusedError("refused")) == "ConnectionRefusedError: refused"
    assert describe_error(TimeoutError()) == "TimeoutError"
