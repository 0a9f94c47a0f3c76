"""One scenario's result and its row in the table `make chaos` prints: what the API accepted, what
the sink stored, what `email.events` says, and whether the guarantees held."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    scenario: str
    accepted: int
    delivered: int
    lost: int
    duplicates: int
    redelivered: int
    recovery_seconds: float | None
    passed: bool
    # Duplicates a SIGKILL caused between the server's 250 and the dedupe write: the window no
    # system can close with a non-transactional SMTP server (docs/guarantees.md).
    duplicates_in_kill_window: int = 0
    # What email.events got wrong (docs/guarantees.md): a recipient without exactly one final
    # event of the type the sink shows, a final event for an email the API never accepted, an
    # event id with two bodies... None: the events were not read.
    events_wrong: int | None = None
    # Events read more than once (raw count - distinct ids): allowed, as each is applied once.
    event_copies: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def row(self) -> str:
        recovery = "-" if self.recovery_seconds is None else f"{self.recovery_seconds:.1f}s"
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"{self.scenario:<{NAME_WIDTH}} {self.accepted:>8} {self.delivered:>9} {self.lost:>5} "
            f"{self.duplicates:>10} {self.duplicates_in_kill_window:>15} {self.redelivered:>11} "
            f"{events_cell(self.events_wrong):>6} {dash_if_none(self.event_copies):>6} "
            f"{recovery:>9}  {verdict}"
        )


def events_cell(wrong: int | None) -> str:
    """`ok`, the count of what the events got wrong, or `-` when they were not read."""
    if wrong is None:
        return "-"
    return "ok" if wrong == 0 else str(wrong)


def dash_if_none(count: int | None) -> str:
    return "-" if count is None else str(count)


NAME_WIDTH = len("worker-host-lost-sqlite-control")  # the longest scenario name
HEADER = (
    f"{'scenario':<{NAME_WIDTH}} {'accepted':>8} {'delivered':>9} {'lost':>5} "
    f"{'duplicates':>10} {'of which window':>15} {'redelivered':>11} {'events':>6} "
    f"{'copies':>6} {'recovery':>9}  result"
)
