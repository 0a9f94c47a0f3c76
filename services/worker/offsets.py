"""Which offset may be committed: the commit rule of a partition whose records are taken in
offset order and finished in any order, several at a time; and the offsets a partition shows
(committed, log end, lag). No I/O here."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.structs import TopicPartition


class OffsetTracker:
    """One partition's records from the moment a lane takes one until it is finished.

    The commit may move only past a contiguous run of finished records (the approach of
    Confluent's Parallel Consumer): `next_offset_to_commit` is the lowest unfinished offset, or
    the one after the last taken when none is unfinished. A record being retried holds it
    there, however many after it finish; so the lanes may take a record only while fewer than
    `max_ahead` are taken from the lowest unfinished one on, which bounds the lag, and what a
    restart reads again.
    """

    def __init__(self, max_ahead: int) -> None:
        self.max_ahead = max_ahead
        # The group's CURRENT-OFFSET once committed; None until a record is finished.
        self.next_offset_to_commit: int | None = None
        self._unfinished: set[int] = set()
        self._last_taken = -1

    def take(self, offset: int) -> None:
        """A lane starts on the record at `offset`: the next one, in offset order."""
        self._unfinished.add(offset)
        self._last_taken = offset

    def finish(self, offset: int) -> None:
        """The record at `offset` is delivered, skipped as a duplicate, or dead-lettered."""
        self._unfinished.remove(offset)
        self.next_offset_to_commit = self._lowest_unfinished()

    @property
    def ahead(self) -> int:
        """How many offsets are taken from the lowest unfinished one on: 0 when none is."""
        return self._last_taken + 1 - self._lowest_unfinished()

    @property
    def has_room_ahead(self) -> bool:
        """Whether a lane may take the next record: fewer than max_ahead are ahead."""
        return self.ahead < self.max_ahead

    def _lowest_unfinished(self) -> int:
        return min(self._unfinished) if self._unfinished else self._last_taken + 1


@dataclass(frozen=True)
class PartitionOffsets:
    partition: TopicPartition
    committed_offset: int | None  # the group's CURRENT-OFFSET; None while nothing is committed
    log_end_offset: int | None  # LOG-END-OFFSET at the last fetch; None before the first one

    @property
    def lag(self) -> int | None:
        """LAG as kafka-consumer-groups.sh shows it: unknown while either offset is."""
        if self.committed_offset is None or self.log_end_offset is None:
            return None
        return self.log_end_offset - self.committed_offset
