"""CPU per email from the samples a stage took: the steady part, or the whole of a short one."""

from __future__ import annotations

import math
import os

from tests.bench.cpu import cpu_seconds, ms_per_email


def test_the_cpu_per_email_counts_from_the_first_sample_with_deliveries() -> None:
    samples = [(0.0, 0), (0.25, 0), (0.5, 100), (0.75, 600), (1.0, 1100)]
    cpu = [{"worker": seconds} for seconds in (0.0, 2.0, 2.1, 2.6, 3.1)]  # start-up: 2 s

    assert ms_per_email(samples, cpu) == {"worker": 1.0}  # (3.1 - 2.1) s / 1000 emails


def test_a_stage_done_within_one_sample_is_taken_whole() -> None:
    samples = [(0.0, 0), (0.25, 300)]
    cpu = [{"worker": 1.0}, {"worker": 1.3}]

    assert math.isclose(ms_per_email(samples, cpu)["worker"], 1.0)


def test_a_stage_that_stored_nothing_has_no_figure() -> None:
    per_email = ms_per_email([(0.0, 0), (0.25, 0)], [{"kafka": 1.0}, {"kafka": 1.2}])

    assert math.isnan(per_email["kafka"])
    assert ms_per_email([(0.0, 0)], []) == {}


def test_a_process_cpu_time_is_read_from_proc() -> None:
    before = cpu_seconds(os.getpid())
    sum(n * n for n in range(2_000_000))  # some CPU time of this process

    assert cpu_seconds(os.getpid()) > before
