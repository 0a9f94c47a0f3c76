"""Which records of a retry topic partition are handed out now: those due, in offset order up
to the first that is not, which the partition then waits for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiokafka.structs import ConsumerRecord

from services.worker.due_times import split_due
from tests.unit.worker.fakes import consumer_record, email_record, retry_topic_record

NOW = datetime(2026, 11, 25, 9, 31, tzinfo=UTC)
TOPIC = "email.send.retry-1m"


def with_headers(offset: int, headers: list[tuple[str, bytes]]) -> ConsumerRecord[bytes, bytes]:
    return consumer_record(offset, b"{}", topic=TOPIC, headers=headers)


def due(offset: int, at: datetime) -> ConsumerRecord[bytes, bytes]:
    """A retry record at `offset`, due at `at`, as RetryRecord.to_kafka heads it."""
    return with_headers(offset, [("schema_version", b"1"), ("due_at", at.isoformat().encode())])


def test_records_all_due_are_all_handed_out() -> None:
    records = [due(n, NOW - timedelta(seconds=60 - n)) for n in range(3)]

    assert split_due(records, NOW) == (records, None, None)


def test_the_first_record_not_due_is_waited_for_with_those_after_it() -> None:
    later = NOW + timedelta(seconds=20)
    records = [
        due(4, NOW - timedelta(seconds=1)),
        due(5, NOW),  # due now: due
        due(6, later),
        due(7, NOW - timedelta(seconds=5)),  # due, but behind one that is not
    ]

    assert split_due(records, NOW) == (records[:2], records[2], later)


def test_a_partition_whose_head_is_not_due_hands_out_nothing() -> None:
    records = [due(0, NOW + timedelta(minutes=1)), due(1, NOW + timedelta(minutes=1))]

    assert split_due(records, NOW) == ([], records[0], NOW + timedelta(minutes=1))


def test_a_due_time_in_another_zone_or_without_one_is_read_as_the_same_moment() -> None:
    in_paris = datetime(2026, 11, 25, 10, 31, 30).isoformat().encode() + b"+01:00"
    without_zone = datetime(2026, 11, 25, 9, 31, 30).isoformat().encode()

    for header in (in_paris, without_zone):
        record = with_headers(0, [("due_at", header)])
        assert split_due([record], NOW) == ([], record, NOW + timedelta(seconds=30))


def test_a_record_copied_without_its_headers_waits_for_the_due_time_in_its_value() -> None:
    email = email_record("m-1")
    later = NOW + timedelta(minutes=5)
    copied = retry_topic_record(0, email, ["ana@example.com"], due_at=later)
    headerless = consumer_record(0, copied.value, key=copied.key, topic=copied.topic)

    assert split_due([headerless], NOW) == ([], headerless, later)


def test_a_record_whose_due_time_cannot_be_read_is_due_so_that_it_is_dead_lettered() -> None:
    records = [
        with_headers(0, []),
        with_headers(1, [("due_at", b"soon")]),
        due(2, NOW + timedelta(seconds=1)),
    ]

    assert split_due(records, NOW) == (records[:2], records[2], NOW + timedelta(seconds=1))


def test_no_records_nothing_to_wait_for() -> None:
    assert split_due([], NOW) == ([], None, None)
