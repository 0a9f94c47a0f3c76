"""CPU time per email: each process's user + system time from /proc, sampled as the sink fills,
so that start-up and the group join stay out of it."""

from __future__ import annotations

import math
import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """The user + system CPU time `pid` has used so far (its threads included, as the JVM's)."""
    # The command name (field 2) may hold spaces: the fields after it start past its ")".
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    user, system = int(fields[11]), int(fields[12])  # utime and stime, fields 14 and 15
    return (user + system) / CLOCK_TICKS


def sample_cpu(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def ms_per_email(samples: list[tuple[float, int]], cpu: list[dict[str, float]]) -> dict[str, float]:
    """Each process's CPU milliseconds per email stored, from the first sample in which the sink
    held any to the last: the steady part of a stage. A stage too short to have one (a quick
    run) is taken whole, from its first sample; NaN for a stage that stored nothing."""
    if not cpu:
        return {}
    first = next((i for i, (_, stored) in enumerate(samples) if stored > 0), 0)
    if samples[-1][1] - samples[first][1] <= 0:
        first = 0
    emails = samples[-1][1] - samples[first][1]
    return {
        name: (cpu[-1][name] - cpu[first][name]) * 1000 / emails if emails > 0 else math.nan
        for name in cpu[first]
    }
