"""The consume loop, the commit rule and the rebalance listener, readable top to bottom.

Fetch with `getmany`, hand each partition's records to its PartitionWorker, commit what is
finished. On revocation and on shutdown: let each email in flight finish, then commit exactly
the processed position, so the next owner of a partition starts where this one stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from services.worker.offsets import PartitionOffsets
from services.worker.partition import PartitionWorker

log = logging.getLogger("worker")

FETCH_TIMEOUT_MS = 200
# While records stream in, commit at most this often: each commit is a request to Kafka, and a
# crash can only make the worker read the last moment's records again (the dedupe store skips
# them). Revocation and shutdown always commit at once.
COMMIT_INTERVAL_SECONDS = 0.1


class EmailWorker(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topic: str,
        start_partition: Callable[[TopicPartition], PartitionWorker],
        max_backlog: int,
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._start_partition = start_partition
        self._max_backlog = max_backlog
        self.partitions: dict[TopicPartition, PartitionWorker] = {}
        self.committed: dict[TopicPartition, int | None] = {}
        self.joined_group = False
        # How long the last rebalance held this member: from giving up its partitions to
        # owning its new ones (the group's join and sync happen in between).
        self.rebalances = 0
        self.last_rebalance_seconds: float | None = None
        self._revoked_at: float | None = None
        self._last_commit_at = 0.0

    async def run(self, stopping: asyncio.Event) -> None:
        self._consumer.subscribe([self._topic], listener=self)
        while not stopping.is_set():
            batches = await self._consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS)
            for partition, records in batches.items():
                # A partition revoked while getmany waited is skipped: its next owner reads
                # these records again from the committed offset.
                if partition in self.partitions:
                    self.partitions[partition].enqueue(records)
            for worker in self.partitions.values():
                worker.check()
            self._pause_partitions_with_a_backlog()
            if time.monotonic() - self._last_commit_at >= COMMIT_INTERVAL_SECONDS:
                self._last_commit_at = time.monotonic()
                await self._commit_finished(list(self.partitions.values()))
        await self._stop_partitions(list(self.partitions))

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

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._revoked_at = time.monotonic()
        self.joined_group = False
        await self._stop_partitions(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        ordered = sorted(assigned)
        # Before any await: getmany may hand out these partitions' records in the meantime.
        for partition in ordered:
            self.partitions[partition] = self._start_partition(partition)
        self.joined_group = True
        if not ordered:
            log.info(
                "joined %s with no partition to own (more workers than partitions)", self._topic
            )
        else:
            await self._read_committed_offsets(ordered)
        if self._revoked_at is not None:
            self.rebalances += 1
            self.last_rebalance_seconds = time.monotonic() - self._revoked_at
            log.info("rebalance done in %.3f s", self.last_rebalance_seconds)

    async def _read_committed_offsets(self, ordered: list[TopicPartition]) -> None:
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

    async def _stop_partitions(
        self, partitions: set[TopicPartition] | list[TopicPartition]
    ) -> None:
        stopping = [
            self.partitions.pop(partition)
            for partition in partitions
            if partition in self.partitions
        ]
        await asyncio.gather(*(worker.stop() for worker in stopping))
        await self._commit_finished(stopping)

    async def _commit_finished(self, workers: list[PartitionWorker]) -> None:
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

    def _pause_partitions_with_a_backlog(self) -> None:
        """Stop fetching for a partition that is held (retrying) until its backlog shrinks."""
        paused = self._consumer.paused()
        for partition, worker in self.partitions.items():
            if worker.backlog > self._max_backlog and partition not in paused:
                self._consumer.pause(partition)
            elif worker.backlog <= self._max_backlog // 2 and partition in paused:
                self._consumer.resume(partition)


def _offsets_text(offsets: dict[TopicPartition, int]) -> str:
    return ", ".join(
        f"{tp.topic}-{tp.partition}={offset}" for tp, offset in sorted(offsets.items())
    )
