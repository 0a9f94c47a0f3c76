"""What became of one record, as EmailProcessor.process returns it: delivered, skipped as a
duplicate, or dead-lettered, and why. The lane that processed it counts it (metrics.count)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, get_args

Finished = Literal["delivered", "duplicate", "dead-lettered"]
DeadLetterReason = Literal[
    "poison_record", "permanent_failure", "attempts_exhausted", "some_recipients_refused"
]
DEAD_LETTER_REASONS: Final[tuple[DeadLetterReason, ...]] = get_args(DeadLetterReason)


@dataclass(frozen=True)
class RecordOutcome:
    finished: Finished
    # Why it went to the dead-letter topic: dead-lettered, or delivered but refused for some.
    dead_letter_reason: DeadLetterReason | None = None
    accepted_at: datetime | None = None  # delivered: when the API accepted it, in UTC
