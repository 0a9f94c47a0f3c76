"""Which records of a retry topic partition are due: the consumer hands out those, and waits
for the first that is not with the partition paused, as Spring for Apache Kafka's retry topics
do. No I/O here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from aiokafka.structs import ConsumerRecord

from shared.retry_topics import due_at_header, parse_retry_record
from shared.schema import PoisonRecord


def split_due(
    records: Sequence[ConsumerRecord[bytes, bytes]], now: datetime
) -> tuple[
    list[ConsumerRecord[bytes, bytes]], ConsumerRecord[bytes, bytes] | None, datetime | None
]:
    """The records due at `now`, in offset order up to the first that is not; that one and
    its due time (None, None when all are due). Records of one retry topic wait the same delay,
    so they fall due in about their offsets' order, and only the head of the partition is
    waited for."""
    for index, record in enumerate(records):
        due_at = due_time(record)
        if due_at is not None and due_at > now:
            return list(records[:index]), record, due_at
    return list(records), None, None


def due_time(record: ConsumerRecord[bytes, bytes]) -> datetime | None:
    """The `due_at` header, or the value's own `due_at` when the header is missing or unreadable
    (a record copied by a tool that drops headers); None when neither can be read: a poison
    record, due at once, which the processor dead-letters."""
    try:
        return due_at_header(record.headers)
    except PoisonRecord:
        pass
    try:
        return parse_retry_record(record.value).due_at
    except PoisonRecord:
        return None
