"""The benchmark's chart: throughput over time (the pipeline through the API and the worker
draining a backlog, against the sink's ceiling) and the end-to-end latency distribution."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.bench.stages import Timeline

WINDOW_SECONDS = 0.5


def rate_over_time(timeline: Timeline) -> tuple[list[float], list[float]]:
    """(seconds since the first sample, emails stored per second over the last half second)."""
    samples = timeline.samples
    if len(samples) < 2:
        return [], []
    start = samples[0][0]
    times, rates = [], []
    earlier = samples[0]
    for at, stored in samples[1:]:
        if at - earlier[0] >= WINDOW_SECONDS:
            times.append(at - start)
            rates.append((stored - earlier[1]) / (at - earlier[0]))
            earlier = (at, stored)
    return times, rates


def draw_chart(
    timelines: dict[str, Timeline],
    stages: dict[str, dict[str, Any]],
    about: dict[str, Any],
    path: Path,
    also: Path | None = None,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, label in (("pipeline", "through the API"), ("drain", "worker draining a backlog")):
        if name in timelines:
            throughput.plot(*rate_over_time(timelines[name]), label=label)
    ceiling = stages["sink ceiling"]["emails_per_second"]
    throughput.axhline(ceiling, color="grey", linestyle="--", label="sink ceiling (direct SMTP)")
    throughput.set_xlabel("seconds")
    throughput.set_ylabel("emails stored by the sink per second")
    throughput.set_title("Throughput over time")
    throughput.legend(loc="lower right")
    throughput.set_ylim(0, max(ceiling, throughput.get_ylim()[1]) * 1.1)

    latencies = sorted(stages["latency"]["latencies_ms"])
    latency.hist(latencies, bins=60, color="tab:green")
    for name, style in (("p50_ms", ":"), ("p99_ms", "--")):
        value = stages["latency"][name]
        latency.axvline(value, color="black", linestyle=style, label=f"{name[:3]} {value:.1f} ms")
    latency.set_xlabel("ms from sending the request to the sink storing the email")
    latency.set_ylabel("emails")
    latency.set_title(f"End-to-end latency at {stages['latency']['offered_per_second']:g} emails/s")
    latency.legend()

    m = about["machine"]
    figure.suptitle(
        f"{m['cores']} cores ({m['cpu']}), Kafka {about['kafka']}, "
        f"{about['partitions']} partitions, {about['sizes']['emails']:,} emails per stage",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    if also is not None:
        shutil.copyfile(path, also)
