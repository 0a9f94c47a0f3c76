"""Which extra copies the chaos harness excuses: only those a SIGKILL right after the sink stored
a copy explains, never one the worker sent again by itself."""

from __future__ import annotations

from tests.chaos.event_ledger import ledger_of, pair
from tests.chaos.kill_window import (
    KILL_WINDOW_SECONDS,
    by_email,
    explained_by_kills,
    first_try_interrupted,
    kill_window_duplicates,
)
from tests.unit.chaos.events import START, accepted, deferred, sent

ONE = "0b5e1c2a-8f0e-5a55-9c4e-3f1d2b7a9e10"
ANA = "ana@example.com"
OPS = "ops@example.com"
T0 = START.timestamp()


def test_a_copy_stored_right_before_a_kill_is_explained() -> None:
    assert explained_by_kills([T0 + 1.0, T0 + 12.0], kills=[T0 + 1.1], deferred_at=[])


def test_a_copy_the_sink_stored_just_after_the_kill_is_explained() -> None:
    # The worker sent its final "." before it died; the sink, busy, read it 2 ms later.
    assert explained_by_kills([T0 + 1.002, T0 + 12.0], kills=[T0 + 1.0], deferred_at=[])


def test_a_kill_long_before_the_copy_explains_nothing() -> None:
    early = T0 + 1.0 - KILL_WINDOW_SECONDS
    assert not explained_by_kills([T0 + 1.0, T0 + 12.0], kills=[early], deferred_at=[])


def test_a_kill_past_the_window_explains_nothing() -> None:
    late = T0 + 1.0 + KILL_WINDOW_SECONDS
    assert not explained_by_kills([T0 + 1.0, T0 + 12.0], kills=[late], deferred_at=[])


def test_every_extra_copy_needs_a_kill_of_its_own() -> None:
    arrivals = [T0 + 1.0, T0 + 12.0, T0 + 20.0]

    assert not explained_by_kills(arrivals, kills=[T0 + 1.1], deferred_at=[])
    assert explained_by_kills(arrivals, kills=[T0 + 1.1, T0 + 12.1], deferred_at=[])


def test_a_deferral_after_the_first_copy_means_the_worker_sent_it_again_itself() -> None:
    # No reply to the final ".": the worker deferred the recipient though the sink had it.
    assert not explained_by_kills([T0 + 1.0, T0 + 12.0], kills=[T0 + 1.1], deferred_at=[T0 + 1.2])


def test_a_deferral_before_the_first_copy_is_the_retry_that_sent_it() -> None:
    assert explained_by_kills([T0 + 3.0, T0 + 15.0], kills=[T0 + 3.1], deferred_at=[T0 + 1.0])


def test_one_copy_is_no_duplicate() -> None:
    assert not explained_by_kills([T0 + 1.0], kills=[T0 + 1.1], deferred_at=[])


def test_duplicates_are_excused_per_recipient_only_with_a_single_sent_event() -> None:
    ledger = ledger_of(
        [
            accepted(ONE, ANA, OPS),
            sent(ONE, ANA),
            deferred(ONE, OPS, seconds=1.5),  # after OPS's first copy, at 1.0 s
            sent(ONE, OPS, seconds=4, attempt=1),
        ]
    )
    copies = {pair(ONE, ANA): [T0 + 1.0, T0 + 12.0], pair(ONE, OPS): [T0 + 1.0, T0 + 4.0]}

    explained = kill_window_duplicates(copies, kills=[T0 + 1.1], ledger=ledger)

    assert explained == {pair(ONE, ANA): 1}
    assert by_email(explained, copies) == {}  # one of its recipients is unexplained


def test_a_duplicate_without_a_final_event_is_never_excused() -> None:
    copies = {pair(ONE, ANA): [T0 + 1.0, T0 + 12.0]}

    assert kill_window_duplicates(copies, kills=[T0 + 1.1], ledger=ledger_of([])) == {}


def test_an_email_sent_again_to_all_its_recipients_has_one_extra_copy() -> None:
    explained = {pair(ONE, ANA): 1, pair(ONE, OPS): 1}
    copies = {pair(ONE, ANA): [T0, T0 + 9], pair(ONE, OPS): [T0, T0 + 9]}

    assert by_email(explained, copies) == {ONE: 1}


def test_a_first_try_cut_off_by_an_outage_between_202_and_sent_is_interrupted() -> None:
    outages = [(T0 + 5.0, T0 + 15.0)]

    assert first_try_interrupted(T0 + 4.0, T0 + 16.0, 0, outages)
    assert first_try_interrupted(T0 + 6.0, T0 + 14.0, 0, outages)  # a rebalance in between


def test_a_try_no_outage_overlapped_or_a_retry_is_not_interrupted() -> None:
    outages = [(T0 + 5.0, T0 + 15.0)]

    assert not first_try_interrupted(T0 + 1.0, T0 + 2.0, 0, outages)
    assert not first_try_interrupted(T0 + 16.0, T0 + 17.0, 0, outages)
    assert not first_try_interrupted(T0 + 4.0, T0 + 16.0, 1, outages)
    assert not first_try_interrupted(T0 + 4.0, T0 + 16.0, None, outages)
