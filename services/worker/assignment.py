"""The partitions this worker owns: a PartitionWorker each, the records fetched for it, and what
was committed of it. The consume loop and the rebalance listener (consumer.py) drive it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from services.worker.due_times import split_due
from services.worker.offsets import PartitionOffsets
from services.worker.partition import PartitionWorker

log = logging.getLogger("worker")


class Assignment:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        start_partition: Callable[[TopicPartition], PartitionWorker],
        max_backlog: int,
        *,
        waits_until_due: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._consumer = consumer
        self._start_partition = start_partition
        self._max_backlog = max_backlog
        # The retry topics' assignment: a record is handed out once its due time has come.
        self._waits_until_due = waits_until_due
        self._clock = clock
        self._waiting: dict[TopicPartition, asyncio.TimerHandle] = {}  # paused until due
        self.partitions: dict[TopicPartition, PartitionWorker] = {}
        self.committed: dict[TopicPartition, int | None] = {}

    def start(self, partitions: Iterable[TopicPartition]) -> None:
        for partition in partitions:
            self.partitions[partition] = self._start_partition(partition)

    async def stop(self, partitions: Iterable[TopicPartition]) -> None:
        """Let each one's emails in flight finish, then commit exactly its processed position,
        so the next owner of the partition starts where this one stopped."""
        partitions = list(partitions)
        for partition in partitions:
            if (waiting := self._waiting.pop(partition, None)) is not None:
                waiting.cancel()
        stopping = [
            self.partitions.pop(partition)
            for partition in partitions
            if partition in self.partitions
        ]
        await asyncio.gather(*(worker.stop() for worker in stopping))
        await self._commit(stopping)

    async def stop_all(self) -> None:
        await self.stop(list(self.partitions))

    def hand_out(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        for partition, records in batches.items():
            # A partition revoked while getmany waited is skipped: its next owner reads
            # these records again from the committed offset.
            if partition not in self.partitions:
                continue
            if self._waits_until_due:
                records = self._due(partition, records)
            self.partitions[partition].enqueue(records)

    def _due(
        self, partition: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """The records that are due; at the first that is not, the partition is paused, the
        consumer set back to it, and resumed when it falls due. getmany goes on meanwhile, so
        the group never takes the paused partition for a dead consumer's."""
        now = self._clock()
        due, first_waiting, due_at = split_due(records, now)
        if first_waiting is not None and due_at is not None:
            self._consumer.pause(partition)
            self._consumer.seek(partition, first_waiting.offset)
            seconds = (due_at - now).total_seconds()
            if (earlier := self._waiting.pop(partition, None)) is not None:
                earlier.cancel()
            self._waiting[partition] = asyncio.get_running_loop().call_later(
                seconds, self._resume_when_due, partition
            )
        return due

    def _resume_when_due(self, partition: TopicPartition) -> None:
        self._waiting.pop(partition, None)
        if partition in self._consumer.assignment():
            self._consumer.resume(partition)

    def check(self) -> None:
        """Raise what made a lane fail: a bug must not stall a partition silently."""
        for worker in self.partitions.values():
            worker.check()

    def pause_partitions_with_a_backlog(self) -> None:
        """Stop fetching for a partition that is held (retrying) until its backlog shrinks."""
        paused = self._consumer.paused()
        for partition, worker in self.partitions.items():
            if partition in self._waiting:
                continue  # paused until its head is due, whatever its backlog
            if worker.backlog > self._max_backlog and partition not in paused:
                self._consumer.pause(partition)
            elif worker.backlog <= self._max_backlog // 2 and partition in paused:
                self._consumer.resume(partition)

    async def commit_finished(self) -> None:
        await self._commit(list(self.partitions.values()))

    async def read_committed_offsets(self, ordered: list[TopicPartition]) -> None:
        """Each partition's committed offset, and a line saying where it resumes and its lag."""
        log_start = await self._consumer.beginning_offsets(ordered)
        log_end = await self._consumer.end_offsets(ordered)
        for partition in ordered:
            committed = await self._consumer.committed(partition)
            self.committed[partition] = committed
            resume_at = log_start[partition] if committed is None else committed
            log.info(
                "%s-%d: %s at offset %d (log end %d, lag %d)",
                partition.topic, partition.partition,
                "nothing committed yet, starting" if committed is None else "resuming",
                resume_at, log_end[partition], log_end[partition] - resume_at,
            )  # fmt: skip

    def partition_offsets(self) -> list[PartitionOffsets]:
        """The partitions this worker owns, with what it committed and the log end offset of
        the last fetch response (the highwater mark): no request to Kafka. A paused
        partition is not fetched, so its log end offset waits for it to be resumed."""
        assigned = self._consumer.assignment()
        return [
            PartitionOffsets(
                partition, self.committed.get(partition), self._consumer.highwater(partition)
            )
            for partition in sorted(self.partitions)
            if partition in assigned  # highwater() asserts it is
        ]

    async def _commit(self, workers: list[PartitionWorker]) -> None:
        """Commit, per partition, the offset after its last finished record, if it moved."""
        offsets = {
            worker.partition: worker.next_offset_to_commit
            for worker in workers
            if worker.next_offset_to_commit is not None
            and worker.next_offset_to_commit != self.committed.get(worker.partition)
        }
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as error:
            # The next owner re-reads from the last commit; the dedupe store skips what we sent.
            log.warning("could not commit %s: %s", _offsets_text(offsets), error)
            return
        self.committed.update(offsets)
        log.debug("committed %s", _offsets_text(offsets))


def _offsets_text(offsets: dict[TopicPartition, int]) -> str:
    return ", ".join(
        f"{tp.topic}-{tp.partition}={offset}" for tp, offset in sorted(offsets.items())
    )


class Assignments:
    """Every partition this worker owns, of email.send and of the retry topics, as /readyz
    and /metrics show them."""

    def __init__(self, main: Assignment, retry: Assignment) -> None:
        self._main = main
        self._retry = retry

    @property
    def partitions(self) -> dict[TopicPartition, PartitionWorker]:
        """Of email.send, in the worker's group: what `kafka-consumer-groups.sh` shows."""
        return self._main.partitions

    @property
    def retry_partitions(self) -> dict[TopicPartition, PartitionWorker]:
        return self._retry.partitions

    def partition_offsets(self) -> list[PartitionOffsets]:
        return [*self._main.partition_offsets(), *self._retry.partition_offsets()]
