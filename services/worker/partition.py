"""One assigned partition: its records are taken in offset order by a few lanes, each with its
own SMTP connection, so that several of its emails are in flight at once; `next_offset_to_commit`
moves only past a contiguous run of finished records (the approach of Confluent's Parallel
Consumer). Two records with the same key (the same message id) are never in flight together:
the later one waits, then finds the earlier one in the dedupe store. And the lanes never run
more than `max_ahead` records past an unfinished one (say, one retried for hours), so that the
lag stays bounded and a restart reads at most that many again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aiokafka.structs import ConsumerRecord, TopicPartition

from services.worker.processor import EmailProcessor, Mailer
from services.worker.retry import Stopped


class PartitionWorker:
    def __init__(
        self,
        partition: TopicPartition,
        processor: EmailProcessor,
        lanes: Sequence[Mailer],
        max_ahead: int,
        stop_grace_seconds: float,
    ) -> None:
        self.partition = partition
        # The offset after the last finished record: the group's CURRENT-OFFSET once committed.
        self.next_offset_to_commit: int | None = None
        self._processor = processor
        self._pending: asyncio.Queue[ConsumerRecord[bytes, bytes]] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._last_enqueued_offset = -1
        self._last_taken_offset = -1
        self._unfinished: dict[int, ConsumerRecord[bytes, bytes]] = {}  # taken, by offset
        self._keys_in_flight: dict[bytes, asyncio.Event] = {}  # set once that record is done
        self._idle_lanes: set[asyncio.Task[None]] = set()  # waiting for a record to start
        self._max_ahead = max_ahead
        self._stop_grace_seconds = stop_grace_seconds
        self._room_ahead = asyncio.Event()  # set while fewer than max_ahead are past the commit
        self._room_ahead.set()
        name = f"deliver {partition.topic}-{partition.partition}"
        self._lanes = {
            asyncio.create_task(self._run_lane(smtp), name=f"{name} lane {number}"): smtp
            for number, smtp in enumerate(lanes, start=1)
        }

    @property
    def backlog(self) -> int:
        return self._pending.qsize()

    def enqueue(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            if record.offset > self._last_enqueued_offset:  # never queue one offset twice
                self._pending.put_nowait(record)
                self._last_enqueued_offset = record.offset

    def check(self) -> None:
        """Raise what made a lane fail: a bug must not stall a partition silently."""
        for lane in self._lanes:
            if lane.done() and not lane.cancelled() and lane.exception():
                raise RuntimeError(f"delivery for {self.partition} failed") from lane.exception()

    async def stop(self) -> None:
        """Let the emails in flight finish, leave the rest unprocessed (and uncommitted).

        An email still in flight after the grace period is abandoned if the server cannot have
        it yet (the connection closes and the server drops the transaction), and waited for if
        its final "." has been sent: only the reply says whether the server stored it."""
        self._stopping.set()
        for lane in self._idle_lanes:
            lane.cancel()
        _, in_flight = await asyncio.wait(self._lanes, timeout=self._stop_grace_seconds)
        for lane in in_flight:
            if not self._lanes[lane].awaiting_final_reply:
                lane.cancel()
        for lane in self._lanes:
            with contextlib.suppress(asyncio.CancelledError):
                await lane

    async def _run_lane(self, smtp: Mailer) -> None:
        lane = asyncio.current_task()
        assert lane is not None
        try:
            while not self._stopping.is_set():
                self._idle_lanes.add(lane)
                await self._room_ahead.wait()
                record = await self._pending.get()
                self._take(record)
                while record.key and (earlier_copy := self._keys_in_flight.get(record.key)):
                    await earlier_copy.wait()
                self._idle_lanes.discard(lane)
                done = asyncio.Event()
                if record.key:
                    self._keys_in_flight[record.key] = done
                try:
                    await self._processor.process(record, smtp, self._stopping)
                except Stopped:
                    return
                finally:
                    done.set()
                    if record.key and self._keys_in_flight.get(record.key) is done:
                        del self._keys_in_flight[record.key]
                self._finish(record)
        finally:
            await smtp.close()

    def _take(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self._unfinished[record.offset] = record
        self._last_taken_offset = record.offset
        self._make_room_ahead()

    def _finish(self, record: ConsumerRecord[bytes, bytes]) -> None:
        del self._unfinished[record.offset]
        self.next_offset_to_commit = self._lowest_unfinished()
        self._make_room_ahead()

    def _lowest_unfinished(self) -> int:
        return min(self._unfinished) if self._unfinished else self._last_taken_offset + 1

    def _make_room_ahead(self) -> None:
        ahead = self._last_taken_offset + 1 - self._lowest_unfinished()
        if ahead < self._max_ahead:
            self._room_ahead.set()
        else:
            self._room_ahead.clear()
