"""The table `make chaos` prints: one row per scenario under the header, the events column saying
ok, the count wrong, or - when they were not read."""

from __future__ import annotations

import dataclasses
from typing import Any

from tests.chaos.report import HEADER, Result

PASSED = Result(
    scenario="retry-under-kills",
    accepted=5000,
    delivered=5600,
    lost=0,
    duplicates=2,
    redelivered=31,
    recovery_seconds=10.25,
    passed=True,
    duplicates_in_kill_window=2,
    events_wrong=0,
    event_copies=17,
)


def result(**changes: Any) -> Result:
    return dataclasses.replace(PASSED, **changes)


def test_a_row_lines_up_with_the_header() -> None:
    row = result().row()

    assert row.index("  pass") == HEADER.index("  result")  # every column right-aligned
    for column in ("events", "copies", "recovery", "result"):
        assert column in HEADER
    assert row.split() == [
        "retry-under-kills", "5000", "5600", "0", "2", "2", "31", "ok", "17", "10.2s", "pass"
    ]  # fmt: skip


def test_events_wrong_are_counted_in_their_column() -> None:
    assert result(events_wrong=3, passed=False).row().split()[7:] == ["3", "17", "10.2s", "FAIL"]


def test_a_scenario_whose_events_were_not_read_shows_dashes() -> None:
    row = Result("hard-kills", 0, 0, 0, 0, 0, None, False, details={"error": "boom"}).row()

    assert row.split()[7:] == ["-", "-", "-", "FAIL"]
