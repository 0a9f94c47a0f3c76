"""One assigned partition: records are processed one at a time in offset order over the
partition's own SMTP connection, and `next_offset_to_commit` moves only past finished ones."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka.structs import ConsumerRecord, TopicPartition

from services.worker.processor import EmailProcessor, Mailer, Stopped


class PartitionWorker:
    def __init__(self, partition: TopicPartition, processor: EmailProcessor, smtp: Mailer) -> None:
        self.partition = partition
        # The offset after the last finished record: the group's CURRENT-OFFSET once committed.
        self.next_offset_to_commit: int | None = None
        self._processor = processor
        self._smtp = smtp
        self._pending: asyncio.Queue[ConsumerRecord[bytes, bytes]] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._waiting_for_records = False
        self._last_enqueued_offset = -1
        self._task = asyncio.create_task(
            self._run(), name=f"deliver {partition.topic}-{partition.partition}"
        )

    @property
    def backlog(self) -> int:
        return self._pending.qsize()

    def enqueue(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            if record.offset > self._last_enqueued_offset:  # never queue one offset twice
                self._pending.put_nowait(record)
                self._last_enqueued_offset = record.offset

    def check(self) -> None:
        """Raise what made this partition's task fail: a bug must not stall a partition silently."""
        if self._task.done() and not self._task.cancelled() and self._task.exception():
            raise RuntimeError(f"delivery for {self.partition} failed") from self._task.exception()

    async def stop(self) -> None:
        """Let the email in flight finish, leave the rest unprocessed (and uncommitted)."""
        self._stopping.set()
        if self._waiting_for_records:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._waiting_for_records = True
                record = await self._pending.get()
                self._waiting_for_records = False
                try:
                    await self._processor.process(record, self._smtp, self._stopping)
                except Stopped:
                    return
                self.next_offset_to_commit = record.offset + 1
        finally:
            await self._smtp.close()
