"""The commit rule, without asyncio: the commit moves only past a contiguous run of finished
records, as far as it may, and the lanes run at most max_ahead offsets past an unfinished one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.worker.offsets import OffsetTracker


def test_nothing_is_committed_before_a_record_is_finished() -> None:
    offsets = OffsetTracker(max_ahead=10)

    offsets.take(0)

    assert offsets.next_offset_to_commit is None


def test_records_finished_in_order_move_the_commit_past_each() -> None:
    offsets = OffsetTracker(max_ahead=10)
    committable = []

    for offset in range(5, 9):  # a partition resumed at its committed offset 5
        offsets.take(offset)
        offsets.finish(offset)
        committable.append(offsets.next_offset_to_commit)

    assert committable == [6, 7, 8, 9]


def test_the_commit_waits_at_an_unfinished_record_however_many_after_it_finish() -> None:
    offsets = OffsetTracker(max_ahead=10)
    for offset in range(4):
        offsets.take(offset)

    offsets.finish(1)
    offsets.finish(3)
    offsets.finish(2)
    held = offsets.next_offset_to_commit
    offsets.finish(0)

    assert held == 0, "offset 0 is unfinished: never commit past it"
    assert offsets.next_offset_to_commit == 4


def test_the_commit_moves_to_the_next_unfinished_record() -> None:
    offsets = OffsetTracker(max_ahead=10)
    for offset in range(4):
        offsets.take(offset)

    offsets.finish(0)
    offsets.finish(2)

    assert offsets.next_offset_to_commit == 1


def test_offsets_missing_from_the_log_are_passed_over() -> None:
    # A compacted topic, or a transaction's markers: offsets the consumer never sees.
    offsets = OffsetTracker(max_ahead=10)
    offsets.take(3)
    offsets.take(7)

    offsets.finish(7)
    held = offsets.next_offset_to_commit
    offsets.finish(3)

    assert held == 3
    assert offsets.next_offset_to_commit == 8


def test_the_lanes_take_at_most_max_ahead_records_from_an_unfinished_one_on() -> None:
    offsets = OffsetTracker(max_ahead=3)
    room = []

    for offset in range(3):
        offsets.take(offset)
        room.append(offsets.has_room_ahead)
    offsets.finish(1)
    offsets.finish(2)
    room_while_0_is_unfinished = offsets.has_room_ahead
    offsets.finish(0)

    assert room == [True, True, False]
    assert not room_while_0_is_unfinished, "1 and 2 are finished, but 0 still holds 3 offsets"
    assert offsets.has_room_ahead
    assert offsets.ahead == 0


def test_ahead_counts_the_offsets_from_the_lowest_unfinished_one_to_the_last_taken() -> None:
    offsets = OffsetTracker(max_ahead=100)
    for offset in range(10, 20):
        offsets.take(offset)

    offsets.finish(10)
    offsets.finish(12)

    assert offsets.ahead == 9  # 11 to 19


@given(st.permutations(range(12)))
def test_in_any_finishing_order_the_commit_goes_exactly_as_far_as_it_may(
    finishing_order: list[int],
) -> None:
    offsets = OffsetTracker(max_ahead=100)
    for offset in range(12):
        offsets.take(offset)
    finished: set[int] = set()

    for offset in finishing_order:
        offsets.finish(offset)
        finished.add(offset)
        commit = offsets.next_offset_to_commit

        assert commit is not None
        assert set(range(commit)) <= finished, "never past an unfinished record"
        assert commit == 12 or commit not in finished, "never short of where it may go"
