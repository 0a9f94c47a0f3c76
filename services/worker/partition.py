"""One assigned partition: its records are taken in offset order by a few lanes, each borrowing
an SMTP connection from the worker's pool, so that several of its emails are in flight at once.
Which offset may then be committed, and how far the lanes may run ahead of an unfinished record,
is the OffsetTracker's rule (offsets.py): a record is finished once Kafka has acknowledged what
it published, and its lane is free before that. Two records with the same key (the same message
id) are never in flight together: the later one waits, then finds the earlier one in the dedupe
store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aiokafka.structs import ConsumerRecord, TopicPartition

from services.worker import metrics
from services.worker.offsets import OffsetTracker
from services.worker.outcome import RecordOutcome
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
        self._processor = processor
        self._pending: asyncio.Queue[ConsumerRecord[bytes, bytes]] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._last_enqueued_offset = -1
        self._offsets = OffsetTracker(max_ahead)
        self._keys_in_flight: dict[bytes, asyncio.Event] = {}  # set once that record is done
        self._idle_lanes: set[asyncio.Task[None]] = set()  # waiting for a record to start
        self._stop_grace_seconds = stop_grace_seconds
        # A record whose events are not yet acknowledged: finished once they are.
        self._publishing: set[asyncio.Task[None]] = set()
        self._room_ahead = asyncio.Event()  # set while the tracker has room ahead
        self._room_ahead.set()
        # Held from the room check to the take: two idle lanes never both pass the check for
        # one place ahead, so no more than max_ahead are ever taken.
        self._taking = asyncio.Lock()
        name = f"deliver {partition.topic}-{partition.partition}"
        self._lanes = {
            asyncio.create_task(self._run_lane(smtp), name=f"{name} lane {number}"): smtp
            for number, smtp in enumerate(lanes, start=1)
        }

    @property
    def next_offset_to_commit(self) -> int | None:
        """The offset after the contiguous run of finished records; None before the first."""
        return self._offsets.next_offset_to_commit

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
        for task in [*self._lanes, *self._publishing]:
            if task.done() and not task.cancelled() and task.exception():
                raise RuntimeError(f"delivery for {self.partition} failed") from task.exception()

    async def stop(self) -> None:
        """Let the emails in flight finish, leave the rest unprocessed (and uncommitted).

        An email still in flight after the grace period is abandoned if the server cannot have
        it yet (the connection closes and the server drops the transaction), and waited for if
        its final "." has been sent: only the reply says whether the server stored it."""
        self._stopping.set()
        for lane in self._idle_lanes:
            lane.cancel()
        deadline = asyncio.get_running_loop().time() + self._stop_grace_seconds
        _, in_flight = await asyncio.wait(self._lanes, timeout=self._stop_grace_seconds)
        for lane in in_flight:
            if not self._lanes[lane].awaiting_final_reply:
                lane.cancel()
        for lane in self._lanes:
            with contextlib.suppress(asyncio.CancelledError):
                await lane
        # What the finished emails published gets what is left of the grace to be
        # acknowledged; a record whose events were not is read again by the next owner.
        if self._publishing:
            left = max(0.0, deadline - asyncio.get_running_loop().time())
            _, unacknowledged = await asyncio.wait(self._publishing, timeout=left)
            for task in unacknowledged:
                task.cancel()
            await asyncio.gather(*unacknowledged, return_exceptions=True)

    async def _run_lane(self, smtp: Mailer) -> None:
        lane = asyncio.current_task()
        assert lane is not None
        try:
            while not self._stopping.is_set():
                self._idle_lanes.add(lane)
                async with self._taking:
                    await self._room_ahead.wait()
                    record = await self._pending.get()
                    self._offsets.take(record.offset)
                    self._update_room_ahead()
                while record.key and (earlier_copy := self._keys_in_flight.get(record.key)):
                    await earlier_copy.wait()
                self._idle_lanes.discard(lane)
                done = asyncio.Event()
                if record.key:
                    self._keys_in_flight[record.key] = done
                try:
                    outcome = await self._processor.process(record, smtp, self._stopping)
                except Stopped:
                    return
                finally:
                    done.set()
                    if record.key and self._keys_in_flight.get(record.key) is done:
                        del self._keys_in_flight[record.key]
                metrics.count(outcome)
                if outcome.published is None:
                    self._finish(record.offset)
                else:
                    # The lane goes on at once: Kafka's acknowledgement, not the lane,
                    # decides when the record is finished.
                    publishing = asyncio.create_task(self._finish_once_published(record, outcome))
                    self._publishing.add(publishing)
                    publishing.add_done_callback(self._forget_unless_failed)
        finally:
            await smtp.close()

    async def _finish_once_published(
        self, record: ConsumerRecord[bytes, bytes], outcome: RecordOutcome
    ) -> None:
        assert outcome.published is not None
        try:
            await self._processor.published(record, outcome.published, self._stopping)
        except Stopped:
            return
        self._finish(record.offset)

    def _forget_unless_failed(self, publishing: asyncio.Task[None]) -> None:
        """A publication that failed stays, for check() to raise: never a silent stall."""
        if publishing.cancelled() or publishing.exception() is None:
            self._publishing.discard(publishing)

    def _finish(self, offset: int) -> None:
        self._offsets.finish(offset)
        self._update_room_ahead()

    def _update_room_ahead(self) -> None:
        if self._offsets.has_room_ahead:
            self._room_ahead.set()
        else:
            self._room_ahead.clear()
